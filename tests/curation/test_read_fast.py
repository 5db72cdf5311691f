"""The fast read path gives exactly the tables the careful one gave.

``read_task`` builds Arrow columns with ``pa.array`` first and checks values one by one only when Arrow refuses
them (``curation.io._column``, ``_RowBuffer.flush``). These tests compare its output, table by table (schema,
values, order, drop reasons, ids) and its ``ReadAccount``, with hand-built tables and with the reference: the
per-row code it replaced, kept below (``_RefRowBuffer``) and swapped in for ``_RowBuffer``.
"""

import gzip
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import curation.io as cio
from curation import columns
from curation.io import (
    ReadAccount,
    ReaderConfig,
    ReadTask,
    _has_surrogates,
    _RowBuffer,
    classify_text,
    plan_reads,
    read_task,
    rename_columns,
)
from curation.schema import json_string

DROP = columns.DROP_REASON
SURR = "a\udc80b"  # a lone surrogate, as surrogateescape makes of the byte 0x80


# ------------------------------------------------------------------------- reference: the code before


# ``classify_text`` and ``_has_surrogates`` are the reader's own: their answers did not change (the ASCII
# shortcut of the latter returns what the trial encode would), so the reference uses them as they are.


def _ref_sanitize(value: Any) -> Any:
    if isinstance(value, str) and _has_surrogates(value):
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def _ref_rows_to_table(rows, text_column, stringified=None):
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    arrays, fields = [], []
    for name in names:
        values = [_ref_sanitize(r.get(name)) for r in rows]
        if name == text_column:
            arr = pa.array(values, type=pa.large_string())
        elif name in (columns.ID, columns.SOURCE, DROP):
            arr = pa.array(values, type=pa.string())
        else:
            try:
                arr = pa.array(values)
                if pa.types.is_null(arr.type):
                    arr = arr.cast(pa.string())
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                arr = pa.array([_ref_sanitize(json_string(v)) for v in values], type=pa.string())
                if stringified is not None:
                    stringified.add(name)
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


class _RefRowBuffer(_RowBuffer):
    """The row buffer as it was: what changed is overridden (renaming by copy, the text checked in full on
    every row, the table built by the reference); ``add`` did not change and is the reader's own."""

    def __init__(self, source, id_prefix, text_column, cfg, reserved, stringified=None):
        super().__init__(source, id_prefix, text_column, cfg, reserved, stringified)
        self.args = (text_column, reserved, cfg.id_column)
        self.rename = self.rename_by_copy  # the reader sets its renamer on the instance

    def rename_by_copy(self, record):
        mapping = rename_columns(tuple(record), *self.args)
        return {mapping.get(k, k): v for k, v in record.items()} if mapping else dict(record)

    def text_of(self, value):
        limit = self.cfg.max_doc_chars
        if limit is not None and isinstance(value, (str, bytes)) and len(value) > limit:
            return None, "oversized"
        return classify_text(value)

    def flush(self):
        rows, self.rows = self.rows, []
        return _ref_rows_to_table(rows, self.text_column, self.stringified)


# ---------------------------------------------------------------------------------------------- helpers


def _read(task, text_column, cfg, reserved):
    """(tables, account) of one task, or the type of the error it raised."""
    account = ReadAccount(task.source)
    try:
        tables = list(read_task(task, text_column, cfg, reserved, account))
    except Exception as error:  # the reference raises in a few cases: the fast path must raise the same
        return type(error)
    return tables, (account.records, account.corrupt, sorted(account.stringified))


def _assert_same_as_reference(monkeypatch, inputs, text_column="text", cfg=ReaderConfig(),
                              reserved=frozenset()):
    plan = plan_reads([str(i) for i in inputs], text_column, cfg, reserved)
    assert plan.tasks
    for task in plan.tasks:
        got = _read(task, text_column, cfg, reserved)
        with monkeypatch.context() as m:
            m.setattr(cio, "_RowBuffer", _RefRowBuffer)
            want = _read(task, text_column, cfg, reserved)
        if isinstance(want, type):
            assert got is want, task
            continue
        assert not isinstance(got, type), (task, got)
        (got_tables, got_account), (want_tables, want_account) = got, want
        assert got_account == want_account, task
        assert len(got_tables) == len(want_tables), task
        for g, w in zip(got_tables, want_tables):
            assert g.schema.equals(w.schema, check_metadata=True), (task, g.schema, w.schema)
            assert g.equals(w), task
            assert g.to_pylist() == w.to_pylist(), task


