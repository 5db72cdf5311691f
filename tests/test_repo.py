"""The repository keeps its promises: CI runs the README's command, configs parse, docs name every key, links resolve."""

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


def test_curation_page_documents_every_curation_config_key():
    page = (REPO / "docs" / "curation.md").read_text(encoding="utf-8")
    missing = [k for k in _keys(RunConfig) if f"`{k}`" not in page]
    assert not missing, f"docs/curation.md's configuration table lacks {missing}"


def test_ci_also_runs_the_readme_first_command():
    first = next(line for line in README.splitlines() if line.startswith("python3 -m venv .venv && "))
    after_venv = first.split(". .venv/bin/activate && ", 1)[1]
    assert after_venv in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_readme_stays_short():
    lines = len(README.splitlines())
    assert lines < 250, f"README.md has {lines} lines; move sections into a page under docs/"


FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _outside_code(text, blank_inline=True):
    """The lines of a markdown text outside fenced code blocks (inline code blanked out unless told)."""
    fence = None
    for line in text.splitlines():
        m = FENCE.match(line)
        if m:
            mark = m.group(1)
            if fence is None:
                fence = mark
            elif mark[0] == fence[0] and len(mark) >= len(fence) and not line.strip()[len(mark):]:
                fence = None
            continue
        if fence is None:
            yield re.sub(r"`[^`]*`", "``", line) if blank_inline else line


def _slug(heading):
    """GitHub's anchor for a heading: lowercase, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path):
    anchors, seen = set(), {}
    for line in _outside_code(path.read_text(encoding="utf-8"), blank_inline=False):
        heading = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = _slug(heading.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for line in _outside_code(page.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                broken.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
            elif anchor and (dest.suffix != ".md" or anchor not in _anchors(dest)):
                broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: broken links {broken}"
