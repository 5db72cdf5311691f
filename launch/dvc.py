"""Write ``dvc.yaml`` from the stage table (``launch/stages.py``), so DVC runs what ``python -m launch.pipeline`` runs.

Usage::

    python -m launch.dvc --write      # regenerate dvc.yaml: after changing the table or a stage's imports
    python -m launch.dvc --check      # exit 1, with the diff, when dvc.yaml is not what the table gives
    python -m launch.dvc              # print it
    python -m launch.dvc --config configs/pipeline/mine.yaml --output out/mine > dvc.yaml   # your own pipeline

Each stage becomes a DVC stage with the same command (``python -m <module> <args>``) and
``deps`` = the upstream outputs its arguments name, the data it reads, and the repository source files its entry
module imports, directly or through other repository modules (found by reading the ``import`` statements, those
inside functions too); ``params`` = its config files; ``outs`` / ``metrics`` = what it writes. Without
``--config`` the pipeline is the demo under ``out/dvc/`` (:data:`DEMO`, also the defaults a ``--config`` file
overrides). ``env`` is not written: DVC commands
take the shell's environment.
"""

from __future__ import annotations

import ast
import difflib
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.cli import Command, deep_update, run_command
from common.config import ConfigError, from_dict, to_dict
from launch.stages import PipelineConfig, StageArgsConfig, StageSpec, stage_table

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "curation", "modeling", "launch")
"""The repository's packages: imports of anything else (torch, ray, ...) are not followed."""
DVC_FILE = REPO / "dvc.yaml"
REGENERATE = "python -m launch.dvc --write"

DEMO = PipelineConfig(output="out/dvc", extra_args=StageArgsConfig(train=("--trainer.enable_progress_bar", "false")))
"""The demo pipeline that the committed dvc.yaml describes: the default configs, everything under out/dvc/."""

