"""The output folder's rules, without Ray: what is refused, what is removed, what a consumer accepts."""

import json

import pytest

from curation import layout
from curation.layout import IncompleteOutputError, Manifest, OutputError, prepare_output

PLAN = {"version": 1, "settings": {"text_column": "text"}, "tasks": [{"path": "a.jsonl"}]}
FILES = ["data/part-00000.parquet", "data/part-00001.parquet"]


def _prepare(out, inputs=("in",), overwrite=False, resume=False, plan=PLAN, files=FILES):
    return prepare_output(out, inputs=list(inputs), overwrite=overwrite, resume=resume, planned_files=files,
                          plan=plan)


def _finish_fake_run(out):
    """What a finished run leaves: its shards, reports and marker."""
    for f in FILES:
        (out / f).write_text("shard")
    for f in layout.REPORT_FILES:
        (out / f).write_text("report")
    layout.write_marker(out, {"rows_out": 2})


def test_fresh_output_records_what_it_created(tmp_path):
    out = tmp_path / "new" / "out"
    state = _prepare(out)
    m = Manifest.load(out)
    assert {".", "data", "dropped", ".curation"} <= set(m.created_dirs)
    assert set(FILES) | {layout.MARKER, "report.json"} <= set(m.files)
    assert not state.resume and (out / "data").is_dir()
    assert json.loads((out / layout.RUN_FILE).read_text()) == PLAN


def test_output_inside_input_and_input_inside_output_are_refused(tmp_path):
    proj = tmp_path / "proj"
    (proj / "data" / "raw").mkdir(parents=True)
    with pytest.raises(OutputError, match="lies inside the input"):
        _prepare(proj / "data" / "raw" / "out", inputs=[str(proj / "data" / "raw")])
    with pytest.raises(OutputError, match=r"input .* lies inside --output"):
        _prepare(proj, inputs=[str(proj / "data" / "raw")])
    with pytest.raises(OutputError, match="lies inside the input"):  # a glob's folder counts as the input
        _prepare(proj / "data" / "raw" / "x", inputs=[str(proj / "data" / "raw" / "*.jsonl")])
    with pytest.raises(OutputError, match="lies inside --output"):  # a single file inside the output too
        _prepare(proj, inputs=[str(proj / "data" / "raw" / "a.jsonl")])
    assert not (proj / ".curation").exists() and not (proj / "data" / "raw" / "out").exists()
    _prepare(tmp_path / "elsewhere", inputs=[str(proj / "data" / "raw"), "hf://wikimedia/wikipedia"])


def test_relative_paths_are_compared_resolved(tmp_path, monkeypatch):
    (tmp_path / "proj" / "data" / "raw").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "proj")
    with pytest.raises(OutputError, match="lies inside --output"):
        _prepare(".", inputs=["data/raw"])
    with pytest.raises(OutputError, match="lies inside --output"):
        _prepare("../proj", inputs=["./data/raw/"])


def test_foreign_folder_is_never_touched_even_with_overwrite(tmp_path):
    out = tmp_path / "proj"
    (out / "data" / "keep").mkdir(parents=True)
    (out / "data" / "keep" / "important.txt").write_text("mine")
    (out / "dropped").mkdir()
    (out / "dropped" / "mine.csv").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match=r"already holds data, dropped not written by this tool"):
            _prepare(out, overwrite=overwrite)
    assert (out / "data" / "keep" / "important.txt").read_text() == "mine"
    assert (out / "dropped" / "mine.csv").read_text() == "mine"
    assert not (out / ".curation").exists()


def test_unrelated_files_in_output_coexist(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "NOTES.md").write_text("my notes")
    _prepare(out)
    assert (out / "NOTES.md").read_text() == "my notes"
    assert "." not in Manifest.load(out).created_dirs  # the folder was the user's


def test_finished_run_needs_overwrite_and_overwrite_removes_only_own_files(tmp_path):
    out = tmp_path / "o"
    _prepare(out)
    _finish_fake_run(out)
    (out / "data" / "keep").mkdir()
    (out / "data" / "keep" / "important.txt").write_text("mine")
    (out / "data" / "user.parquet").write_text("mine")
    (out / "data" / ".part-00000.parquet.0123456789abcdef0123456789abcdef.tmp").write_text("killed writer")
    with pytest.raises(OutputError, match="finished curation run; pass --overwrite"):
        _prepare(out)
    _prepare(out, overwrite=True)
    assert not (out / layout.MARKER).exists() and not (out / "report.json").exists()
    assert not any((out / "data").glob("part-*")) and not any((out / "data").glob(".*.tmp"))
    assert (out / "data" / "keep" / "important.txt").read_text() == "mine"
    assert (out / "data" / "user.parquet").read_text() == "mine"


