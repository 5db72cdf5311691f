"""The train/validation split by document, and ``test`` on held-out documents (never the validation ones)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

import modeling.data
from modeling.data import DataConfigError, TextDataModule
from modeling.splits import is_validation
from modeling.token_blocks import TokenBlocks
from tests.modeling.conftest import make_docs

Rows = list[tuple[str, str]]


def corpus(n: int, seed: int = 0, prefix: str = "doc") -> Rows:
    """``n`` distinct (id, text) documents: curation has removed exact duplicates, so texts are unique too."""
    return [(f"{prefix}-{i}", f"{prefix} {i}: {text}") for i, text in enumerate(make_docs(n, seed=seed))]


def write(root: Path, rows: Rows, n_shards: int = 2, with_id: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        part = rows[s::n_shards]
        columns = {"text": [t for _, t in part]}
        if with_id:
            columns["id"] = [i for i, _ in part]
        pq.write_table(pa.table(columns), root / f"part-{s:05d}.parquet")
    return root


def curated_output(root: Path, rows: Rows, heldout: Rows | None) -> Path:
    """A finished curation output folder: manifest, ``_SUCCESS``, ``data/`` and (optionally) ``heldout/``."""
    write(root / "data", rows)
    if heldout is not None:
        write(root / "heldout", heldout, n_shards=1)
    (root / ".curation").mkdir()
    (root / ".curation" / "manifest.json").write_text("{}")
    (root / "_SUCCESS").write_text("{}")
    return root


def dm(tokenizer_dir: Path, path: Path | str, tmp_path: Path, **kw) -> TextDataModule:
    args = {"tokenizer": str(tokenizer_dir), "path": str(path), "block_size": 16, "batch_size": 4,
            "cache_dir": str(tmp_path / "cache"), "val_fraction": 0.2}
    return TextDataModule(**{**args, **kw})


def documents(ds: TokenBlocks, eos: int) -> list[tuple[int, ...]]:
    """The documents packed into a set, as token tuples, in order (the blocks' real tokens split at eos)."""
    flat = np.asarray(ds.blocks).reshape(-1).tolist()
    real = flat[: (len(ds.blocks) - 1) * ds.blocks.shape[1] + ds.last_block_len]
    docs, current = [], []
    for t in real:
        if t == eos:
            docs.append(tuple(current))
            current = []
        else:
            current.append(t)
    assert not current, "every packed document ends with eos"
    return docs


@pytest.fixture(scope="module")
def tok(tokenizer_dir: Path):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def ids_by_tokens(tok, rows: Rows) -> dict[tuple[int, ...], str]:
    return {tuple(tok(t, add_special_tokens=False)["input_ids"]): i for i, t in rows}


def sides(tok, d: TextDataModule, rows: Rows) -> tuple[list[str], list[str]]:
    """Ids of the training and the validation documents, in packed order."""
    by_tokens = ids_by_tokens(tok, rows)
    found = []
    for ds in (d.train_set, d.val_set):
        packed = documents(ds, tok.eos_token_id)
        pieces = [x for x in packed if x not in by_tokens]
        assert not pieces, f"{len(pieces)} packed pieces are no whole document: a document straddles the split"
        found.append([by_tokens[x] for x in packed])
    return found[0], found[1]


def test_train_and_validation_are_disjoint_by_document(tokenizer_dir, tok, tmp_path):
    rows = corpus(120)
    d = dm(tokenizer_dir, write(tmp_path / "shards", rows, n_shards=3), tmp_path)
    d.setup("fit")
    train, val = sides(tok, d, rows)
    # every document lies whole on exactly one side: by id, and so by text
    assert sorted(train + val) == sorted(i for i, _ in rows) and not set(train) & set(val)
    text = dict(rows)
    assert not {text[i] for i in train} & {text[i] for i in val}
    # the side is the hash of the id, and about val_fraction of the documents
    assert set(val) == {i for i, _ in rows if is_validation(i, 0.2, seed=0)}
    assert 0.1 * len(rows) < len(val) < 0.3 * len(rows)
    meta = json.loads((d.build_cache() / "meta.json").read_text())
    assert (meta["train"]["docs"], meta["val"]["docs"]) == (len(train), len(val))


def test_the_split_ignores_file_order_and_sharding_and_survives_a_restart(tokenizer_dir, tok, tmp_path):
    rows = corpus(80)
    one = dm(tokenizer_dir, write(tmp_path / "one", rows, n_shards=1), tmp_path)
    four = dm(tokenizer_dir, write(tmp_path / "four", rows[::-1], n_shards=4), tmp_path)
    again = dm(tokenizer_dir, tmp_path / "one", tmp_path)  # a resumed run: a new process, the same options
    for d in (one, four, again):
        d.setup("fit")
    assert one.cache_key() != four.cache_key()
    assert sorted(sides(tok, one, rows)[1]) == sorted(sides(tok, four, rows)[1])
    assert sides(tok, again, rows) == sides(tok, one, rows)
    other_seed = dm(tokenizer_dir, tmp_path / "one", tmp_path, seed=1)
    other_seed.setup("fit")
    assert sorted(sides(tok, other_seed, rows)[1]) != sorted(sides(tok, one, rows)[1])


def test_without_an_id_column_the_text_decides(tokenizer_dir, tok, tmp_path):
    rows = corpus(60)
    d = dm(tokenizer_dir, write(tmp_path / "noid", rows, with_id=False), tmp_path)
    d.setup("fit")
    train, val = sides(tok, d, rows)
    text = dict(rows)
    assert set(val) == {i for i in text if is_validation(text[i], 0.2, seed=0)} and not set(train) & set(val)


def test_a_tiny_corpus_still_holds_out_one_document_or_says_what_to_do(tokenizer_dir, tok, tmp_path):
    rows = corpus(3)
    d = dm(tokenizer_dir, write(tmp_path / "three", rows), tmp_path, val_fraction=0.001)
    d.setup("fit")
    train, val = sides(tok, d, rows)
    assert len(val) == 1 and len(train) == 2
    one = write(tmp_path / "one", corpus(1))
    with pytest.raises(DataConfigError, match="holds 1 document: too little to hold out a validation document"):
        dm(tokenizer_dir, one, tmp_path).setup("fit")
    two = write(tmp_path / "two", corpus(2))
    with pytest.raises(DataConfigError, match=r"all 2 documents .* validation side \(--data.val_fraction 0.99\)"):
        dm(tokenizer_dir, two, tmp_path, val_fraction=0.99).setup("fit")


def test_the_cache_keys_on_the_split_and_never_reuses_a_block_split_cache(tokenizer_dir, tmp_path, monkeypatch):
    shards = write(tmp_path / "shards", corpus(40))
    base = dm(tokenizer_dir, shards, tmp_path)
    key = base.cache_key()
    for change in ({"val_fraction": 0.3}, {"seed": 1}, {"id_column": None}):
        assert dm(tokenizer_dir, shards, tmp_path, **change).cache_key() != key, change
    # a cache of the block split (format 1: one blocks.npy) sits under another key and is not read
    monkeypatch.setattr(modeling.data, "CACHE_VERSION", 1)
    old = tmp_path / "cache" / base.cache_key()
    monkeypatch.undo()
    old.mkdir(parents=True)
    (old / "meta.json").write_text(json.dumps({"version": 1, "docs": 40, "tokens": 1, "last_block_tokens": 1}))
    np.save(old / "blocks.npy", np.zeros((1, 16), np.uint16))
    built = base.build_cache()
    assert built != old and (built / "train.npy").exists() and (built / "val.npy").exists()
    assert json.loads((built / "meta.json").read_text())["split"]["method"] == "by document"


# ------------------------------------------------------------------------------------------ test


def test_test_reads_the_curation_outputs_heldout_documents_not_validation(tokenizer_dir, tok, tmp_path):
    rows, held = corpus(60), corpus(12, seed=9, prefix="held")
    out = curated_output(tmp_path / "curated", rows, held)
    for path in (out, out / "data"):  # the output folder, or its data/ folder
        d = dm(tokenizer_dir, path, tmp_path)
        d.setup("fit")
        d.setup("test")
        tested = documents(d.test_set, tok.eos_token_id)
        assert sorted(tested) == sorted(ids_by_tokens(tok, held))
        assert not set(tested) & set(documents(d.val_set, tok.eos_token_id))
        assert len(d.test_dataloader().dataset) == len(d.test_set)
    # --data.test_path names another held-out set
    other = write(tmp_path / "mine", corpus(5, seed=4, prefix="mine"), n_shards=1)
    d = dm(tokenizer_dir, out, tmp_path, test_path=str(other))
    d.setup("test")
    assert len(documents(d.test_set, tok.eos_token_id)) == 5


def test_test_without_heldout_documents_is_a_clear_error(tokenizer_dir, tmp_path):
    plain = write(tmp_path / "shards", corpus(20))
    no_heldout = curated_output(tmp_path / "curated", corpus(20), heldout=None)
    for path in (plain, no_heldout):
        d = dm(tokenizer_dir, path, tmp_path)
        d.setup("fit")  # training and validation need no held-out set
        with pytest.raises(DataConfigError, match=r"test scores held-out documents, and there are none: "
                                                  r".*heldout/ folder\. Pass --data.test_path"):
            d.setup("test")
    with pytest.raises(DataConfigError, match=r"--data.test_path: .* is also read by training"):
        dm(tokenizer_dir, plain, tmp_path, test_path=str(plain / "part-00000.parquet"))


# ------------------------------------------------------------- the three sides, from a real curation run


@pytest.mark.ray
@pytest.mark.slow
def test_training_validation_and_heldout_are_disjoint_from_curation_to_test(tokenizer_dir, tok, tmp_path):
    """Curation (Ray, real steps) splits off heldout/; the data module carves validation out of data/ by
    document and tests on heldout/: every document is on exactly one of the three sides, by id and by text."""
    import ray

    from curation.config import build_config
    from curation.pipeline import run
    from curation.sample import generate

    generate(tmp_path / "raw", docs=300, seed=5)
    out = tmp_path / "curated"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        run(build_config(None, {"input": [str(tmp_path / "raw")], "output": str(out), "progress": False,
                                "steps": ["normalize", "html", "urls", "whitespace", "quality", "dedup", "pii"],
                                "split": {"heldout_fraction": 0.15}}))
    finally:
        ray.shutdown()
    kept = [(r["id"], r["text"]) for r in pq.read_table(out / "data").to_pylist()]
    held = [(r["id"], r["text"]) for r in pq.read_table(out / "heldout").to_pylist()]
    assert kept and held
    d = dm(tokenizer_dir, out, tmp_path, val_fraction=0.1)
    d.setup("fit")
    d.setup("test")
    # the sides by id: validation is what the data module's rule picks among data/, test is heldout/
    val = [(i, t) for i, t in kept if is_validation(i, 0.1, d.seed)]
    train = [(i, t) for i, t in kept if not is_validation(i, 0.1, d.seed)]
    assert val and len(val) < len(train)
    for a, b in ((train, val), (train, held), (val, held)):
        assert not {i for i, _ in a} & {i for i, _ in b}  # by id
        assert not {t for _, t in a} & {t for _, t in b}  # by text

    # and what the data module really packed into each set is exactly those documents (as token sequences)
    def tokens(rows):
        return sorted(tuple(tok(t, add_special_tokens=False)["input_ids"]) for _, t in rows)

    assert sorted(documents(d.train_set, tok.eos_token_id)) == tokens(train)
    assert sorted(documents(d.val_set, tok.eos_token_id)) == tokens(val)
    assert sorted(documents(d.test_set, tok.eos_token_id)) == tokens(held)


def test_evaluation_inputs_name_the_heldout_side_of_a_curation_output(tmp_path, caplog):
    from common.files import InputError
    from modeling.heldout import heldout_inputs

    out = curated_output(tmp_path / "curated", corpus(10), corpus(3, seed=2, prefix="held"))
    plain = write(tmp_path / "mine", corpus(4))
    # the output folder stands for its held-out split; any other path is left as given
    assert heldout_inputs([str(out), str(plain)]) == [str(out / "heldout"), str(plain)]
    # its data/ named on purpose is scored, with a warning that it is training data
    with caplog.at_level("WARNING"):
        assert heldout_inputs([str(out / "data")]) == [str(out / "data")]
    assert "training side of a curation output" in caplog.text
    bare = curated_output(tmp_path / "bare", corpus(10), heldout=None)
    with pytest.raises(InputError, match=r"--data .*bare: .*no heldout/ folder.*--split.heldout_fraction"):
        heldout_inputs([str(bare)])
