"""Every record accounted for: the conservation checks fire (disable one and these fail), and columns whose
types differ between files are unified into one output schema."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import layout, schema
from curation.config import build_config
from curation.report import ConservationError, check_conservation, check_reader_conservation


def _report(rows_in=10, rows_out=7, dropped=None, records=10):
    return {"rows_in": rows_in, "rows_out": rows_out, "dropped": dropped or {"duplicate": 3},
            "read": {"records": records}}


def test_conservation_law_holds_and_breaks():
    check_conservation(_report())
    with pytest.raises(ConservationError, match="rows do not add up"):
        check_conservation(_report(rows_out=8))
    with pytest.raises(ConservationError, match="readers found 11 records but 10 rows"):
        check_conservation(_report(records=11))


def test_reader_conservation_names_the_file():
    check_reader_conservation([{"source": "a.csv", "records": 5, "rows": 5}])
    with pytest.raises(ConservationError, match=r"logs/a\.csv: the reader found 1000 records but produced 101"):
        check_reader_conservation([{"source": "logs/a.csv", "records": 1000, "rows": 101}])


def test_unify_widens_or_stringifies_and_conform_fills_missing_columns():
    a = pa.table({"x": [1, 2], "s": [{"a": 1}, {"a": 2}], "n": [None, None]})
    b = pa.table({"x": ["u", "v"], "s": [{"b": "q"}, None], "f": [1.5, 2.0]})
    c = pa.table({"x": pa.array([3], pa.int32()), "f": [3]})
    unified, stringified = schema.unify([a.schema, b.schema, c.schema])
    assert unified.field("x").type == pa.string() and stringified == {"x": ["int32", "int64", "string"]}
    assert unified.field("f").type == pa.float64() and unified.field("n").type == pa.string()
    assert unified.field("s").type == pa.struct([("a", pa.int64()), ("b", pa.string())])
    rows = [r for t in (a, b, c) for r in schema.conform(t, unified).to_pylist()]
    assert [r["x"] for r in rows] == ["1", "2", "u", "v", "3"]
    assert rows[0]["f"] is None and rows[4]["f"] == 3.0 and rows[2]["s"] == {"a": None, "b": "q"}
    assert schema.schema_from_json(schema.schema_to_json(unified)) == unified


def test_nested_values_that_cannot_be_cast_become_json():
    unified, stringified = schema.unify([pa.schema([("m", pa.list_(pa.int64()))]), pa.schema([("m", pa.string())])])
    t = schema.conform(pa.table({"m": [[1, 2], None]}), unified)
    assert t.column("m").to_pylist() == ["[1, 2]", None] and "m" in stringified


def _mixed_inputs(d):
    d.mkdir()
    (d / "a.jsonl").write_text("\n".join(json.dumps({"text": f"Document number {i} about routers.", "rating": i})
                                         for i in range(5)) + "\n")
    (d / "b.jsonl").write_text("\n".join(json.dumps({"text": f"Another text {i} on modems and cables.",
                                                     "rating": "high", "tag": {"k": i}}) for i in range(5)) + "\n")
    (d / "c.csv").write_text("text,extra\nA csv document about firmware.,1\n")
    return d


def _small_run(tmp_path):
    return build_config(None, {"input": [str(_mixed_inputs(tmp_path / "in"))], "output": str(tmp_path / "out"),
                               "progress": False, "steps": ["normalize", "dedup"]})


@pytest.mark.ray
@pytest.mark.slow
def test_mixed_column_types_across_files_give_one_schema(ray_local, tmp_path):
    from curation.pipeline import run

    src = _mixed_inputs(tmp_path / "in")
    out = tmp_path / "out"
    report = run(build_config(None, {"input": [str(src)], "output": str(out), "progress": False,
                                     "steps": ["normalize", "dedup"], "writer": {"num_shards": 3}}))
    assert report["rows_out"] == 11
    assert report["columns_as_strings"] == {"rating": ["int64", "string"]}
    schemas = {str(pq.read_schema(p)) for d in ("data", "heldout") for p in (out / d).glob("part-*.parquet")}
    assert len(schemas) == 1  # every shard, held-out ones too, has the same schema: the folder reads as one table
    table = _curated(out)
    assert sorted(v for v in table.column("rating").to_pylist() if v not in ("high", None)) == ["0", "1", "2", "3", "4"]


@pytest.mark.ray
@pytest.mark.slow
def test_a_broken_count_stops_the_run_before_the_marker(ray_local, tmp_path, monkeypatch):
    """If a step lost a row, the run fails loudly and the output is not marked finished."""
    from curation import pipeline

    cfg = _small_run(tmp_path)
    real = pipeline.build_report

    def lose_a_row(*args, **kwargs):
        report = real(*args, **kwargs)
        report["rows_out"] -= 1
        return report

    monkeypatch.setattr(pipeline, "build_report", lose_a_row)
    with pytest.raises(ConservationError, match="rows do not add up"):
        pipeline.run(cfg)
    assert not (tmp_path / "out" / layout.MARKER).exists() and not (tmp_path / "out" / "report.json").exists()
    assert (tmp_path / "out" / layout.STATE_DIR / "report.failed.json").is_file()


@pytest.mark.ray
@pytest.mark.slow
def test_a_reader_that_merges_records_stops_the_run_before_any_shard(ray_local, tmp_path, monkeypatch):
    from curation import pipeline

    cfg = _small_run(tmp_path)
    real = pipeline._stage1

    def merged(*args, **kwargs):
        records, ran = real(*args, **kwargs)
        records[0]["rows"] -= 1  # as a reader that merged two records into one row would report
        return records, ran

    monkeypatch.setattr(pipeline, "_stage1", merged)
    with pytest.raises(ConservationError, match=r"a\.jsonl: the reader found 5 records but produced 4 rows"):
        pipeline.run(cfg)
    assert not list((tmp_path / "out" / "data").glob("part-*"))


def _curated(out):
    """Every curated row: the training side and the held-out split."""
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(out / "data"), pq.read_table(out / "heldout")])


def _messy_folder(d):
    """Every kind of messy input a user's folder holds, in one place."""
    import gzip

    d.mkdir()
    good = [{"text": f"Support ticket {i}: the router drops the connection every night.", "n": i} for i in range(50)]
    (d / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in good[:10]).encode() + b"\n")
    rows = [f'{i},"Customer {i} reports that the modem keeps rebooting after updates."' for i in range(1000)]
    rows[100] = '100,"Customer 100 opened a quote that never closes, and the modem reboots.'
    (d / "broken_quote.csv").write_text("\ufeffid,text\n" + "\n".join(rows) + "\n", encoding="utf-8")
    (d / "array.json").write_text(json.dumps([{"text": f"Array document {i} about firmware.", "id": f"arr-{i}"}
                                              for i in range(1000)]))
    (d / "empty.jsonl").write_bytes(b"")
    (d / "empty.csv").write_text("id,text\n")
    whole = gzip.compress(("\n".join(json.dumps(r) for r in good[10:]) + "\n").encode() * 20)
    (d / "truncated.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (d / "page.html").write_text("<p>not read: no reader for .html</p>")
    (d / "cols.jsonl").write_text("\n".join(json.dumps(
        {"text": f"A note with colliding column names, number {i}.", "source": i, "drop_reason": "theirs",
         "_cur_stats": "x", "lang": "their-lang"}) for i in range(5)) + "\n")
    return d


@pytest.mark.ray
@pytest.mark.slow
def test_messy_folder_every_record_accounted_for(ray_local, tmp_path):
    from curation.pipeline import run

    src = _messy_folder(tmp_path / "in")
    out = tmp_path / "out"
    report = run(build_config(None, {"input": [str(src)], "output": str(out), "progress": False,
                                     "steps": ["normalize", "language", "dedup"], "writer": {"num_shards": 2}}))
    files = report["files"]
    read = {f["path"]: f for f in files["read"]}
    assert read["broken_quote.csv"]["records"] == 1000  # one broken row, 999 good ones: nothing merged
    assert read["array.json"]["records"] == 1000
    assert read["bom.jsonl"]["records"] == 10
    assert {f["path"] for f in files["corrupt"]} == {"truncated.jsonl.gz"}
    assert set(files["empty"]) == {"empty.jsonl", "empty.csv"}
    assert files["skipped"] == [{"path": "page.html", "reason": "unknown file type .html"}]
    assert files["renamed_columns"] == {"_cur_stats": "input__cur_stats", "lang": "input_lang"}
    assert report["dropped"]["malformed_csv"] == 1 and report["dropped"]["corrupt_file"] == 1
    assert report["dropped"].get("malformed_json", 0) <= 1  # at most the line the truncation cut in half
    assert report["rows_in"] == report["read"]["records"] == sum(f["records"] for f in files["read"])
    table = _curated(out)
    rows = {r["id"]: r for r in table.to_pylist()}
    note = next(r for r in rows.values() if r["text"].startswith("A note with colliding"))
    assert note["drop_reason"] == "theirs" and note["input_lang"] == "their-lang" and note["lang"] == "en"
    assert note["source"] in {str(i) for i in range(5)}  # an int source column is kept, as text
    assert "bom.jsonl:000000000000" in rows  # ids from the path below the input root, not as typed
    assert sum(i.startswith("bom.jsonl:") for i in rows) == 10  # the BOM no longer costs the first row
    md = (out / "report.md").read_text()
    assert "truncated.jsonl.gz" in md and "page.html" in md


@pytest.mark.ray
@pytest.mark.slow
def test_nothing_to_keep_still_gives_a_table_with_columns(ray_local, tmp_path):
    from curation.pipeline import run

    src = tmp_path / "in"
    src.mkdir()
    (src / "empty.jsonl").write_bytes(b"")
    (src / "blank.csv").write_text("id,text,lang_hint\n")
    (src / "short.jsonl").write_text(json.dumps({"text": "hi", "extra": 1}) + "\n")
    out = tmp_path / "out"
    report = run(build_config(None, {"input": [str(src)], "output": str(out), "progress": False,
                                     "quality": {"min_words": 3}}))
    assert report["rows_out"] == 0 and report["dropped"] == {"too_few_words": 1}
    for folder in ("data", "heldout"):  # both sides read as a table with the run's columns
        table = pq.read_table(out / folder)
        assert table.num_rows == 0 and {"id", "text", "source", "extra"} <= set(table.column_names)
    assert (out / layout.MARKER).is_file()
