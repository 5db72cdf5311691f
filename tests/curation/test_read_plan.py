"""Planning reads: the input root, stable sources and ids, skipped and empty files, renamed columns (no Ray)."""

import gzip
import json
import logging
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import columns, layout
from curation.config import RunConfig
from curation.io import ReaderConfig, plan_reads, rename_columns
from curation.paths import CURATION_MANIFEST, InputError, list_inputs
from tests.curation.readers import read_all


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ------------------------------------------------------------------------------------- root and sources


def test_same_data_same_rows_from_any_working_directory(tmp_path, monkeypatch):
    raw = tmp_path / "project" / "data" / "raw"
    _jsonl(raw / "a.jsonl", [{"text": "one"}, {"text": "two"}])
    (raw / "sub").mkdir()
    (raw / "sub" / "b.csv").write_text("text,n\nthree,3\n")
    monkeypatch.chdir(tmp_path / "project")
    from_project = read_all(["data/raw"])
    plan = plan_reads(["data/raw"], "text")
    (tmp_path / "project" / "data" / "notes").mkdir()
    monkeypatch.chdir(tmp_path / "project" / "data" / "notes")
    from_data = read_all(["../raw"])
    assert from_project == from_data
    assert [r["id"] for r in from_project] == ["a.jsonl:000000000000", "a.jsonl:000000000016", "sub/b.csv:000000000001"]
    assert [r["source"] for r in from_project] == ["a.jsonl", "a.jsonl", "sub/b.csv"]
    assert plan.root == str(raw.resolve()) and plan_reads(["../raw"], "text").root == plan.root
    assert [t.path for t in plan.tasks] == [str(raw.resolve() / "a.jsonl"), str(raw.resolve() / "sub" / "b.csv")]


def test_input_root_is_the_common_folder_of_the_inputs(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _jsonl(data / "raw" / "a.jsonl", [{"text": "a"}])
    _jsonl(data / "other" / "x.jsonl", [{"text": "x"}])
    _jsonl(data / "raw2" / "y.jsonl", [{"text": "y"}])
    monkeypatch.chdir(tmp_path)
    plan = plan_reads(["data/raw/a.jsonl", "data/other"], "text")
    assert plan.root == str(data.resolve())
    assert [t.source for t in plan.tasks] == ["other/x.jsonl", "raw/a.jsonl"]
    assert [t.source for t in plan_reads(["data/raw/a.jsonl"], "text").tasks] == ["a.jsonl"]
    assert [t.source for t in plan_reads(["data/raw/*.jsonl"], "text").tasks] == ["a.jsonl"]
    glob_plan = plan_reads(["data/ra*/*.jsonl"], "text")  # the root of a glob: its part before the wildcard
    assert glob_plan.root == str(data.resolve())
    assert [t.source for t in glob_plan.tasks] == ["raw/a.jsonl", "raw2/y.jsonl"]
    assert list_inputs([str(data / "raw"), "data/raw/a.jsonl"]).files == [data.resolve() / "raw" / "a.jsonl"]


def test_hf_source_and_own_columns(tmp_path):
    src = tmp_path / "hfdata"
    src.mkdir()
    (src / "train.jsonl").write_text('{"text": "from hf", "lang": "xx"}\n')
    plan = plan_reads([f"hf://{src}"], "text", reserved=RunConfig(steps=("language",)).reserved_columns)
    assert plan.tasks[0].source == f"hf://{src}" and plan.root == ""
    assert plan.renamed == {"lang": "input_lang"}
    rows = read_all([f"hf://{src}"], reserved=RunConfig(steps=("language",)).reserved_columns)
    assert rows[0]["source"] == f"hf://{src}" and rows[0]["input_lang"] == "xx" and "lang" not in rows[0]


def test_own_source_column_is_kept_as_strings(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"text": "a", "source": 3}, {"text": "b", "source": None},
                                  {"text": "c", "source": "web"}, {"text": "d"}])
    pq.write_table(pa.table({"text": ["p", "q"], "source": [1, 2]}), tmp_path / "b.parquet")
    rows = read_all([str(tmp_path)])
    assert [r["source"] for r in rows] == ["3", None, "web", "a.jsonl", "1", "2"]


