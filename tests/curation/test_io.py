"""Readers, planning, validation and writers (no Ray)."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import columns, schema
from curation.io import (
    ReadAccount,
    ReaderConfig,
    WriterConfig,
    atomic_write,
    plan_reads,
    read_task,
    write_table,
)
from curation.paths import InputError, resolve_paths
from tests.curation.readers import read_all


def test_missing_path_names_it_and_lists_folder(tmp_path):
    (tmp_path / "present.jsonl").write_text("{}\n")
    with pytest.raises(InputError, match=r"missing\.jsonl' does not exist.*present\.jsonl"):
        resolve_paths(str(tmp_path / "missing.jsonl"))


def test_empty_glob_and_empty_dir(tmp_path):
    with pytest.raises(InputError, match="matched no file"):
        resolve_paths(str(tmp_path / "*.parquet"))
    (tmp_path / "notes.bin").write_bytes(b"x")
    with pytest.raises(InputError, match=r"holds no readable file.*notes\.bin"):
        resolve_paths(str(tmp_path))


def test_missing_text_column_fails_before_reading(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"body": "x", "id": 1}) + "\n")
    with pytest.raises(InputError, match=r"no text column 'text'; its columns are \['body', 'id'\].*--text-column"):
        plan_reads([str(tmp_path)], "text")
    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "b.parquet")
    with pytest.raises(InputError, match="content"):
        plan_reads([str(tmp_path / "b.parquet")], "text")
    (tmp_path / "c.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=r"\['a', 'b'\]"):
        plan_reads([str(tmp_path / "c.csv")], "text")


def test_bad_rows_are_counted_not_raised(tmp_path):
    lines = [
        json.dumps({"text": "good one", "lang_hint": "en"}).encode(),
        b"{not json",
        b"[1, 2]",
        json.dumps({"text": None}).encode(),
        json.dumps({"other": 1}).encode(),
        json.dumps({"text": 42}).encode(),
        json.dumps({"text": "   "}).encode(),
        b'{"text": "bad \xff\xfe bytes"}',
        b"",
        json.dumps({"text": "lone \ud800 surrogate"}).encode(),
    ]
    (tmp_path / "x.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    rows = read_all([str(tmp_path / "x.jsonl")])
    reasons = [r[columns.DROP_REASON] for r in rows]
    assert reasons == [None, "malformed_json", "malformed_json", "null_text", "null_text", "non_string_text",
                       "empty_text", "invalid_utf8", "invalid_utf8"]
    assert rows[0]["lang_hint"] == "en" and rows[0]["text"] == "good one"
    assert len({r[columns.ID] for r in rows}) == len(rows)


def test_ids_kept_or_assigned_deterministically(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "a", "id": 7}\n{"text": "b", "id": "x"}\n')
    (tmp_path / "b.jsonl").write_text('{"text": "c"}\n{"text": "d"}\n')
    rows = read_all([str(tmp_path)])
    assert [r["id"] for r in rows] == ["7", "x", "b.jsonl:000000000000", "b.jsonl:000000000014"]
    assert rows == read_all([str(tmp_path)])


def test_non_string_ids_are_json_ints_and_strings_as_before(tmp_path):
    values = [7, "x", True, {"b": 2, "a": 1}, 1.5, [1, "y"], "7 ", False]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "id": v}) + "\n" for i, v in enumerate(values)))
    assert [r["id"] for r in read_all([str(tmp_path)])] == [
        "7", "x", "true", '{"a": 1, "b": 2}', "1.5", '[1, "y"]', "7 ", "false"]


def test_mixed_type_column_is_stringified_like_the_schema_conform_does_across_files(tmp_path):
    values = ["x", 3, {"k": "v"}, None, "4", [1, 2], True]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "meta": v, "n": i})
                                              + "\n" for i, v in enumerate(values)))
    [task] = plan_reads([str(tmp_path)], "text").tasks
    account = ReadAccount(task.source)
    [table] = read_task(task, "text", account=account)  # one batch: Arrow cannot unify meta's values
    expected = ["x", "3", '{"k": "v"}', None, "4", "[1, 2]", "true"]
    assert table.column("meta").to_pylist() == expected
    assert account.stringified == {"meta"}
    one_per_batch = ReaderConfig(batch_rows=1)  # one value per batch: the pipeline's schema does it across batches
    account = ReadAccount(task.source)
    tables = list(read_task(task, "text", one_per_batch, account=account))
    unified, strung = schema.unify(t.schema for t in tables)
    assert strung.keys() == {"meta"} and account.stringified == set()
    conformed = pa.concat_tables(schema.conform(t, unified) for t in tables)
    assert conformed.column("meta").to_pylist() == expected


def test_large_jsonl_is_split_without_losing_or_repeating_lines(tmp_path):
    p = tmp_path / "big.jsonl"
    p.write_text("".join(json.dumps({"text": f"row {i} " + "x" * (i % 50)}) + "\n" for i in range(3000)))
    cfg = ReaderConfig(split_bytes=4096)
    tasks = plan_reads([str(p)], "text", cfg).tasks
    assert len(tasks) > 20
    texts = [r["text"] for r in read_all([str(p)], cfg=cfg)]
    assert texts == [f"row {i} " + "x" * (i % 50) for i in range(3000)]


def test_gzip_csv_parquet_text_formats(tmp_path):
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as fh:
        fh.write('{"text": "gz row"}\n')
    (tmp_path / "customer_logs.csv").write_text('id,text,agent\n1,"Hello, ""quoted""\nmultiline",bob\n2,bye,\n3,short\n')
    pq.write_table(pa.table({"text": ["pq1", "pq2"], "score": [0.5, 0.7]}), tmp_path / "c.parquet", row_group_size=1)
    (tmp_path / "d.txt").write_text("a whole\ndocument\n")
    rows = read_all([str(tmp_path)])
    by_text = {r["text"]: r for r in rows if r["text"]}
    assert by_text['Hello, "quoted"\nmultiline']["agent"] == "bob"
    assert "gz row" in by_text and "pq2" in by_text and by_text["pq2"]["score"] == 0.7
    assert by_text["a whole\ndocument\n"]["source"].endswith("d.txt")
    bad = [r for r in rows if r[columns.DROP_REASON] == "malformed_csv"]
    assert [r["id"] for r in bad] == ["customer_logs.csv:000000000003"]  # 2 fields, header has 3
    lines = read_all([str(tmp_path / "d.txt")], cfg=ReaderConfig(text_mode="line"))
    assert [r["text"] for r in lines] == ["a whole", "document"]


def test_ten_megabyte_document(tmp_path):
    big = "word " * 2_000_000
    (tmp_path / "big.jsonl").write_text(json.dumps({"text": big}) + "\n")
    rows = read_all([str(tmp_path / "big.jsonl")])
    assert len(rows) == 1 and len(rows[0]["text"]) == len(big)


def test_hf_dataset_local_folder(tmp_path):
    src = tmp_path / "hfdata"
    src.mkdir()
    (src / "train.jsonl").write_text('{"text": "from hf one"}\n{"text": "from hf two"}\n')
    rows = read_all([f"hf://{src}"])
    assert [r["text"] for r in rows] == ["from hf one", "from hf two"]
    assert rows[0]["id"].endswith(":000000000000")
    streamed = read_all([f"hf://{src}"], cfg=ReaderConfig(hf_streaming=True))
    assert [r["text"] for r in streamed] == ["from hf one", "from hf two"]
    with pytest.raises(InputError, match="no text column 'body'"):
        plan_reads([f"hf://{src}"], "body")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "part-00000.parquet"

    def crash(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert list(tmp_path.iterdir()) == []


def test_write_table_formats(tmp_path):
    t = pa.table({"text": ["a", "ü"], "id": ["1", "2"]})
    write_table(t, tmp_path / "x.parquet", WriterConfig())
    assert pq.read_table(tmp_path / "x.parquet").equals(t)
    write_table(t, tmp_path / "x.jsonl", WriterConfig(format="jsonl"))
    assert [json.loads(line) for line in (tmp_path / "x.jsonl").read_text(encoding="utf-8").splitlines()] == t.to_pylist()
