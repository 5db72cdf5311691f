"""Token shards: the job's output is a function of the documents alone (not of files or workers), decodes back
to the documents, packs like the text path, splits like it, weighs sources as asked, and refuses what it must."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from common.errors import UserError
from modeling.data import DataConfigError, TextDataModule
from modeling.packing import PackedBlocks, PackedStream
from modeling.shard_data import copies
from modeling.token_shards import MANIFEST, STATE_DIR, open_shards, shard_stem
from modeling.tokenize import TokenizeConfig, TokenizeOutputError, prepare_output
from modeling.tokenize_tasks import MergeShard, TokenizeFile
from tests.modeling.conftest import build_tokenizer_dir, make_docs

REPO = Path(__file__).resolve().parents[2]
HELDOUT = ["the held out contract says nothing.", "a patient was never seen in training."]


def write_corpus(root: Path, docs: list[str], n_files: int, sources: tuple[str, ...] = ("web",),
                 reverse: bool = False) -> Path:
    """``docs`` (ids ``d<i>``, source cycling through ``sources``) spread over ``n_files`` parquet files."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [(f"d{i}", t, sources[i % len(sources)]) for i, t in enumerate(docs)]
    order = range(n_files)[::-1] if reverse else range(n_files)
    for k, f in enumerate(order):
        part = rows[f::n_files]
        pq.write_table(pa.table({"id": [r[0] for r in part], "text": [r[1] for r in part],
                                 "source": [r[2] for r in part]}), root / f"part-{k:05d}.parquet")
    return root


def tokenize_without_ray(files: list[Path], tokenizer_dir: Path, out: Path, num_shards: int = 3,
                         batch_size: int = 7) -> Path:
    """Both stages of the job, called directly (Ray only schedules them)."""
    work, data = out / STATE_DIR / "work", out / "data"
    work.mkdir(parents=True)
    data.mkdir(parents=True)
    stage1 = TokenizeFile(str(tokenizer_dir / "tokenizer.json"), "text", "id", "source", batch_size, num_shards,
                          str(work), progress=False)
    for i, f in enumerate(files):
        stage1.run_file(i, f)
    for s in range(num_shards):
        MergeShard(str(work), str(data), "uint16").run_shard(s)
    return data


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_shards_are_the_same_bytes_for_any_files_and_batches_and_decode_to_the_documents(tmp_path, tokenizer_dir):
    docs = [*make_docs(120, seed=3), "", "ünïcode — naïve café"]  # an empty text is not a document
    one = tokenize_without_ray(sorted(write_corpus(tmp_path / "one", docs, 1).iterdir()), tokenizer_dir,
                               tmp_path / "out1", batch_size=1000)
    many = tokenize_without_ray(sorted(write_corpus(tmp_path / "many", docs, 4, reverse=True).iterdir()),
                                tokenizer_dir, tmp_path / "out4", batch_size=5)
    assert shard_bytes(one) == shard_bytes(many)

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    by_id = {f"d{i}": t for i, t in enumerate(docs) if t}
    seen = {}
    for s in range(3):
        stem = one / shard_stem(s)
        tokens, offsets = np.load(f"{stem}.tokens.npy", mmap_mode="r"), np.load(f"{stem}.offsets.npy")
        table = pq.read_table(f"{stem}.docs.parquet")
        assert tokens.dtype == np.uint16 and offsets[-1] == len(tokens) and table.column("id").to_pylist() == sorted(
            table.column("id").to_pylist())
        for d, doc_id in enumerate(table.column("id").to_pylist()):
            seen[doc_id] = tok.decode(tokens[offsets[d]:offsets[d + 1]].tolist())
    assert seen == by_id


@pytest.mark.parametrize("block_size", [1, 5, 32])
def test_packed_stream_gives_the_text_path_blocks(tmp_path, tokenizer_dir, block_size):
    docs = make_docs(40, seed=5)
    hf = AutoTokenizer.from_pretrained(tokenizer_dir)
    expected = list(PackedBlocks([docs[:13], docs[13:]], hf, block_size))
    encoded = [np.asarray(e.ids, dtype=np.uint16) for e in Tokenizer.from_file(
        str(tokenizer_dir / "tokenizer.json")).encode_batch(docs, add_special_tokens=False)]
    flat = np.concatenate(encoded)
    bounds = np.concatenate(([0], np.cumsum([len(e) for e in encoded])))
    segments = np.stack([np.zeros(len(docs), np.int64), bounds[:-1], bounds[1:]], axis=1)
    stream = PackedStream([flat], segments, hf.eos_token_id, hf.pad_token_id, block_size, np.uint16)
    got = [stream[i].tolist() for i in range(len(stream))]
    assert got[:-1] == expected[:-1]
    assert got[-1][:stream.last_block_tokens] == expected[-1] and len(got) == len(expected)


