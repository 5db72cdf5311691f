"""The packages' boundaries and the one kind of user error, checked on the source (AST, nothing imported to scan).

``common`` is the foundation no stage owns and imports none of them; curation knows nothing of modeling or
launch; modeling and launch reach curation only through its public contract (``curation/__init__.py``: where a
curation output's shards are, whether it finished). Every error that means "the user's input cannot be used" is a
``common.errors.UserError``, so every command reports it as one ``error: ...`` line and exit 2.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from common.errors import USAGE_ERROR, UserError, run_main

REPO = Path(__file__).resolve().parents[1]
STAGES = ("curation", "modeling", "launch")

CURATION_CONTRACT = {"DATA_DIR", "HELDOUT_DIR", "IncompleteOutputError", "curated_data_dir", "curated_heldout_dir",
                     "require_complete", "__version__"}
"""What another package may import from curation: ``from curation import <one of these>``."""
CURATION_HELPERS: dict[str, set[str]] = {}
"""Named exceptions to the contract (none: what two stages share lives in ``common/``)."""

USER_ERRORS = {
    "common.files.InputError", "common.config.ConfigError", "common.cli.CliError",
    "curation.layout.OutputError", "curation.layout.IncompleteOutputError",
    "modeling.model_config.ModelConfigError", "modeling.data.DataConfigError", "modeling.export.ModelLoadError",
    "modeling.evaluation.config.EvaluateError", "modeling.inference.GenerateError", "modeling.runs.ResumeMismatchError",
    "modeling.evaluation.harness.HarnessError", "modeling.evaluation.domain_tasks.DomainTaskError",
    "modeling.token_shards.TokenShardsError", "modeling.tokenize.TokenizeOutputError",
}
"""Errors raised for input the user can fix: subclasses of UserError."""
OTHER_ERRORS = {
    "curation.records.FileReadError",  # an input file cannot be read (disk, permissions): an OSError
    "curation.report.ConservationError",  # the run lost or invented rows: a bug
    "modeling.tokenizer.config.TokenizerTrainError",  # the tokenizers library failed
    "launch.pipeline.StageFailed",  # a stage's command exited non-zero: its exit code is passed on
    "modeling.preemption.TrainingPreempted",  # SIGTERM/SIGINT after a checkpoint: exit 143/130
}
"""Errors (and stops) that are not about the user's input."""


def _modules(package: str) -> list[tuple[str, Path]]:
    out = []
    for path in sorted((REPO / package).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


def _imports(path: Path, module: str) -> list[tuple[str, list[str]]]:
    """(imported module, names) for every import in ``path``, relative ones made absolute."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{source}" if source else base
            found.append((source, [alias.name for alias in node.names]))
    return found


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("package", ["common", *STAGES])
def test_packages_import_only_what_they_may(package):
    allowed = {"common": set(), "curation": {"common"}, "modeling": {"common", "curation"},
               "launch": {"common", "curation", "modeling"}}[package] | {package}
    wrong = []
    for module, path in _modules(package):
        for source, names in _imports(path, module):
            top = _top(source)
            if top not in ("common", *STAGES):
                continue
            if top not in allowed:
                wrong.append(f"{module} imports {source}")
            elif top == "curation" and package != "curation" and (
                    source != "curation" or not set(names) <= CURATION_CONTRACT) and not (
                    set(names) <= CURATION_HELPERS.get(source, set())):
                wrong.append(f"{module} imports curation internals: {source} {names} "
                             f"(only `from curation import` {sorted(CURATION_CONTRACT)})")
    assert not wrong, "\n".join(wrong)


def test_the_curation_contract_is_exported():
    import curation

    assert set(curation.__all__) >= CURATION_CONTRACT
    assert all(hasattr(curation, name) for name in CURATION_CONTRACT)


def _error_classes() -> set[str]:
    """Every class defined in the code base whose name ends in Error (or that is a stop, like StageFailed)."""
    found = set()
    for package in ("common", *STAGES):
        for module, path in _modules(package):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Failed", "Preempted")):
                    found.add(f"{module}.{node.name}")
    return found - {"common.errors.UserError"}


def test_every_error_class_is_sorted_into_user_or_other():
    found = _error_classes()
    assert found - USER_ERRORS - OTHER_ERRORS == set(), "new error class: add it to USER_ERRORS or OTHER_ERRORS"
    assert (USER_ERRORS | OTHER_ERRORS) - found == set(), "listed error class not found in the code"


@pytest.mark.parametrize("name", sorted(USER_ERRORS | OTHER_ERRORS))
def test_user_errors_subclass_user_error(name):
    module, _, cls_name = name.rpartition(".")
    cls = getattr(importlib.import_module(module), cls_name)
    assert issubclass(cls, UserError) == (name in USER_ERRORS), name
    if name in USER_ERRORS:
        assert issubclass(cls, ValueError)  # existing `except ValueError` keep catching it


def test_old_import_locations_still_work():
    from common.config import ConfigError, from_dict, load_yaml
    from common.files import InputError, detect_format, names_a_local_path, resolve_paths
    from curation import config, paths

    assert (config.ConfigError, config.from_dict, config.load_yaml) == (ConfigError, from_dict, load_yaml)
    assert (paths.InputError, paths.detect_format, paths.names_a_local_path, paths.resolve_paths) == (
        InputError, detect_format, names_a_local_path, resolve_paths)


def test_commands_report_user_errors_through_run_main():
    """Each command's module uses the one helper, and none prints its own usage error with a bare ``return 2``.
    All but training (LightningCLI, jsonargparse itself) parse through common.cli, none with argparse."""
    commands = ["curation/__main__.py", "modeling/train.py", "modeling/tokenizer/cli.py", "modeling/evaluate.py",
                "modeling/generate.py", "modeling/tokenize.py", "launch/pipeline.py", "launch/dvc.py"]
    for rel in commands:
        tree = ast.parse((REPO / rel).read_text(encoding="utf-8"))
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert {"run_main", "run_command"} & calls, rel
        imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "argparse" not in imported, f"{rel}: parse with common.cli (one command-line style)"
        if rel != "modeling/train.py":
            assert "common.cli" in modules, rel
        returns_two = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Return)
                       and isinstance(n.value, ast.Constant) and n.value.value == USAGE_ERROR]
        assert not returns_two, f"{rel}:{returns_two}: raise a UserError instead; run_main reports it"


def test_run_main_turns_a_user_error_into_one_line_and_exit_2(capsys):
    class Oops(UserError):
        pass

    def fail() -> None:
        raise Oops("the input\n   is wrong:\n  fix it")

    assert run_main(fail) == 2
    assert capsys.readouterr().err == "error: the input is wrong: fix it\n"
    assert run_main(lambda: None) == 0
    assert run_main(lambda: 7) == 7
    assert run_main(lambda: (_ for _ in ()).throw(KeyError("k")), also=(KeyError,)) == 2
    with pytest.raises(RuntimeError):
        run_main(lambda: (_ for _ in ()).throw(RuntimeError("a bug")))