# ---------------------------------------------------------------------------------- skipped, empty files


def test_files_no_reader_knows_are_listed_and_logged(tmp_path, caplog):
    _jsonl(tmp_path / "a.jsonl", [{"text": "a"}])
    for name in ("b.html", "c.xml", "d.jsonl.bz2", "sub/e.html", "_SUCCESS", ".hidden.html", "_tmp/x.html"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("<p>x</p>")
    with caplog.at_level(logging.INFO, logger="curation"):
        plan = plan_reads([str(tmp_path)], "text")
    hidden = "hidden or _-prefixed name"
    assert plan.skipped == [
        {"path": ".hidden.html", "reason": hidden},
        {"path": "_SUCCESS", "reason": hidden},
        {"path": "_tmp", "reason": hidden},  # a folder: listed once, not each file in it
        {"path": "b.html", "reason": "unknown file type .html"},
        {"path": "c.xml", "reason": "unknown file type .xml"},
        {"path": "d.jsonl.bz2", "reason": "unknown file type .jsonl.bz2"},
        {"path": "sub/e.html", "reason": "unknown file type .html"},
    ]
    assert ("skipping 4 files no reader knows: 2 .html, 1 .jsonl.bz2, 1 .xml; 3 hidden or _-prefixed names "
            "(listed in report.json)") in caplog.text
    assert [t.source for t in plan.tasks] == ["a.jsonl"]
    by_glob = plan_reads([str(tmp_path / "*")], "text")  # a glob lists what it matched and cannot read
    assert {s["path"] for s in by_glob.skipped} == {"b.html", "c.xml", "d.jsonl.bz2", "sub/e.html", "_SUCCESS", "_tmp"}
    with pytest.raises(InputError, match=r"b\.html: unknown file type \.html; readable endings are .*\.jsonl"):
        plan_reads([str(tmp_path / "b.html")], "text")  # named explicitly: an error, as before
    with pytest.raises(InputError, match=r"matched no file a reader knows, only: b\.html, c\.xml"):
        plan_reads([str(tmp_path / "[bc].*")], "text")


def test_a_curation_output_inside_an_input_folder_is_skipped_whole(tmp_path):
    raw = tmp_path / "raw"
    _jsonl(raw / "a.jsonl", [{"text": "a"}])
    prev = raw / "prev_run"  # a previous run's output, written into the input folder
    (prev / "data").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["x"], "text": ["old"]}), prev / "data" / "part-00000.parquet")
    (prev / "report.json").write_text('{"rows_in": 1}')
    (prev / ".curation").mkdir()
    (prev / ".curation" / "manifest.json").write_text("{}")
    (raw / ".curation").mkdir()  # no manifest: just a hidden folder
    (raw / ".curation" / "x.jsonl").write_text('{"text": "hidden"}\n')
    assert layout.MANIFEST == CURATION_MANIFEST
    output = {"path": "prev_run", "reason": "a curation output (holds .curation/manifest.json); not read as input"}
    hidden = {"path": ".curation", "reason": "hidden or _-prefixed name"}
    for inputs in ([str(raw)], [str(raw / "*")], [str(raw / "**" / "*")], [str(raw / "**" / "*.jsonl")]):
        plan = plan_reads(inputs, "text")
        assert [t.source for t in plan.tasks] == ["a.jsonl"], inputs
        assert output in plan.skipped and all(s["path"] != "prev_run/report.json" for s in plan.skipped), inputs
    assert plan_reads([str(raw)], "text").skipped == [hidden, output]
    with pytest.raises(InputError, match=r"prev_run' is the output of a curation run.*pass '.*prev_run/data'"):
        plan_reads([str(prev)], "text")
    assert [t.source for t in plan_reads([str(prev / "data")], "text").tasks] == ["part-00000.parquet"]


