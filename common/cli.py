"""One command-line style for every command of the project, on jsonargparse (which ``modeling.train``'s
LightningCLI also uses).

A command is a config dataclass (its fields are the YAML keys and the flags, its field docstrings the
``--help``) plus, optionally, a dataclass of command-only switches that are not part of the config (``--quiet``).
Every command then takes the same arguments:

- ``--config FILE`` (repeatable, later files win): a YAML file of the config's keys, read by the project's strict
  loader (:func:`common.config.load_yaml`, :func:`common.config.from_dict`: unknown keys and wrong types are errors
  naming the key);
- dotted overrides, one per field: ``--max_docs 100``, ``--html.min_chars 20``, ``--language.languages [en,de]``;
  flags win over the YAML wherever they stand on the line;
- ``--print_config``: print the resolved, validated config as YAML (a file ``--config`` takes back) and exit;
- ``--help``: every key with its docstring, type and default.

Flags users already have keep working: dashes for underscores (``--text-column``), a bare boolean switch
(``--first-line``, ``--no-progress``), several values after a list flag (``--data a.jsonl b.jsonl``) or commas
(``--languages en,de``), repeated list flags (``--input a --input b``), and each command's renamed short forms
(``--format`` for ``--writer.format``), which its ``--help`` lists.

Errors in flags (an unknown flag, a value of the wrong type) are :class:`CliError`, a
:class:`~common.errors.UserError`: one ``error: ...`` line and exit status 2, as for every other bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser, set_parsing_settings

from common.config import from_dict, load_yaml, to_dict
from common.errors import UserError, run_main

# field docstrings (the string literal under each field) become the flags' help, as for LightningCLI's classes
set_parsing_settings(docstring_parse_attribute_docstrings=True)

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class CliError(UserError):
    """A flag the command does not know, or a flag value of the wrong type."""


@dataclass(frozen=True)
class Command:
    """What a command takes: built once per command, used by :func:`parse` and :func:`run_command`."""

    prog: str
    """How the command is called (``python -m modeling.evaluate``), for ``--help`` and messages."""
    description: str
    """The ``--help`` text above the options (the command module's docstring)."""
    config: type
    """The config dataclass: the keys of ``--config`` YAML files and the dotted flags."""
    flags: type | None = None
    """A dataclass of command-only switches (not part of the config, never in its YAML)."""
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Older or shorter flags -> the dotted key they set (``--format`` -> ``writer.format``); a ``key=value``
    target sets that value (``--no-progress`` -> ``progress=false``)."""
    required: tuple[str, ...] = ()
    """Keys that must be given although the dataclass has a default for them (curation's ``input``)."""
    build: Callable[[dict[str, Any]], Any] | None = None
    """Turns the merged mapping into the config (default: :func:`common.config.from_dict` on ``config``)."""


@dataclass(frozen=True)
class Parsed:
    """One parsed command line."""

    config: Any
    """The validated config dataclass."""
    flags: Any
    """The command-only switches (an instance of ``Command.flags``), or None."""
    print_config: bool = False
    """``--print_config`` was given."""
    missing: tuple[str, ...] = ()
    """With ``print_config`` only: required keys neither flags nor YAML gave (``config`` is then a mapping of
    what was given and the defaults, those keys null), so a partial config such as the pipeline's stage configs
    still prints."""


def field_kind(annotation: Any) -> tuple[Any, bool]:
    """(base type, optional) of an annotation: ``int | None`` -> (int, True)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return (inner[0] if len(inner) == 1 else annotation), True
    return annotation, False


def field_types(cls: type, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> base type of every leaf field of dataclass ``cls`` (nested dataclasses flattened)."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        base, _ = field_kind(hints[f.name])
        if dataclasses.is_dataclass(base):
            out.update(field_types(base, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = base
    return out


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) in (tuple, list)


def _is_bool(tp: Any) -> bool:
    return tp is bool


def build_parser(cmd: Command) -> ArgumentParser:
    """The jsonargparse parser of ``cmd``: its config's fields, its switches, ``--config``, ``--print_config``."""
    epilog = None
    if cmd.aliases:
        epilog = "short forms: " + ", ".join(f"{old} = --{new}" for old, new in cmd.aliases.items())
    p = ArgumentParser(prog=cmd.prog, description=cmd.description, epilog=epilog, exit_on_error=False,
                       allow_abbrev=False,  # --max_doc must not quietly mean --max_docs
                       formatter_class=_Formatter, usage=f"{cmd.prog} [--config FILE] [--print_config] [--KEY VALUE ...]")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="YAML file of the config's keys (repeatable; later files and every flag override it)")
    p.add_argument("--print_config", action="store_true",
                   help="print the resolved config as YAML (a file --config takes back) and exit")
    p.add_class_arguments(cmd.config, None, fail_untyped=True)
    if cmd.flags is not None:
        p.add_class_arguments(cmd.flags, None, fail_untyped=True)
    for action in p._actions:  # required keys may come from the YAML: checked after the merge, with a clear message
        action.required = False
    return p


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the command docstring's layout (its usage examples) in ``--help``."""


def normalize_argv(argv: Sequence[str], types_: Mapping[str, Any], aliases: Mapping[str, str]) -> list[str]:
    """Older spellings to the canonical ``--dotted.key=value`` form jsonargparse parses (see the module notes).

    ``types_`` is :func:`field_types` of the config and the switches; anything it does not know passes through
    for jsonargparse to reject with the list of valid flags."""
    out: list[str | tuple[str]] = []  # a 1-tuple marks where a list flag's gathered items go
    lists: dict[str, list[Any]] = {}  # list flags, gathered over repeats (``--input a --input b``)
    argv = list(argv)
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not token.startswith("--") or token == "--":
            out.append(token)
            continue
        name, has_value, value = token[2:].partition("=")
        key, preset = _canonical(name, types_, aliases)
        if key is None:
            out.append(token)
            continue
        tp = types_.get(key)
        if preset is not None:
            out.append(f"--{key}={preset}")
        elif tp is not None and _is_bool(tp):
            if not has_value and i < len(argv) and argv[i].lower() in _TRUE + _FALSE:
                value, has_value = argv[i], True
                i += 1
            out.append(f"--{key}={value.lower() if has_value else 'true'}")
        elif tp is not None and _is_list(tp):
            values = [value] if has_value else []
            while not has_value and i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            if key not in lists:
                lists[key] = []
                out.append((key,))
            lists[key].extend(_list_items(values, key))
        else:
            out.append(f"--{key}={value}" if has_value else f"--{key}")
    return [t if isinstance(t, str) else f"--{t[0]}={yaml.safe_dump(lists[t[0]], default_flow_style=True).strip()}"
            for t in out]


def _canonical(name: str, types_: Mapping[str, Any], aliases: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(canonical key, preset value) of flag ``--name``; (None, None) for flags left to jsonargparse."""
    if name in ("config", "print_config", "help"):
        return None, None
    target = aliases.get("--" + name)
    if target is not None:
        key, _, preset = target.partition("=")
        return key, preset or None
    for candidate in (name, name.replace("-", "_")):
        if candidate in types_:
            return candidate, None
        if candidate.startswith("no_") and _is_bool(types_.get(candidate[3:])):  # --no-progress, --no-x
            return candidate[3:], "false"
    return None, None


def _list_items(values: list[str], key: str) -> list[Any]:
    """The items of a list flag: one YAML list (``[a, b]``), or values, each split on commas."""
    if len(values) == 1 and values[0].lstrip().startswith("["):
        try:
            items = yaml.safe_load(values[0])
        except yaml.YAMLError as err:
            raise CliError(f"--{key}: {values[0]!r} is not a list ({err.__class__.__name__})") from err
        return [str(v) if not isinstance(v, (int, float, bool)) else v for v in items or []]
    return [item.strip() for v in values for item in v.split(",") if item.strip()]


def deep_update(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base`` (nested mappings merged, everything else replaced; None included)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_update(dict(out[key]), value)
        else:
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def parse(cmd: Command, argv: Sequence[str] | None) -> Parsed:
    """Parse ``argv`` (None: ``sys.argv[1:]``) for ``cmd``: YAML files, then flags, into a validated config."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(cmd)
    types_ = field_types(cmd.config)
    flag_types = field_types(cmd.flags) if cmd.flags is not None else {}
    # --print_config is ours (it prints the config after our validation), taken out before jsonargparse, which
    # treats the name specially
    show = any(a.partition("=")[0] in ("--print_config", "--print-config") for a in argv)
    argv = [a for a in argv if a.partition("=")[0] not in ("--print_config", "--print-config")]
    try:
        ns = parser.parse_args(normalize_argv(argv, {**types_, **flag_types}, cmd.aliases), defaults=False)
    except argparse.ArgumentError as err:
        raise CliError(_explain(str(err), [*types_, *flag_types], cmd.prog)) from err
    given = ns.as_dict()
    files = given.pop("config", None) or []
    given.pop("print_config", None)
    switches = {k: given.pop(k) for k in list(given) if k in {f.name for f in _fields(cmd.flags)}}
    data: dict[str, Any] = {}
    for path in files:
        data = deep_update(data, load_yaml(Path(path)))
    data = deep_update(data, given)
    missing = [f.name for f in dataclasses.fields(cmd.config) if f.name not in data and (
        f.name in cmd.required or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING))]
    if missing and show:
        defaults = {f.name: _default(f) for f in dataclasses.fields(cmd.config)}
        return Parsed(config=deep_update(defaults, data), flags=None, print_config=True, missing=tuple(missing))
    if missing:
        raise CliError("missing " + ", ".join(f"--{m}" for m in missing) + " (pass the flag or set "
                       + ", ".join(f"{m}:" for m in missing) + " in a --config YAML)")
    where = " + ".join(str(f) for f in files) or "flags"
    config = cmd.build(data) if cmd.build is not None else from_dict(cmd.config, data, where=where)
    flags = from_dict(cmd.flags, switches, where="flags") if cmd.flags is not None else None
    return Parsed(config=config, flags=flags, print_config=show)


def _default(f: dataclasses.Field[Any]) -> Any:
    """A field's default as plain data (None for a required field)."""
    if f.default is not dataclasses.MISSING:
        return to_dict(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return to_dict(f.default_factory())
    return None


def _fields(cls: type | None) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(cls) if cls is not None else ()


def _explain(message: str, keys: list[str], prog: str) -> str:
    """jsonargparse's message on one line, with the nearest valid flag for an unknown one."""
    text = " ".join(message.split())
    if text.startswith("unrecognized arguments:"):
        unknown = [t for t in text.split(":", 1)[1].split() if t.startswith("--")]
        hints = []
        for flag in unknown:
            near = difflib.get_close_matches(flag[2:].partition("=")[0].replace("-", "_"), keys, n=1)
            if near:
                hints.append(f"{flag.partition('=')[0]}: did you mean --{near[0]}?")
        text += ("; " + "; ".join(hints) if hints else "") + f" (see {prog} --help)"
    return text


def config_yaml(config: Any, missing: Sequence[str] = ()) -> str:
    """The YAML ``--print_config`` prints for a config dataclass (or, with ``missing``, a partial mapping)."""
    head = f"# not set yet, required to run: {', '.join(missing)}\n" if missing else ""
    return head + yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


def run_command(cmd: Command, argv: Sequence[str] | None, body: Callable[[Any, Any], int | None],
                also: tuple[type[BaseException], ...] = ()) -> int:
    """Parse, then ``body(config, flags)``; ``--print_config`` prints the config instead. Returns the exit status:
    2 with one ``error:`` line for a :class:`~common.errors.UserError` (or one of ``also``)."""

    def main() -> int | None:
        parsed = parse(cmd, argv)
        if parsed.print_config:
            print(config_yaml(parsed.config, parsed.missing), end="")
            return 0
        return body(parsed.config, parsed.flags)

    return run_main(main, also=also)


__all__ = ["CliError", "Command", "Parsed", "build_parser", "config_yaml", "deep_update", "field_kind", "field_types",
           "normalize_argv", "parse", "run_command"]