def test_overwrite_removes_folders_it_created_only_when_empty(tmp_path):
    out = tmp_path / "o"
    _prepare(out, files=[*FILES, "dropped/part-00000.parquet"])
    _finish_fake_run(out)
    (out / "dropped").mkdir()
    (out / "dropped" / "part-00000.parquet").write_text("x")
    layout.remove_own_files(out, Manifest.load(out))
    assert not (out / "data").exists() and not (out / "dropped").exists()
    assert out.is_dir()  # the output folder itself is never removed


def test_unfinished_run_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "o"
    _prepare(out)
    (out / FILES[0]).write_text("partial")
    with pytest.raises(OutputError, match=r"unfinished curation run .*--resume.*--overwrite"):
        _prepare(out)
    state = _prepare(out, resume=True)
    assert state.resume and (out / FILES[0]).read_text() == "partial"  # resume keeps finished work


def test_resume_refuses_a_different_plan_naming_what_changed(tmp_path):
    out = tmp_path / "o"
    _prepare(out)
    changed = {**PLAN, "settings": {"text_column": "body"}}
    with pytest.raises(OutputError, match=r"changed: settings\.text_column"):
        _prepare(out, resume=True, plan=changed)
    fresh = _prepare(tmp_path / "empty", resume=True)  # nothing to resume yet: a scheduler's first attempt
    assert not fresh.resume and (tmp_path / "empty" / layout.MANIFEST).is_file()
    with pytest.raises(OutputError, match="exclude each other"):
        _prepare(out, resume=True, overwrite=True)


def test_resume_of_a_finished_run_does_nothing(tmp_path):
    out = tmp_path / "o"
    _prepare(out)
    _finish_fake_run(out)
    state = _prepare(out, resume=True)
    assert state.already_complete and (out / layout.MARKER).exists()


def test_unwritable_output_fails_before_anything_runs(tmp_path):
    # /proc refuses new folders even to root (CI runs as root, so a chmod-ed folder would not do)
    with pytest.raises(OutputError, match="cannot write to --output '/proc/curation-test-out'"):
        _prepare("/proc/curation-test-out")


def test_output_under_a_file_is_refused_as_unwritable(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot write to --output"):
        _prepare(tmp_path / "file" / "out")
    with pytest.raises(OutputError, match="is a file"):
        _prepare(tmp_path / "file")


def test_consumers_refuse_an_unfinished_output_and_read_only_its_data(tmp_path):
    out = tmp_path / "o"
    _prepare(out)
    (out / FILES[0]).write_text("x")
    for p in (out, out / "data", out / FILES[0]):
        with pytest.raises(IncompleteOutputError, match=r"not finished .*--resume"):
            layout.require_complete(p)
    _finish_fake_run(out)
    for p in (out, out / "data", out / FILES[0]):
        layout.require_complete(p)
    assert layout.curated_data_dir(out) == out / "data"
    assert layout.curated_data_dir(out / "data") == out / "data"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert layout.curated_data_dir(plain) == plain  # not a curation output: taken as it is
    assert layout.curation_root(plain) is None


def test_finish_removes_temporaries_of_killed_writers_and_the_work_folder(tmp_path):
    out = tmp_path / "o"
    _prepare(out)
    (out / layout.WORK_DIR / "tasks").mkdir(parents=True)
    (out / layout.WORK_DIR / "tasks" / "task-000000.json").write_text("{}")
    tmp = out / "data" / ".part-00001.parquet.0123456789abcdef0123456789abcdef.tmp"
    tmp.write_text("half")
    (out / "data" / ".hidden-user-file").write_text("mine")  # not our pattern: stays
    layout.finish(out)
    assert not tmp.exists() and not (out / layout.WORK_DIR).exists()
    assert (out / "data" / ".hidden-user-file").read_text() == "mine"


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path):
    out = tmp_path / "o"
    first = _prepare(out)
    with pytest.raises(OutputError, match=r"being written by another curation run \(pid \d+"):
        _prepare(out, overwrite=True)
    with pytest.raises(OutputError, match="being written by another curation run"):
        _prepare(out, resume=True)
    assert Manifest.load(out).files  # the running run's bookkeeping is untouched
    first.release()  # as when the first run ends, however it ends
    _prepare(out, resume=True).release()