@pytest.mark.parametrize("as_glob", [False, True])
def test_symlinks_are_followed_each_real_file_read_once_and_loops_end(tmp_path, as_glob):
    raw = tmp_path / "raw"
    _jsonl(raw / "loopin" / "a.jsonl", [{"text": "a"}])
    (raw / "loopin" / "loop").symlink_to(".")  # a loop: loopin/loop/loop/... is loopin
    _jsonl(tmp_path / "elsewhere" / "b.jsonl", [{"text": "b"}])
    (raw / "linked").symlink_to(tmp_path / "elsewhere")  # a folder outside the input, linked in
    (raw / "zz.jsonl").symlink_to(raw / "loopin" / "a.jsonl")  # a second name for a file
    (raw / "gone.jsonl").symlink_to(tmp_path / "nothing")
    inputs = [str(raw / "**" / "*.jsonl")] if as_glob else [str(raw)]
    plan = plan_reads(inputs, "text")
    assert plan.root == str(raw.resolve())
    assert [t.source for t in plan.tasks] == ["linked/b.jsonl", "loopin/a.jsonl"]
    assert plan.skipped == [
        {"path": "gone.jsonl", "reason": "broken symlink"},
        {"path": "loopin/loop", "reason": "same folder as loopin"},
        {"path": "zz.jsonl", "reason": "same file as loopin/a.jsonl"},
    ]
    assert [r["text"] for r in read_all(inputs)] == ["b", "a"]


def test_empty_files_are_listed_not_fatal(tmp_path):
    _jsonl(tmp_path / "good.jsonl", [{"text": "kept"}])
    (tmp_path / "zero.jsonl").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_text("\n  \n\n")
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf\n")
    (tmp_path / "header.csv").write_text("id,body\n\n")  # no text column, but no records either
    (tmp_path / "zero.txt").write_bytes(b"")
    (tmp_path / "array.json").write_text(" [ ]\n")
    (tmp_path / "zero_bytes.jsonl.gz").write_bytes(b"")
    with gzip.open(tmp_path / "empty.csv.gz", "wb") as fh:
        fh.write(b"")
    pq.write_table(pa.table({"body": pa.array([], pa.string())}), tmp_path / "none.parquet")
    plan = plan_reads([str(tmp_path)], "text")
    assert sorted(plan.empty) == ["array.json", "blank.jsonl", "bom.jsonl", "empty.csv.gz", "header.csv",
                                  "none.parquet", "zero.jsonl", "zero.txt", "zero_bytes.jsonl.gz"]
    assert [t.source for t in plan.tasks] == ["good.jsonl"]
    assert [r["text"] for r in read_all([str(tmp_path)])] == ["kept"]
    (tmp_path / "good.jsonl").unlink()
    only_empty = plan_reads([str(tmp_path)], "text")  # a folder of empty files reads as 0 rows
    assert only_empty.tasks == [] and len(only_empty.empty) == 9
    assert read_all([str(tmp_path)]) == []


@pytest.mark.parametrize(("name", "encoding", "codec"), [
    ("a.csv", "UTF-16", "utf-16"), ("a.tsv", "UTF-16", "utf-16-be"), ("a.jsonl", "UTF-16", "utf-16-le"),
    ("a.json", "UTF-32", "utf-32"), ("a.txt", "UTF-32", "utf-32-be"), ("a.jsonl.gz", "UTF-16", "utf-16")])
