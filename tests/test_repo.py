"""The repository keeps its promises: CI runs the README's command, configs parse, docs name every key."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from curation.config import RunConfig, build_config

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_ci_runs_exactly_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    command = [line for line in ci.splitlines() if "pytest" in line and not line.startswith("#")]
    assert len(command) == 1
    assert f"\n{command[0]}\n" in README


def test_torch_stays_a_range_and_cpu_installs_pin_it():
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'"torch>=[\d.]+,<\d+"', pyproject)
    assert "torch==2.13.0" in (REPO / "constraints-cpu.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_starts_with_its_command_and_parses(path):
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert re.match(r"# .*python -m \w+|# .*(torchrun|sbatch|ray|dvc) ", first), f"{path}: first line must give the command"
    assert isinstance(yaml.safe_load(text), dict)


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "curation").glob("*.yaml")), ids=lambda p: p.name)
def test_curation_configs_build(path):
    cfg = build_config(path, {"input": ["data/sample"], "output": "out/x"})
    assert cfg.steps


def _keys(cls, prefix=""):
    for f in dataclasses.fields(cls):
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            yield from _keys(sub, f"{f.name}.")
        else:
            yield prefix + f.name


def test_readme_documents_every_curation_config_key():
    missing = [k for k in _keys(RunConfig) if f"`{k}`" not in README]
    assert not missing, f"README's configuration table lacks {missing}"


def test_ci_also_runs_the_readme_first_command():
    first = next(line for line in README.splitlines() if line.startswith("python3 -m venv .venv && "))
    after_venv = first.split(". .venv/bin/activate && ", 1)[1]
    assert after_venv in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