def test_a_packed_stream_pickles_its_memory_maps_by_reference(tmp_path):
    path = tmp_path / "t.npy"
    np.save(path, np.arange(1000, dtype=np.uint16))
    stream = PackedStream([np.load(path, mmap_mode="r")], np.array([[0, 0, 600], [0, 600, 1000]]), 7, 0, 64,
                          np.uint16)
    data = pickle.dumps(stream)
    again = pickle.loads(data)
    assert len(data) < 2000 and str(again.arrays[0].filename) == str(path)
    assert all(np.array_equal(stream[i], again[i]) for i in range(len(stream)))


def test_the_output_folder_rules(tmp_path):
    cfg = TokenizeConfig(input=("x",), tokenizer="t", output=str(tmp_path / "out"))
    out = prepare_output(cfg, [])
    assert (out / STATE_DIR).is_dir()
    (out / "data").mkdir()
    (out / "data" / "shard-00000.tokens.npy").write_bytes(b"old")
    (out / MANIFEST).write_text("{}")
    with pytest.raises(TokenizeOutputError, match="--overwrite"):
        prepare_output(cfg, [])
    prepare_output(TokenizeConfig(input=("x",), tokenizer="t", output=str(out), overwrite=True), [])
    assert not (out / "data").exists() and not (out / MANIFEST).exists()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TokenizeOutputError, match="did not write"):
        prepare_output(TokenizeConfig(input=("x",), tokenizer="t", output=str(out), overwrite=True), [])
    assert (out / "notes.txt").read_text() == "mine"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "a.bin").write_bytes(b"")
    with pytest.raises(TokenizeOutputError, match="did not write"):
        prepare_output(TokenizeConfig(input=("x",), tokenizer="t", output=str(foreign), overwrite=True), [])


def test_mixture_copies_are_deterministic_and_have_the_expected_mean():
    ids = [f"doc-{i}" for i in range(4000)]
    for weight in (0.0, 0.5, 1.0, 2.5):
        counts = [copies(i, weight, seed=0) for i in ids]
        assert counts == [copies(i, weight, seed=0) for i in ids]
        assert abs(np.mean(counts) - weight) < 0.03
        assert set(counts) <= {int(weight), int(weight) + 1}