def test_utf16_and_utf32_files_are_refused_at_planning_naming_the_encoding(tmp_path, name, encoding, codec):
    path = tmp_path / name
    text = "text\nhello\n" if name.endswith((".csv", ".tsv")) else '{"text": "hello"}\n'
    content = (text if codec in ("utf-16", "utf-32") else "\ufeff" + text).encode(codec)  # a byte order mark first
    assert content.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff"))
    path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    _jsonl(tmp_path / "ok.jsonl", [{"text": "fine"}])
    with pytest.raises(InputError, match=re.escape(f"{path}: is {encoding} (it starts with a {encoding} byte-order "
                                                   f"mark); convert it to UTF-8, e.g. `") + ".*iconv -f " + encoding):
        plan_reads([str(tmp_path)], "text")


# --------------------------------------------------------------------------------------- column names


def test_user_columns_named_like_internal_ones_are_renamed_never_dropped(tmp_path, caplog):
    record = {"text": "hello", "_cur_x": 1, "_stats": 2, "drop_reason": "mine", "lang": "en",
              "input_lang": "taken", "lang_score": 0.5}
    _jsonl(tmp_path / "a.jsonl", [record])
    reserved = RunConfig(steps=("language",)).reserved_columns
    with caplog.at_level(logging.WARNING, logger="curation"):
        plan = plan_reads([str(tmp_path)], "text", reserved=reserved)
    assert plan.renamed == {"_cur_x": "input__cur_x", "lang": "input_lang_2", "lang_score": "input_lang_score"}
    assert "lang -> input_lang_2" in caplog.text
    row = read_all([str(tmp_path)], reserved=reserved)[0]
    assert {k: row[k] for k in ("input__cur_x", "_stats", "drop_reason", "input_lang_2", "input_lang",
                                "input_lang_score")} == {"input__cur_x": 1, "_stats": 2, "drop_reason": "mine",
                                                         "input_lang_2": "en", "input_lang": "taken",
                                                         "input_lang_score": 0.5}
    assert row[columns.DROP_REASON] is None and "lang" not in row and "_cur_x" not in row
    plain = read_all([str(tmp_path)])[0]  # no language step: lang is the user's and stays
    assert plain["lang"] == "en" and plain["input__cur_x"] == 1


def test_renames_in_csv_headers_parquet_schemas_and_other_id_columns(tmp_path):
    (tmp_path / "a.csv").write_text("text,lang,_cur_drop_reason\nhi,de,x\n")
    pq.write_table(pa.table({"text": ["p"], "pii_counts": [3]}), tmp_path / "b.parquet")
    reserved = RunConfig(steps=("language", "pii")).reserved_columns
    plan = plan_reads([str(tmp_path)], "text", reserved=reserved)
    assert plan.renamed == {"lang": "input_lang", "_cur_drop_reason": "input__cur_drop_reason",
                            "pii_counts": "input_pii_counts"}
    rows = read_all([str(tmp_path)], reserved=reserved)
    assert rows[0]["input_lang"] == "de" and rows[0]["input__cur_drop_reason"] == "x"
    assert rows[0][columns.DROP_REASON] is None and rows[1]["input_pii_counts"] == 3
    _jsonl(tmp_path / "c" / "c.jsonl", [{"text": "t", "doc_id": 5, "id": "theirs"}])
    cfg = ReaderConfig(id_column="doc_id")
    row = read_all([str(tmp_path / "c")], cfg=cfg)[0]
    assert row["id"] == "5" and row["input_id"] == "theirs" and row["doc_id"] == 5
    assert rename_columns(["b", "a", "input_a"], "text", frozenset({"a", "b"})) == {"a": "input_a_2", "b": "input_b"}


def test_text_column_with_a_pipeline_name_is_an_input_error(tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"lang": "x"}])
    with pytest.raises(InputError, match=r"cannot be called 'lang'.*--text-column"):
        plan_reads([str(tmp_path)], "lang", reserved=RunConfig(steps=("language",)).reserved_columns)
    with pytest.raises(InputError, match="cannot be called '_cur_text'"):
        plan_reads([str(tmp_path)], "_cur_text")
