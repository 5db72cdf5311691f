"""The one command-line style (common/cli.py): every command takes ``--config FILE``, dotted overrides,
``--print_config`` and ``--help`` from its config dataclass, and the flags users already have keep working."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from common.cli import CliError, Command, normalize_argv, parse, run_command
from common.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Inner:
    """A nested section."""

    min_chars: int = 5
    """Shortest text kept."""
    langs: tuple[str, ...] = ("en",)
    """Languages kept."""


@dataclass(frozen=True)
class Toy:
    """A toy command's config."""

    model: str
    """Which model (required)."""
    data: tuple[str, ...] = ()
    """Input files."""
    first_line: bool = False
    """Score only the first line."""
    mode: Literal["a", "b"] = "a"
    """One of two modes."""
    max_docs: int | None = None
    """At most this many documents."""
    inner: Inner = field(default_factory=Inner)
    """The nested section."""

    def __post_init__(self) -> None:
        if self.max_docs is not None and self.max_docs < 1:
            raise ValueError(f"max_docs is {self.max_docs}: pass --max_docs >= 1")


@dataclass(frozen=True)
class Switches:
    """Command-only switches."""

    quiet: bool = False
    """Print less."""


TOY = Command(prog="toy", description="A toy command.", config=Toy, flags=Switches,
              aliases={"--min": "inner.min_chars", "--everything": "mode=b"})


def test_dotted_overrides_and_types():
    p = parse(TOY, ["--model", "m", "--inner.min_chars", "7", "--inner.langs", "[en, de]", "--mode=b"])
    assert p.config == Toy(model="m", mode="b", inner=Inner(min_chars=7, langs=("en", "de")))
    assert p.flags == Switches() and not p.print_config


def test_older_spellings_keep_working():
    # dashes, bare booleans, --no-x, several values after a list flag, commas, repeats, short aliases
    p = parse(TOY, ["--model", "m", "--first-line", "--data", "a.jsonl", "b.jsonl", "--data", "c.jsonl",
                    "--inner.langs", "en,de", "--min", "9", "--max-docs", "3", "--quiet"])
    assert p.config.first_line is True and p.config.data == ("a.jsonl", "b.jsonl", "c.jsonl")
    assert p.config.inner == Inner(min_chars=9, langs=("en", "de")) and p.config.max_docs == 3
    assert p.flags == Switches(quiet=True)
    assert parse(TOY, ["--model", "m", "--first_line", "false", "--everything"]).config.mode == "b"
    assert parse(TOY, ["--model", "m", "--first_line", "--no-first-line"]).config.first_line is False
    # a YAML list keeps commas inside items
    assert parse(TOY, ["--model", "m", "--data", "[a,b.jsonl]"]).config.data == ("a", "b.jsonl")
    assert parse(TOY, ["--model", "m", "--data", "['a,b.jsonl']"]).config.data == ("a,b.jsonl",)


def test_normalize_argv_is_the_canonical_form():
    types_ = {"model": str, "data": tuple[str, ...], "first_line": bool}
    assert normalize_argv(["--model", "m", "--first-line", "--data", "a", "b"], types_, {}) == [
        "--model", "m", "--first_line=true", "--data=[a, b]"]
    assert normalize_argv(["--unknown-flag", "1"], types_, {}) == ["--unknown-flag", "1"]


