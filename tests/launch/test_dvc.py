"""`dvc repro` runs the demo pipeline from dvc.yaml, a second `dvc repro` does nothing, and a changed config
reruns its stage and what depends on it, not what comes before (in a throwaway git repository)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _dvc(repo: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in {*files, "dvc.yaml"}:
        src = REPO / name
        if src.is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp_path / name)
    git = ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], cwd=tmp_path, check=True)
    _dvc(tmp_path, "init", "-q")
    return tmp_path


def test_dvc_repro_runs_the_pipeline_then_only_what_changed(repo: Path):
    first = _dvc(repo, "repro")
    for stage in ("curation", "tasks", "tokenizer", "train", "evaluate", "generate"):
        assert f"Running stage '{stage}'" in first
    out = repo / "out" / "dvc"
    assert (out / "curated" / "report.json").is_file() and (out / "tokenizer" / "tokenizer.json").is_file()
    assert (out / "metrics.json").is_file() and (out / "samples.md").is_file()
    assert (repo / "dvc.lock").is_file()

    second = _dvc(repo, "repro")
    assert "Running stage" not in second
    assert "Data and pipelines are up to date" in second

    cfg = repo / "configs" / "tokenizer" / "demo.yaml"
    cfg.write_text(cfg.read_text().replace("vocab_size: 1500", "vocab_size: 1400"))
    third = _dvc(repo, "repro")
    assert "Stage 'curation' didn't change, skipping" in third
    for stage in ("tokenizer", "train", "evaluate", "generate"):
        assert f"Running stage '{stage}'" in third