def _messy_records() -> list[str]:
    """JSON lines that take every branch: surrogates in the text and in side columns, mixed types, nulls,
    own ids and sources of all kinds, reserved names, blank and non-ASCII texts."""
    recs: list[Any] = [
        {"text": "plain ascii", "meta": 1, "id": 7, "source": "own/a"},
        {"text": "caf\u00e9 na\u00efve \u4e2d\u6587", "meta": "x", "id": "s1", "source": 3},
        {"text": "lone " + SURR + " surrogate", "meta": None, "id": True},
        {"text": "\u3000\u00a0 ", "meta": [1, 2], "id": {"b": 1, "a": SURR}},
        {"text": "   ", "side": SURR, "id": None, "source": None},
        {"text": None, "side": "ok \u00e9", "_cur_x": 1, "lang": "en"},
        {"text": 42, "side": None, "source": SURR},
        {"text": ["a"], "id": 1.5},
        {"text": "\ud83d\ude00 emoji and \u00e9", "id": SURR, "nested": {"k": "v"}},
        {"other": 1},
        {"text": "x" * 50 + "\u00e9", "id": 2**70},
        {"text": SURR},
        {"text": "\u00e9" + SURR, "side": 2},
    ]
    lines = [json.dumps(r) for r in recs]
    return [*lines, "{not json", "[1, 2]", "", "null"]


def _write_lines(path, lines: list[str], raw_tail: bytes = b"", bom: bool = False) -> None:
    data = (b"\xef\xbb\xbf" if bom else b"") + "".join(line + "\n" for line in lines).encode() + raw_tail
    path.write_bytes(data)


# ----------------------------------------------------------------------------------------------- tests


def test_hand_built_table_for_surrogates_mixed_types_and_nulls(tmp_path):
    lines = [
        json.dumps({"text": "caf\u00e9", "meta": 1, "side": SURR}),
        json.dumps({"text": "bad " + SURR, "meta": "x", "side": None}),
        json.dumps({"text": "\u3000 ", "meta": None, "side": "\u00e9"}),
        json.dumps({"text": "ok", "id": 5, "source": 9}),
    ]
    path = tmp_path / "a.jsonl"
    _write_lines(path, lines, raw_tail=b'{"text": "raw \xff byte", "side": "raw \x80"}\n')
    account = ReadAccount("a.jsonl")
    (table,) = read_task(ReadTask(str(path), "jsonl", 0, -1, 0, "a.jsonl"), "text", ReaderConfig(), account=account)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line.encode()) + 1)
    ids = [f"a.jsonl:{o:012d}" for o in offsets]
    expected = pa.Table.from_arrays(
        [pa.array(["caf\u00e9", None, None, "ok", None], type=pa.large_string()),
         pa.array(["1", "x", None, None, None], type=pa.string()),
         pa.array(["a?b", None, "\u00e9", None, "raw ?"], type=pa.string()),
         pa.array([ids[0], ids[1], ids[2], "5", ids[4]], type=pa.string()),
         pa.array(["a.jsonl", "a.jsonl", "a.jsonl", "9", "a.jsonl"], type=pa.string()),
         pa.array([None, "invalid_utf8", "empty_text", None, "invalid_utf8"], type=pa.string())],
        names=["text", "meta", "side", "id", "source", DROP],
    )
    assert table.schema.equals(expected.schema), table.schema
    assert table.to_pylist() == expected.to_pylist()
    assert table.equals(expected)
    assert account.records == 5 and account.stringified == {"meta"}


@pytest.mark.parametrize("batch_rows", [1, 3, 8192])
def test_messy_jsonl_is_read_as_before(tmp_path, monkeypatch, batch_rows):
    _write_lines(tmp_path / "a.jsonl", _messy_records(), raw_tail=b'{"text": "raw \xff\xfe", "side": "\x80"}\n'
                 b'{"text": "fine", "side": "raw \xc3"}\n', bom=True)
    cfg = ReaderConfig(batch_rows=batch_rows, max_doc_chars=40)
    _assert_same_as_reference(monkeypatch, [tmp_path / "a.jsonl"], cfg=cfg, reserved=frozenset({"lang"}))
    _assert_same_as_reference(monkeypatch, [tmp_path / "a.jsonl"], cfg=ReaderConfig(batch_rows=batch_rows))


def test_id_column_that_is_the_text_column_still_gives_invalid_rows_offset_ids(tmp_path, monkeypatch):
    _write_lines(tmp_path / "a.jsonl", [json.dumps({"text": t}) for t in ("ok", SURR, "\u00e9" + SURR, "\u00e9")])
    cfg = ReaderConfig(id_column="text", batch_rows=2)
    _assert_same_as_reference(monkeypatch, [tmp_path / "a.jsonl"], cfg=cfg)
    rows = [r for t in read_task(plan_reads([str(tmp_path / "a.jsonl")], "text", cfg).tasks[0], "text", cfg)
            for r in t.to_pylist()]
    assert [r[DROP] for r in rows] == [None, "invalid_utf8", "invalid_utf8", None]
    assert [r["id"] for r in rows] == ["ok", "a.jsonl:000000000015", "a.jsonl:000000000036", "\u00e9"]