def test_flags_override_yaml_wherever_they_stand(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("model: from-yaml\nmax_docs: 10\ninner: {min_chars: 2}\n")
    later = tmp_path / "later.yaml"
    later.write_text("inner: {langs: [fr]}\n")
    p = parse(TOY, ["--max_docs", "4", "--config", str(conf), "--config", str(later)])
    assert p.config == Toy(model="from-yaml", max_docs=4, inner=Inner(min_chars=2, langs=("fr",)))
    # an explicit null on the command line replaces the YAML's value
    assert parse(TOY, ["--config", str(conf), "--max_docs", "null"]).config.max_docs is None


def test_errors_are_user_errors_that_name_the_fix(tmp_path):
    with pytest.raises(CliError, match=r"missing --model \(pass the flag or set model: in a --config YAML\)"):
        parse(TOY, [])
    with pytest.raises(CliError, match=r"--max_doc: did you mean --max_docs\? \(see toy --help\)"):
        parse(TOY, ["--model", "m", "--max_doc", "3"])
    with pytest.raises(CliError, match=r"inner\.min_chars"):
        parse(TOY, ["--model", "m", "--inner.min_chars", "many"])
    with pytest.raises(CliError, match="mode"):
        parse(TOY, ["--model", "m", "--mode", "c"])
    conf = tmp_path / "c.yaml"
    conf.write_text("model: m\nmax_doc: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['max_doc'\]; valid keys are"):
        parse(TOY, ["--config", str(conf)])
    with pytest.raises(ConfigError, match="pass --max_docs >= 1"):  # the dataclass's own check
        parse(TOY, ["--model", "m", "--max_docs", "0"])


def test_run_command_exit_codes_and_print_config(tmp_path, capsys):
    assert run_command(TOY, ["--max_doc", "1"], lambda c, f: 0) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one line
    seen = []
    assert run_command(TOY, ["--model", "m"], lambda c, f: seen.append(c)) == 0 and seen == [Toy(model="m")]
    assert run_command(TOY, ["--model", "m", "--min", "3", "--print_config"], lambda c, f: 1 / 0) == 0
    printed = capsys.readouterr().out
    conf = tmp_path / "printed.yaml"
    conf.write_text(printed)
    assert parse(TOY, ["--config", str(conf)]).config == Toy(model="m", inner=Inner(min_chars=3))
    # a partial config still prints, saying what is missing
    assert run_command(TOY, ["--print_config"], lambda c, f: 1 / 0) == 0
    out = capsys.readouterr().out
    assert out.startswith("# not set yet, required to run: model\n") and yaml.safe_load(out)["model"] is None


def test_help_comes_from_the_field_docstrings(capsys):
    with pytest.raises(SystemExit) as info:
        parse(TOY, ["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "Shortest text kept." in text and "--inner.min_chars" in text and "--min = --inner.min_chars" in text


# ---- every command of the project, as it ships ----------------------------------------------------------------

def _commands() -> list[tuple[str, list[str], Path]]:
    """(module, subcommand args, config) for every command and every config it ships with."""
    out = [("curation", ["run"], c) for c in sorted((REPO / "configs/curation").glob("*.yaml"))]
    out += [("modeling.tokenizer", ["train"], c) for c in sorted((REPO / "configs/tokenizer").glob("*.yaml"))]
    out += [("modeling.evaluate", [], c) for c in sorted((REPO / "configs/evaluate").glob("*.yaml"))]
    out += [("modeling.generate", [], c) for c in sorted((REPO / "configs/generate").glob("*.yaml"))]
    out += [("modeling.harness", [c.stem], c) for c in sorted((REPO / "configs/harness").glob("*.yaml"))]
    out += [("launch.pipeline", [], c) for c in sorted((REPO / "configs/pipeline").glob("*.yaml"))]
    out += [("launch.dvc", [], c) for c in sorted((REPO / "configs/pipeline").glob("*.yaml"))]
    return out


COMMANDS = _commands()


@pytest.mark.parametrize(("module", "sub", "config"), COMMANDS,
                         ids=[f"{m}:{c.relative_to(REPO)}" for m, _, c in COMMANDS])
def test_every_command_prints_its_shipped_configs_and_takes_the_print_back(module, sub, config, tmp_path, capsys):
    import importlib

    main = importlib.import_module(module if module != "curation" else "curation.__main__").main
    assert main([*sub, "--config", str(config), "--print_config"]) == 0
    printed = capsys.readouterr().out
    data = yaml.safe_load(printed)
    assert isinstance(data, dict) and set(yaml.safe_load(config.read_text()) or {}) <= set(data)
    if printed.startswith("# not set yet"):  # a stage config the pipeline completes: fill the required keys
        missing = printed.splitlines()[0].split(":", 1)[1].replace(" ", "").split(",")
        data.update({k: (["x"] if k in ("input", "data", "tasks") else "x") for k in missing})
    again = tmp_path / "printed.yaml"
    again.write_text(yaml.safe_dump(data))
    assert main([*sub, "--config", str(again), "--print_config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == data


MAINS = {"curation": "curation.__main__", "modeling.tokenizer": "modeling.tokenizer",
         "modeling.evaluate": "modeling.evaluate", "modeling.generate": "modeling.generate",
         "modeling.harness": "modeling.harness", "launch.pipeline": "launch.pipeline", "launch.dvc": "launch.dvc"}


@pytest.mark.parametrize("command", ["curation run", "modeling.tokenizer train", "modeling.tokenizer inspect",
                                     "modeling.evaluate", "modeling.generate", "modeling.harness tasks",
                                     "modeling.harness run", "launch.pipeline", "launch.dvc"])
def test_every_command_has_help_and_refuses_a_bad_flag_in_one_line(command, capsys):
    import importlib

    module, *sub = command.split()
    main = importlib.import_module(MAINS[module]).main
    with pytest.raises(SystemExit) as info:
        main([*sub, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "--print_config" in out and "--config FILE" in out
    assert main([*sub, "--no_such_flag", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize("command", ["curation run", "modeling.harness run"])
def test_python_dash_m_runs_the_same_command(command):
    argv = [sys.executable, "-m", *command.split()]
    help_ = subprocess.run([*argv, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert help_.returncode == 0 and "--print_config" in help_.stdout and "--config FILE" in help_.stdout
    bad = subprocess.run([*argv, "--no_such_flag", "1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
