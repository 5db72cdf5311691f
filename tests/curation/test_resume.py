"""Faults for real: kill a Ray worker, kill the driver's whole process group, crash before the marker; then
``--resume`` and compare, byte for byte, with a run that was never interrupted."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from curation import layout
from curation.sample import generate
from tests.curation.test_pipeline import ray_leftovers

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
CONFIG = {
    "steps": ["normalize", "html", "urls", "whitespace", "quality", "language", "dedup", "pii"],
    "language": {"languages": ["en"]},
    "reader": {"split_bytes": 16384},  # many small read tasks: room to interrupt stage 1 in the middle
    "writer": {"num_shards": 4, "write_dropped": True},
    "num_cpus": 2,
    "progress": False,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    generate(d / "raw", docs=1500, seed=7)
    cfg = d / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "input": [str(d / "raw")]}))
    return d


@pytest.fixture(scope="module")
def reference(corpus):
    """An uninterrupted run through the CLI: what every interrupted-then-resumed run must equal."""
    out = corpus / "reference"
    r = _cli(corpus, out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert any((out / "heldout").glob("part-*"))  # resumed runs must rebuild the held-out split too
    return out


def _cli(corpus, out, *extra, timeout=300):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", "curation", "run", "--config", str(corpus / "cfg.yaml"),
                           "--output", str(out), *extra], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _start(corpus, out, *extra, stderr=subprocess.DEVNULL, env=None):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "curation", "run", "--config", str(corpus / "cfg.yaml"),
                             "--output", str(out), *extra], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=stderr, text=True, start_new_session=True)


def _digest(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("data", "heldout", "dropped") for p in sorted((out / d).glob("*"))}


def _counts(out: Path) -> dict:
    r = json.loads((out / "report.json").read_text())
    return {k: r[k] for k in ("rows_in", "rows_out", "dropped", "chars_in", "chars_out", "pii", "languages", "split")}


def _tasks_done(out: Path) -> int:
    return len(list((out / layout.WORK_DIR / "tasks").glob("task-*.json")))


def _wait_for(cond, proc, timeout=120.0):
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, "the run ended before the fault could be injected"
        assert time.time() - t0 < timeout, "timed out waiting for the run to get going"
        time.sleep(0.05)


def _assert_same_as_reference(out, reference):
    assert (out / layout.MARKER).is_file()
    assert _digest(out) == _digest(reference)
    assert _counts(out) == _counts(reference)
    assert not (out / layout.WORK_DIR).exists()  # the work folder goes once the marker is written
    assert not [p for d in ("data", "heldout", "dropped") for p in (out / d).glob(".*.tmp")]  # nor a killed writer's tmp


def test_killed_driver_process_group_then_resume(corpus, reference, tmp_path):
    out = tmp_path / "out"
    proc = _start(corpus, out)
    _wait_for(lambda: _tasks_done(out) >= 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything in its process group, at once
    proc.wait(timeout=30)
    done = _tasks_done(out)
    assert not (out / layout.MARKER).exists() and not (out / "report.json").exists()
    # an interrupted output cannot pass for a finished one: the readers of every later stage refuse it
    from modeling.corpus import resolve_text_files

    with pytest.raises(layout.IncompleteOutputError, match="not finished"):
        resolve_text_files(out)
    # without --resume the folder is not silently restarted or mixed
    r = _cli(corpus, out)
    assert r.returncode == 2 and "unfinished curation run" in r.stderr and "--resume" in r.stderr
    r = _cli(corpus, out, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["resume"]["resumed"] and report["resume"]["read_tasks_reused"] >= done >= 3
    assert report["resume"]["read_tasks_reused"] < report["resume"]["read_tasks"]
    _assert_same_as_reference(out, reference)
    resolve_text_files(out)  # now accepted


def test_killed_worker_is_retried_and_output_is_identical(corpus, reference, tmp_path):
    out = tmp_path / "out"
    proc = _start(corpus, out)
    killed = []

    def kill_a_busy_worker() -> bool:
        if _tasks_done(out) < 2:
            return False
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                title = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if title.startswith("ray::") and "ReadCleanStage" in title:
                child.kill()
                killed.append(title)
                return True
        return False

    _wait_for(kill_a_busy_worker, proc)
    assert proc.wait(timeout=300) == 0
    assert killed
    _assert_same_as_reference(out, reference)


def test_crash_before_the_marker_then_resume_redoes_only_missing_shards(corpus, reference, tmp_path, monkeypatch):
    """The driver dies after stage 2 wrote some shards: resume reuses every read task and the shards done."""
    from curation import pipeline
    from curation.config import build_config

    out = tmp_path / "out"
    cfg = build_config(corpus / "cfg.yaml", {"output": str(out)})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("driver killed before the marker")

    monkeypatch.setattr(layout, "write_marker", crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(cfg)
        monkeypatch.undo()
        shards = sorted((out / layout.WORK_DIR / "shards").glob("shard-*.json"))
        assert len(shards) == 4
        for lost in shards[1:3]:  # as if these two shards had not finished (their part files may exist)
            lost.unlink()
        (out / "data" / "part-00002.parquet").write_bytes(b"half a file")
        report = pipeline.run(build_config(corpus / "cfg.yaml", {"output": str(out), "resume": True}))
    finally:
        import ray

        ray.shutdown()
    assert report["resume"]["shards_reused"] == 2
    assert report["resume"]["read_tasks_reused"] == report["resume"]["read_tasks"]
    _assert_same_as_reference(out, reference)


def test_sigterm_and_ctrl_c_stop_with_a_word_and_resume_finishes(corpus, reference, tmp_path):
    out = tmp_path / "out"
    for sig, code, name, extra in ((signal.SIGTERM, 143, "SIGTERM", ()), (signal.SIGINT, 130, "SIGINT", ("--resume",))):
        before = _tasks_done(out) if out.exists() else 0
        ray_tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # to find this run's Ray processes afterwards
        proc = _start(corpus, out, *extra, stderr=subprocess.PIPE, env={"RAY_TMPDIR": ray_tmp})
        _wait_for(lambda b=before: out.exists() and _tasks_done(out) >= b + 2, proc)
        proc.send_signal(sig)  # to the driver alone, as `kill PID` or docker stop; Ctrl-C in a terminal
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == code, err[-3000:]
        assert f"interrupted ({name})" in err and "--resume" in err and "Traceback" not in err
        assert not (out / layout.MARKER).exists()
        deadline = time.monotonic() + 5  # the driver stopped its Ray before exiting: nothing left running
        while (left := ray_leftovers(ray_tmp)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left == []
        shutil.rmtree(ray_tmp, ignore_errors=True)
    r = _cli(corpus, out, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_same_as_reference(out, reference)


def test_resume_compares_the_input_files_not_their_spelling(corpus, monkeypatch):
    from curation.config import build_config
    from curation.io import plan_reads
    from curation.pipeline import plan_record

    def record(spelling):
        cfg = build_config(corpus / "cfg.yaml", {"input": [spelling], "output": "unused"})
        tasks = plan_reads(cfg.input, cfg.text_column, cfg.reader).tasks
        return plan_record(cfg, tasks, 4)

    monkeypatch.chdir(corpus)
    assert record("raw") == record(str(corpus / "raw")) == record("./raw/../raw/")