def test_a_nested_surrogate_becomes_a_replacement_character_not_a_crash(tmp_path):
    """Arrow cannot encode a surrogate inside a struct or a list: the reader replaces it (keys too), as it does
    in top-level side columns, instead of stopping the run."""
    _write_lines(tmp_path / "a.jsonl", [json.dumps({"text": "x", "nested": {"k": SURR, SURR: [SURR, "ok"]}}),
                                        json.dumps({"text": "y", "nested": {"k": "fine"}})])
    rows = [r for t in read_task(plan_reads([str(tmp_path / "a.jsonl")], "text").tasks[0], "text")
            for r in t.to_pylist()]
    assert [r["text"] for r in rows] == ["x", "y"]
    fixed = SURR.encode("utf-8", "replace").decode("utf-8")
    assert "?" in fixed and rows[0]["nested"]["k"] == fixed and rows[1]["nested"]["k"] == "fine"
    assert rows[0]["nested"][fixed] == [fixed, "ok"]


def test_every_format_with_messy_content_is_read_as_before(tmp_path, monkeypatch):
    lines = _messy_records()
    (tmp_path / "b.json").write_text("[" + ", ".join(x for x in lines[:13]) + ", 3]")
    with gzip.open(tmp_path / "c.jsonl.gz", "wb") as fh:
        fh.write("".join(x + "\n" for x in lines).encode())
    (tmp_path / "d.csv").write_bytes(b"\xef\xbb\xbftext,id,source,meta,lang\n"
                                     b"hello,1,s,3,en\n\xff bad,2,,x,\ncaf\xc3\xa9,3,,\x80,de\n  ,4,,,\n"
                                     b'"unclosed,5,,,\n')
    pq.write_table(pa.table({
        "text": pa.array([b"bytes text", b"\xff\xfe", None, "\u00e9".encode(), b"  "], type=pa.binary()),
        "blob": pa.array([b"\x00\x01", None, b"x", b"", b"\xff"], type=pa.binary()),
        "big": pa.array([1, 2**62, None, -1, 0], type=pa.int64()),
        "id": pa.array(["p1", None, "p3", "p4", "p5"]),
    }), tmp_path / "e.parquet", row_group_size=2)
    (tmp_path / "f.txt").write_bytes(b"one doc \xff with a bad byte\n")
    (tmp_path / "g.txt").write_bytes("caf\u00e9 fine".encode())
    (tmp_path / "h.jsonl").write_bytes(b"")  # empty: no task
    payload = gzip.compress("".join(json.dumps({"text": f"t{i}", "m": i}) + "\n" for i in range(4000)).encode())
    (tmp_path / "i.jsonl.gz").write_bytes(payload[: len(payload) // 2])  # truncated: corrupt_file
    for cfg in (ReaderConfig(batch_rows=2), ReaderConfig(max_doc_chars=5)):
        _assert_same_as_reference(monkeypatch, [tmp_path], cfg=cfg, reserved=frozenset({"lang"}))
    line_cfg = ReaderConfig(text_mode="line", batch_rows=1)
    _assert_same_as_reference(monkeypatch, [tmp_path / "f.txt", tmp_path / "g.txt"], cfg=line_cfg)


def test_rows_to_table_matches_the_reference_on_hard_columns():
    rows = [
        {"text": "a", "m": 1, "s": SURR, "n": None, "b": b"x", "big": 2**70, "f": 1.5, "mix": {"a": 1}},
        {"text": None, "m": "x", "s": "ok", "n": None, "b": None, "big": 1, "f": 2, "mix": [1]},
        {"text": "\u00e9", "m": None, "s": None, "b": b"y", "f": None, "mix": SURR, "late": SURR},
        {"text": SURR, "id": SURR, "source": SURR, DROP: None},
    ]
    for subset in (rows, rows[:1], rows[1:2], rows[2:], rows[3:]):
        got_s, want_s = set(), set()
        got = cio.rows_to_table([dict(r) for r in subset], "text", got_s)
        want = _ref_rows_to_table([dict(r) for r in subset], "text", want_s)
        assert got.schema.equals(want.schema) and got.equals(want) and got_s == want_s


def test_the_real_corpus_sample_reads_as_before(monkeypatch):
    from pathlib import Path

    corpus = Path(__file__).resolve().parents[2] / "data" / "bench" / "corpus"
    parts = sorted(corpus.glob("part-*.jsonl"))[:1]
    if not parts:
        pytest.skip("no benchmark corpus here (python benchmarks/corpus.py builds it)")
    _assert_same_as_reference(monkeypatch, parts, cfg=ReaderConfig(batch_rows=4096))