def test_resume_of_a_finished_run_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "o"
    before = {**PLAN, "inputs": {"logs/a.jsonl": {"bytes": 2}, "logs/b.jsonl": {"bytes": 5}}}
    _prepare(out, plan=before).release()
    _finish_fake_run(out)
    with pytest.raises(OutputError, match=r"changed: inputs\['logs/a\.jsonl'\]\.bytes \("):
        _prepare(out, resume=True, plan={**before, "inputs": {**before["inputs"], "logs/a.jsonl": {"bytes": 3}}})
    assert (out / layout.MARKER).is_file()


def test_consumers_refuse_the_tools_bookkeeping(tmp_path):
    out = tmp_path / "o"
    _prepare(out).release()
    _finish_fake_run(out)
    (out / layout.WORK_DIR / "tasks").mkdir(parents=True)
    for p in (out / layout.WORK_DIR / "tasks", out / layout.STATE_DIR):
        with pytest.raises(IncompleteOutputError, match="bookkeeping"):
            layout.require_complete(p)


def test_a_local_hf_folder_counts_as_an_input_for_nesting(tmp_path, monkeypatch):
    (tmp_path / "hfin").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="lies inside the input"):
        _prepare("hfin/out", inputs=["hf://./hfin"])


HELDOUT = ["heldout/part-00000.parquet", "heldout/part-00001.parquet"]


def test_heldout_shards_follow_the_manifest_rules(tmp_path):
    out = tmp_path / "o"
    _prepare(out, files=FILES + HELDOUT).release()
    assert "heldout" in Manifest.load(out).created_dirs and set(HELDOUT) <= set(Manifest.load(out).files)
    _finish_fake_run(out)
    (out / "heldout").mkdir()
    for f in HELDOUT:
        (out / f).write_text("held")
    (out / "heldout" / ".part-00001.parquet.0123456789abcdef0123456789abcdef.tmp").write_text("half")
    (out / "heldout" / "mine.txt").write_text("user")
    # --overwrite into a run that holds nothing out: the old held-out shards go, the user's file stays
    _prepare(out, overwrite=True).release()
    assert sorted(p.name for p in (out / "heldout").iterdir()) == ["mine.txt"]
    (out / "heldout" / "mine.txt").unlink()
    _prepare(out, overwrite=True, files=FILES + HELDOUT).release()
    (out / "heldout").mkdir()  # as the first held-out shard's write makes it
    for f in HELDOUT:
        (out / f).write_text("held")
    _prepare(out, overwrite=True).release()
    assert not (out / "heldout").exists()  # created by the tool, emptied: removed


def test_consumers_find_the_heldout_split_and_refuse_it_unfinished(tmp_path):
    out = tmp_path / "o"
    _prepare(out, files=FILES + HELDOUT).release()
    (out / "heldout").mkdir()
    (out / HELDOUT[0]).write_text("x")
    for p in (out / "heldout", out / HELDOUT[0]):
        with pytest.raises(IncompleteOutputError, match="not finished"):
            layout.require_complete(p)
    with pytest.raises(IncompleteOutputError, match="not finished"):
        layout.curated_heldout_dir(out)
    _finish_fake_run(out)
    assert layout.curated_heldout_dir(out) == layout.curated_heldout_dir(out / "data") == out / "heldout"
    assert layout.curated_data_dir(out) == out / "data"  # training never gets heldout/
    (out / HELDOUT[0]).unlink()
    (out / "heldout").rmdir()
    with pytest.raises(layout.InputError, match=r"held nothing out .*--split.heldout_fraction"):
        layout.curated_heldout_dir(out)
    with pytest.raises(layout.InputError, match="not a curation output"):
        layout.curated_heldout_dir(tmp_path)


def test_a_foreign_heldout_folder_is_refused(tmp_path):
    (tmp_path / "o" / "heldout").mkdir(parents=True)
    with pytest.raises(OutputError, match="already holds heldout not written by this tool"):
        _prepare(tmp_path / "o", overwrite=True)
