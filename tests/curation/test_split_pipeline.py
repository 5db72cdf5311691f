"""The held-out split through the real pipeline: disjoint sides, nothing lost, counted, and never trained on."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation import layout
from curation.config import build_config
from curation.sample import generate

pytestmark = [pytest.mark.ray, pytest.mark.slow]
SPLIT = {"heldout_fraction": 0.2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("split")
    generate(d, docs=400, seed=3)
    return d


def _run(corpus, out, **over):
    from curation.pipeline import run

    data = {"input": [str(corpus)], "output": str(out), "progress": False, "writer": {"num_shards": 3},
            "steps": ["normalize", "html", "urls", "whitespace", "quality", "dedup", "pii"], "split": SPLIT}
    data.update(over)
    return run(build_config(None, data))


def _rows(folder: Path) -> list[dict]:
    return sorted(pq.read_table(folder).to_pylist(), key=lambda r: r["id"])


@pytest.fixture(scope="module")
def split_run(ray_local, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "split"
    return out, _run(corpus, out)


def test_sides_are_disjoint_and_together_are_the_unsplit_output(split_run, corpus, tmp_path):
    out, report = split_run
    train, held = _rows(out / "data"), _rows(out / "heldout")
    assert held and train and 0.1 < len(held) / (len(held) + len(train)) < 0.3
    assert not {r["id"] for r in train} & {r["id"] for r in held}
    assert not {r["text"] for r in train} & {r["text"] for r in held}
    assert pq.read_schema(sorted((out / "heldout").glob("part-*"))[0]) == pq.read_schema(
        sorted((out / "data").glob("part-*"))[0])  # same format and columns
    whole = tmp_path / "whole"
    unsplit = _run(corpus, whole, split={"heldout_fraction": 0})
    assert not (whole / "heldout").exists() and unsplit["split"]["heldout"]["docs"] == 0
    assert sorted(train + held, key=lambda r: r["id"]) == _rows(whole / "data")
    # the report, on disk too, counts each side
    saved = json.loads((out / "report.json").read_text())
    assert saved["split"] == report["split"]
    sp = report["split"]
    assert (sp["key"], sp["heldout_fraction"], sp["effective_fraction"]) == ("text", 0.2, 0.2)
    assert sp["train"]["docs"] == len(train) and sp["heldout"]["docs"] == len(held)
    assert sp["heldout"]["text_bytes"] == sum(len(r["text"].encode()) for r in held)
    assert sp["train"]["docs"] + sp["heldout"]["docs"] == report["rows_out"]
    assert "## Held-out split" in (out / "report.md").read_text()
    marker = json.loads((out / layout.MARKER).read_text())
    assert {f"heldout/{p.name}" for p in (out / "heldout").glob("part-*")} <= set(marker["files"])


def test_without_dedup_duplicates_still_share_a_side(ray_local, corpus, tmp_path):
    out = tmp_path / "nodedup"
    report = _run(corpus, out, steps=["normalize", "html", "whitespace"], split={"heldout_fraction": 0.3})
    train, held = _rows(out / "data"), _rows(out / "heldout")
    texts = [r["text"] for r in train + held]
    assert len(texts) - len(set(texts)) > 10  # the corpus's duplicates are all there, dedup did not run
    assert not {r["text"] for r in train} & {r["text"] for r in held}
    assert report["split"]["key"] == "text" and held


def test_the_cap_lowers_the_fraction_and_zero_held_out_still_reads_as_a_table(ray_local, corpus, tmp_path):
    report = _run(corpus, tmp_path / "capped", split={"heldout_fraction": 0.5, "heldout_max_docs": 20})
    sp = report["split"]
    assert sp["effective_fraction"] < 0.5 and 5 <= sp["heldout"]["docs"] <= 40
    report = _run(corpus, tmp_path / "none", split={"heldout_fraction": 1e-9}, writer={"num_shards": 2})
    assert report["split"]["heldout"]["docs"] == 0
    empty = pq.read_table(tmp_path / "none" / "heldout")
    assert empty.num_rows == 0 and {"id", "text", "source"} <= set(empty.column_names)


def test_overwrite_without_a_split_removes_the_old_heldout_folder(split_run, corpus, tmp_path):
    out = tmp_path / "o"
    _run(corpus, out, steps=["normalize"])
    assert any((out / "heldout").glob("part-*"))
    _run(corpus, out, steps=["normalize"], split={"heldout_fraction": 0}, overwrite=True)
    assert not (out / "heldout").exists() and (out / layout.MARKER).is_file()


def test_the_tokenizer_and_training_read_only_the_training_side(split_run):
    from modeling.corpus import iter_text_batches, resolve_text_files

    out, _ = split_run
    files = resolve_text_files(out)  # what the tokenizer (training.py) and the data module (data.py) read
    assert files and all(f.parent == out / "data" for f in files)
    seen = {t for batch in iter_text_batches(files, "text") for t in batch}
    held = {r["text"] for r in _rows(out / "heldout")}
    assert held and not seen & held
    assert seen == {r["text"] for r in _rows(out / "data")}