def run_tokenize(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "modeling.tokenize", *args, "--progress", "false"], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_print_config_and_a_missing_input(tmp_path, tokenizer_dir):
    proc = run_tokenize("--config", str(REPO / "configs/tokenize/default.yaml"), "--print_config", cwd=tmp_path)
    assert proc.returncode == 0 and "num_shards: 8" in proc.stdout
    proc = run_tokenize("--input", str(tmp_path / "nope"), "--tokenizer", str(tokenizer_dir), "--output",
                        str(tmp_path / "o"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --input")


@pytest.fixture(scope="module")
def mixed_shards(tmp_path_factory, tokenizer_dir) -> tuple[Path, Path]:
    """The job through its command line (embedded Ray, 1 CPU, one file) on a two-source corpus, and the
    corpus' 3-file copy tokenized with 2 CPUs."""
    root = tmp_path_factory.mktemp("mixed")
    docs = make_docs(300, seed=7)
    # "one" looks like a finished curation output (manifest, _SUCCESS, data/ and heldout/)
    write_corpus(root / "one" / "data", docs, 1, sources=("web", "clinic", "web"))
    write_corpus(root / "one" / "heldout", HELDOUT, 1)
    (root / "one" / ".curation").mkdir()
    (root / "one" / ".curation" / "manifest.json").write_text("{}")
    (root / "one" / "_SUCCESS").write_text("{}")
    write_corpus(root / "three", docs, 3, sources=("web", "clinic", "web"))
    for name, cpus, more in (("one", "1", ["--heldout", "true"]), ("three", "2", [])):
        proc = run_tokenize("--input", str(root / name), "--tokenizer", str(tokenizer_dir), "--output",
                            str(root / f"tok-{name}"), "--num_cpus", cpus, "--num_shards", "4", *more, cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root, root / "tok-one"


@pytest.mark.slow
@pytest.mark.ray
def test_the_job_writes_the_same_bytes_on_1_or_2_cpus_and_1_or_3_files(mixed_shards):
    root, _ = mixed_shards
    assert shard_bytes(root / "tok-one" / "data") == shard_bytes(root / "tok-three" / "data")
    one, three = (json.loads((root / f"tok-{n}" / MANIFEST).read_text()) for n in ("one", "three"))
    assert [s["tokens_sha256"] for s in one["splits"]["data"]["shards"]] == [
        s["tokens_sha256"] for s in three["splits"]["data"]["shards"]]
    assert len(three["splits"]["data"]["inputs"]) == 3 and one["splits"]["data"]["docs"] == 300


@pytest.mark.slow
@pytest.mark.ray
def test_test_reads_the_heldout_shards(mixed_shards, tokenizer_dir):
    _, shards = mixed_shards
    dm = TextDataModule(tokenizer=str(tokenizer_dir), token_shards=str(shards), block_size=8)
    dm.setup("test")
    ids = np.concatenate([dm.test_set[i]["input_ids"].numpy() for i in range(len(dm.test_set))])
    text = dm.tokenizer.decode(ids[ids != dm.tokenizer.pad_token_id].tolist())
    assert text.endswith("</s>") and sorted(text.split("</s>")[:-1]) == sorted(HELDOUT)


@pytest.mark.slow
@pytest.mark.ray
def test_token_shards_split_like_the_text_path(mixed_shards, tokenizer_dir, tmp_path):
    root, shards = mixed_shards
    text = TextDataModule(tokenizer=str(tokenizer_dir), path=str(root / "three"), block_size=16,
                          cache_dir=str(tmp_path / "cache"), val_fraction=0.1)
    text.setup("fit")
    tok = TextDataModule(tokenizer=str(tokenizer_dir), token_shards=str(shards), block_size=16, val_fraction=0.1)
    tok.setup("fit")
    meta = json.loads((text.build_cache() / "meta.json").read_text())
    for side, got in (("train", tok.train_set), ("val", tok.val_set)):
        assert tok.shard_summary[side]["docs"] == meta[side]["docs"]
        assert tok.shard_summary[side]["tokens"] == meta[side]["tokens"] and len(got) == meta[side]["blocks"]
    # the same documents: the same multiset of tokens on each side
    for side in ("train", "val"):
        a, b = (np.sort(np.concatenate([s[i]["input_ids"].numpy() for i in range(len(s))]))
                for s in (getattr(text, f"{side}_set"), getattr(tok, f"{side}_set")))
        assert np.array_equal(a[a != tok.tokenizer.pad_token_id], b[b != tok.tokenizer.pad_token_id])


@pytest.mark.slow
@pytest.mark.ray
def test_mixture_weights_change_the_training_share_not_validation(mixed_shards, tokenizer_dir):
    _, shards = mixed_shards
    common = dict(tokenizer=str(tokenizer_dir), token_shards=str(shards), block_size=16, val_fraction=0.1)
    plain = TextDataModule(**common)
    plain.setup("fit")
    mixed = TextDataModule(**common, mixture={"clinic": 3.0, "web": 0.5})
    mixed.setup("fit")
    p, m = plain.shard_summary["sources"], mixed.shard_summary["sources"]
    assert p["clinic"]["packed_docs"] == p["clinic"]["docs"]
    assert m["clinic"]["packed_docs"] == 3 * m["clinic"]["docs"]
    assert abs(m["web"]["packed_docs"] / m["web"]["docs"] - 0.5) < 0.12
    expected = 3 * p["clinic"]["tokens"] / (3 * p["clinic"]["tokens"] + 0.5 * p["web"]["tokens"])
    assert abs(m["clinic"]["packed_share"] - expected) < 0.05
    assert mixed.shard_summary["val"] == plain.shard_summary["val"]
    assert mixed.fingerprint()["mixture"] == {"clinic": 3.0, "web": 0.5}
    # another mixture is another training set: a checkpoint's resume check tells them apart
    assert mixed.fingerprint()["tokens_sha256"] != plain.fingerprint()["tokens_sha256"]
    with pytest.raises(DataConfigError, match="names source 'clinical'"):
        TextDataModule(**common, mixture={"clinical": 2.0}).setup("fit")


@pytest.mark.slow
@pytest.mark.ray
def test_shards_of_another_tokenizer_are_refused(mixed_shards, tmp_path):
    _, shards = mixed_shards
    other = build_tokenizer_dir(tmp_path / "other")
    (other / "tokenizer.json").write_text((other / "tokenizer.json").read_text().replace('"</s>"', '"</eos>"'))
    with pytest.raises(UserError, match="tokenized with"):
        TextDataModule(tokenizer=str(other), token_shards=str(shards))
    assert len(open_shards(shards)) == 4


@pytest.mark.slow
@pytest.mark.ray
def test_ddp_on_two_cpu_ranks_trains_from_token_shards_with_the_text_split(mixed_shards, tokenizer_dir, tmp_path):
    root, shards = mixed_shards
    text = TextDataModule(tokenizer=str(tokenizer_dir), path=str(root / "three"), block_size=32,
                          cache_dir=str(tmp_path / "cache"), val_fraction=0.05)
    text.setup("fit")
    meta = json.loads((text.build_cache() / "meta.json").read_text())
    args = ["fit", "--config", str(REPO / "configs/train/tiny-cpu.yaml"), "--data.path", "null",
            "--data.token_shards", str(shards), "--data.tokenizer", str(tokenizer_dir), "--data.block_size", "32", "--data.batch_size", "4",
            "--data.mixture", "{clinic: 2.0}", "--model.scratch.hidden_size", "32",
            "--model.scratch.max_position_embeddings", "32", "--trainer.accelerator", "cpu",
            "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.precision", "32-true",
            "--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "2",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
            "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
            "--name", "csv"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "modeling.train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "world_size: 2" in out or "distributed_backend=gloo" in out
    assert f"-> {meta['train']['docs']:,} train docs" in out and f"/ {meta['val']['docs']:,} val docs" in out
    run_dir = next((tmp_path / "csv").iterdir())
    saved = (run_dir / "config.yaml").read_text()
    assert "token_shards:" in saved and "clinic: 2.0" in saved
