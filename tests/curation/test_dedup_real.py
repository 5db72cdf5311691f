"""Keys-only dedup on real text (data/sample/ and a sample of the benchmark corpus): the pipeline drops exactly
the rows that one ``mark_duplicates`` over all cleaned rows drops (what the document shuffle did before), the
output does not depend on CPUs or shard count, and only keys cross the shuffle."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import columns
from curation.config import build_config
from curation.dedup import REASON_DUPLICATE, mark_duplicates
from curation.io import ReadAccount, plan_reads, read_task
from curation.pipeline import CleanStage
from tests.curation.bench_sample import REPO, bench_corpus, write_sample

pytestmark = [pytest.mark.ray, pytest.mark.slow]
STEPS = ["normalize", "html", "urls", "whitespace", "quality", "dedup"]
"""Every step that changes what dedup compares; language and PII do not, and cost time."""


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    corpus = bench_corpus()
    if corpus is None:
        pytest.skip("no benchmark corpus: build it with `python benchmarks/corpus.py` (or set CURATION_BENCH_CORPUS)")
    out = tmp_path_factory.mktemp("bench")
    assert write_sample(corpus, out) > 2000
    return out


def _data(inputs, out, key="exact", **over):
    data = {"input": [str(i) for i in inputs], "output": str(out), "progress": False, "steps": STEPS,
            "dedup": {"key": key}, "reader": {"split_bytes": 65536},  # many read tasks: copies cross tasks
            "writer": {"write_dropped": True, "num_shards": 3}}
    for k, v in over.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    return data


def _run(inputs, out, key="exact", **over):
    from curation.pipeline import run

    return run(build_config(None, _data(inputs, out, key, **over)))


def reference(inputs, key):
    """Ids dropped as duplicates, and the number of groups, by one ``mark_duplicates`` over every cleaned row
    of the corpus, without Ray: the decision of the implementation before keys-only dedup."""
    cfg = build_config(None, _data(inputs, "unused", key))
    clean = CleanStage(cfg, 1)
    tables = []
    for task in plan_reads(cfg.input, cfg.text_column, cfg.reader, cfg.reserved_columns).tasks:
        for table in read_task(task, cfg.text_column, cfg.reader, cfg.reserved_columns, ReadAccount(task.source)):
            for start in range(0, table.num_rows, cfg.batch_size):
                batch = clean(table.slice(start, cfg.batch_size), {})
                tables.append(batch.select([columns.ID, columns.DEDUP_KEY, columns.DROP_REASON]))
    marked, groups = mark_duplicates(pa.concat_tables(tables, promote_options="permissive"))
    dup = [i for i, r in zip(marked.column(columns.ID).to_pylist(), marked.column(columns.DROP_REASON).to_pylist())
           if r == REASON_DUPLICATE]
    return sorted(dup), groups


def _dropped_duplicates(out):
    rows = pq.read_table(out / "dropped").to_pylist()
    return sorted(r["id"] for r in rows if r["drop_reason"] == REASON_DUPLICATE)


def _rows(out):
    """Every written row (data/ and heldout/), sorted by id: the dataset, whatever its file layout."""
    return pa.concat_tables([pq.read_table(out / d) for d in ("data", "heldout")]).sort_by("id").to_pylist()


def _digest(out):
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("part-*"))}


@pytest.mark.parametrize("key", ["exact", "normalized"])
def test_sample_data_same_duplicates_as_one_global_dedup(ray_local, tmp_path, key):
    sample = REPO / "data" / "sample"
    report = _run([sample], tmp_path / "out", key)
    dup, groups = reference([sample], key)
    assert dup and _dropped_duplicates(tmp_path / "out") == dup
    assert report["duplicates"] == {"groups": groups, "rows_removed": len(dup)}
    assert report["rows_in"] == report["rows_out"] + sum(report["dropped"].values())


def test_bench_sample_same_duplicates_any_layout_and_only_keys_shuffled(ray_local, bench, tmp_path):
    dup, groups = reference([bench], "normalized")
    assert len(dup) > 500  # the sample keeps the corpus's duplicates
    runs = {}
    for shards in (2, 5):
        out = tmp_path / f"s{shards}"
        report = _run([bench], out, "normalized", writer={"num_shards": shards})
        assert _dropped_duplicates(out) == dup
        assert report["duplicates"] == {"groups": groups, "rows_removed": len(dup)}
        assert report["rows_in"] == report["rows_out"] + sum(report["dropped"].values())
        shuffle = report["shuffle"]
        assert 0 < shuffle["bytes_per_input_byte"] < 0.05, shuffle
        assert shuffle["key_rows"] < report["rows_in"]  # copies inside a read task never leave it
        runs[shards] = _rows(out)
    assert runs[2] == runs[5]  # another shard layout, the same dataset


def test_same_bytes_on_one_cpu_or_two(ray_local, bench, tmp_path):
    """One CPU (a fresh Ray, through the CLI) and two (this module's Ray) write the same files."""
    _run([bench], tmp_path / "two", "exact", writer={"num_shards": 4})
    r = subprocess.run([sys.executable, "-m", "curation", "run", "--input", str(bench), "--output",
                        str(tmp_path / "one"), "--num_cpus", "1", "--steps", ",".join(STEPS), "--progress", "false",
                        "--reader.split_bytes", "65536", "--writer.num_shards", "4", "--writer.write_dropped", "true"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    one = _digest(tmp_path / "one")
    assert len([k for k in one if k.startswith("data/")]) == 4
    assert one == _digest(tmp_path / "two")


def test_killed_between_dedup_and_shards_resumes_to_the_same_bytes(ray_local, bench, tmp_path, monkeypatch):
    """A run that stops after the dedup stage wrote some partitions, resumed: the same bytes as one run."""
    from curation import layout, pipeline

    _run([bench], tmp_path / "ref", "exact", writer={"num_shards": 4})
    out = tmp_path / "out"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("driver killed after the dedup stage")

    monkeypatch.setattr(pipeline, "_stage2", crash)
    with pytest.raises(KeyboardInterrupt):
        _run([bench], out, "exact", writer={"num_shards": 4})
    monkeypatch.undo()
    parts = sorted((out / layout.WORK_DIR / "dedup").glob("part-*.json"))
    assert len(parts) == 4
    parts[0].unlink()  # as if this partition had not finished (its decisions file may exist)
    report = _run([bench], out, "exact", writer={"num_shards": 4}, resume=True)
    assert report["resume"]["key_partitions_reused"] == 3
    assert report["resume"]["read_tasks_reused"] == report["resume"]["read_tasks"]
    assert _digest(out) == _digest(tmp_path / "ref")
    assert Path(out / layout.MARKER).is_file()