HEADER = f"""\
# dvc repro   (from the repository root, after `dvc init`): the demo pipeline as DVC stages.
# GENERATED from the stage table in launch/stages.py, do not edit: regenerate with `{REGENERATE}`
# (a test fails while this file differs from what the table gives). Each stage is the command
# `python -m launch.pipeline` runs; DVC reruns a stage only when its code (the repository modules it imports),
# its inputs or its config (tracked as params) changed, and `dvc add` / `dvc push` version the raw and curated data.
"""
WIDTH = 110


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The repository file of module ``name`` (``pkg/mod.py`` or ``pkg/mod/__init__.py``), None if not one."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path, module: str) -> set[str]:
    """Every module name an ``import`` statement in ``path`` may load (``from a import b``: ``a`` and ``a.b``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return names


def repo_imports(entry: str, root: Path = REPO) -> list[str]:
    """The repository files that ``python -m entry`` runs: the entry module (a package's ``__main__``), every
    repository module it imports, directly or through others, and the packages' ``__init__`` files on the way.
    Paths relative to ``root``, sorted."""
    entry_file = module_file(entry, root)
    start = f"{entry}.__main__" if entry_file is not None and entry_file.name == "__init__.py" else entry
    seen: dict[str, Path] = {}
    todo = [start]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            sub = ".".join(parts[:i])
            path = module_file(sub, root)
            if path is not None and sub not in seen:
                seen[sub] = path
                todo.extend(_imported_names(path, sub))
    return sorted(p.relative_to(root).as_posix() for p in seen.values())


def _under(arg: str, path: str) -> bool:
    return arg == path or arg.startswith(path.rstrip("/") + "/")


def _dep_paths(spec: StageSpec) -> list[str]:
    """Local data a stage reads, as DVC deps: a glob becomes the folder before its first wildcard."""
    deps = []
    for read in spec.reads:
        if "://" in read:
            continue  # remote input (hf://, s3://): not a file DVC can hash
        fixed = []
        for part in Path(read).parts:
            if any(c in part for c in "*?["):
                break
            fixed.append(part)
        deps.append(Path(*fixed).as_posix() if fixed else ".")
    return deps


def dvc_stages(cfg: PipelineConfig) -> dict[str, Any]:
    """dvc.yaml's contents for ``cfg``, as the mapping DVC reads."""
    table = stage_table(cfg)
    by_name = {s.name: s for s in table}
    stages: dict[str, Any] = {}
    for spec in table:
        upstream_outs = [o.path for up in spec.upstream for o in by_name[up].outs
                         if any(_under(a, o.path) for a in spec.args)]
        stage: dict[str, Any] = {
            "cmd": shlex.join(spec.argv("python")),
            "deps": [*upstream_outs, *_dep_paths(spec), *repo_imports(spec.module)],
        }
        if spec.params:
            stage["params"] = [{p: None} for p in spec.params]
        outs = [o for o in spec.outs if not o.metric]
        if outs:
            stage["outs"] = [o.path if o.cache else {o.path: {"cache": False}} for o in outs]
        metrics = [o for o in spec.outs if o.metric]
        if metrics:
            stage["metrics"] = [{o.path: {"cache": o.cache}} for o in metrics]
        stages[spec.name] = stage
    return {"stages": stages}


def _scalar(text: str) -> str:
    """``text`` as a YAML scalar: bare when YAML reads it back unchanged, else double-quoted."""
    try:
        if yaml.safe_load(text) == text and text == text.strip():
            return text
    except yaml.YAMLError:
        pass
    return json.dumps(text)


def _command(cmd: str) -> list[str]:
    """``cmd: ...`` on one line, or folded (``>-``) when long: broken between arguments, a flag kept with its value."""
    line = f"    cmd: {_scalar(cmd)}"
    if len(line) <= WIDTH:
        return [line]
    units: list[str] = []
    for word in map(shlex.quote, shlex.split(cmd)):
        if units and units[-1].startswith("--") and " " not in units[-1] and not word.startswith("-"):
            units[-1] += " " + word
        else:
            units.append(word)
    lines, current = ["    cmd: >-"], ""
    for unit in units:
        if current and len(current) + 1 + len(unit) > WIDTH:
            lines.append(current)
            current = ""
        current = f"{current} {unit}" if current else f"      {unit}"
    return [*lines, current]


def render(cfg: PipelineConfig = DEMO) -> str:
    """The text of dvc.yaml for ``cfg``: the header comment, then the stages."""
    lines = [*HEADER.splitlines(), "stages:"]
    for name, stage in dvc_stages(cfg)["stages"].items():
        lines += [f"  {name}:", *_command(stage["cmd"])]
        for key in ("deps", "params", "outs", "metrics"):
            if key not in stage:
                continue
            lines.append(f"    {key}:")
            for item in stage[key]:
                if isinstance(item, str):
                    lines.append(f"      - {_scalar(item)}")
                    continue
                ((path, options),) = item.items()
                lines.append(f"      - {_scalar(path)}:")
                lines += [f"          {k}: {json.dumps(v)}" for k, v in (options or {}).items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class DvcSwitches:
    """What to do with the rendered ``dvc.yaml`` (at most one of ``write`` and ``check``; neither prints it)."""

    file: str = str(DVC_FILE)
    """The dvc.yaml that ``write`` and ``check`` use."""
    write: bool = False
    """Write ``file``."""
    check: bool = False
    """Exit 1, showing the diff, when ``file`` differs from what the stage table gives."""

    def __post_init__(self) -> None:
        if self.write and self.check:
            raise ConfigError("--write and --check exclude each other: pass one")


COMMAND = Command(prog="python -m launch.dvc", description=__doc__, config=PipelineConfig, flags=DvcSwitches,
                  build=lambda data: from_dict(PipelineConfig, deep_update(to_dict(DEMO), data)))
"""The pipeline's config (without ``--config``: :data:`DEMO`, the committed dvc.yaml's), plus the switches."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (1 when ``--check`` finds dvc.yaml stale, 2 for a bad config)."""
    return run_command(COMMAND, argv, _run)


def _run(cfg: PipelineConfig, args: DvcSwitches) -> int:
    text = render(cfg)
    if cfg.env and not args.check:
        print(f"note: env {sorted(cfg.env)} is not part of dvc.yaml; set it in the shell", file=sys.stderr)
    target = Path(args.file)
    if args.check:
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        if current == text:
            print(f"{target} is up to date")
            return 0
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                   str(target), "generated"))
        print(f"error: {target} is not what the stage table gives; regenerate it: {REGENERATE}", file=sys.stderr)
        return 1
    if args.write:
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
