"""Run configuration: one frozen dataclass for the run, with one section per step, loaded from YAML and flags.

The YAML file holds everything the flags hold and more (per-step options); flags override it. Unknown keys
are errors that name the key, the section and the valid keys, because a typo such as ``min_char:`` silently
ignored would run an hour with the wrong settings. The steps, and so the step sections, come from
:mod:`curation.steps.registry`.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from curation import columns
from curation.io import ReaderConfig, WriterConfig
from curation.steps import registry
from curation.steps.registry import Phase, StepSpec


class ConfigError(ValueError):
    """The configuration is wrong; the message names the key and says what would be right."""


@dataclass(frozen=True)
class RunOptions:
    """The run's own options; :data:`RunConfig` adds one section per registered step after them."""

    input: tuple[str, ...] = ()
    """Input files, directories, globs, or ``hf://DATASET`` names."""
    output: str = ""
    """Output directory: curated shards, report.json, report.md."""
    text_column: str = "text"
    """Column holding the document text; every other column passes through."""
    steps: tuple[str, ...] = ()
    """Steps to run: any subset of the registered ones (default: all), run in the registry's order."""
    ray_address: str | None = None
    """Ray cluster to attach to (``auto``, ``ray://host:10001``); None uses ``RAY_ADDRESS`` or starts a
    local Ray."""
    overwrite: bool = False
    """Replace an earlier run in ``output``: only the files that run wrote are removed (otherwise such a folder
    is an error)."""
    resume: bool = False
    """Finish the interrupted run in ``output``: read tasks and shards it finished are kept, the rest is done.
    The config and inputs must be the ones it was started with."""
    batch_size: int = 1024
    """Rows per batch handed to the cleaning steps."""
    num_cpus: int | None = None
    """CPUs for the embedded local Ray (None: all of this machine's). Ignored when attaching to a cluster."""
    progress: bool = True
    """Show Ray Data's progress bars."""
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)

    step_specs: ClassVar[tuple[StepSpec, ...]] = ()
    """Every step this config class knows, in run order (see :func:`run_config_class`)."""

    def __post_init__(self) -> None:
        names = [s.name for s in self.step_specs]
        unknown = [s for s in self.steps if s not in names]
        if unknown:
            raise ConfigError(f"steps: unknown step(s) {unknown}; valid steps are {','.join(names)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def ordered_steps(self) -> tuple[str, ...]:
        """The names of the steps this run runs, in run order."""
        return tuple(s.name for s in self.selected_steps())

    def selected_steps(self, phase: Phase | None = None) -> tuple[StepSpec, ...]:
        """The steps this run runs (those of one ``phase`` only if given), in run order."""
        return tuple(s for s in self.step_specs if s.name in self.steps and (phase is None or s.phase == phase))

    def step_config(self, name: str) -> Any:
        """The options of step ``name`` (its YAML section)."""
        return getattr(self, name)

    @property
    def reserved_columns(self) -> frozenset[str]:
        """Column names an input may not bring to this run: the internal ones and those its steps add."""
        return columns.reserved(registry.step_columns(self.selected_steps()))


def run_config_class(steps: Sequence[StepSpec]) -> type[RunOptions]:
    """The run config of a registry of steps: :class:`RunOptions`, then one section per step (its config
    dataclass, under the step's name), in run order; ``steps`` defaults to all of them."""
    registry.check(steps)
    clash = sorted({s.name for s in steps} & {f.name for f in dataclasses.fields(RunOptions)})
    if clash:
        raise ValueError(f"step name(s) {clash} are taken by run options")
    fields: list[tuple[str, Any, Any]] = [("steps", tuple[str, ...], field(default=tuple(s.name for s in steps)))]
    fields += [(s.name, s.config, field(default_factory=s.config)) for s in steps]
    cls = dataclasses.make_dataclass(
        "RunConfig", fields, bases=(RunOptions,), frozen=True,
        namespace={"step_specs": tuple(steps),
                   "__doc__": "The run's options, then one section per step: its options, under its name."})
    cls.__module__ = __name__  # pickles by reference (Ray ships configs to its workers)
    return cls


RunConfig = run_config_class(registry.STEPS)
"""The run config: the run's options, then a section per step of :data:`curation.steps.registry.STEPS`."""


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Coerce YAML values into the annotated type: nested dataclasses, tuples from lists, optional fields."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of options, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], where) if len(args) == 1 else value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: must be a whole number, got {value!r}")
    if tp is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys with the list of valid ones."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError, ImportError) as e:  # ImportError: an optional backend is not installed
        raise ConfigError(f"{where}: {e}") from e


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` (CLI flags, None = not given) into ``base`` (the YAML)."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict):
            nested = merge(out.get(key) or {}, value)
            if nested:
                out[key] = nested
        else:
            out[key] = value
    return out


def build_config(yaml_path: str | Path | None, overrides: dict[str, Any]) -> RunConfig:
    """YAML (optional) + flag overrides -> a validated RunConfig."""
    data = load_yaml(yaml_path) if yaml_path else {}
    cfg = from_dict(RunConfig, merge(data, overrides))
    if not cfg.input:
        raise ConfigError("no input: pass --input PATH_OR_GLOB (or input: [...] in the config)")
    if not cfg.output:
        raise ConfigError("no output: pass --output DIR (or output: in the config)")
    if cfg.output.startswith("~"):  # a YAML value or a quoted flag: the shell did not expand it, and Ray workers
        cfg = dataclasses.replace(cfg, output=os.path.expanduser(cfg.output))  # would expand it differently
    return cfg


def to_dict(cfg: Any) -> Any:
    """A JSON/YAML-friendly view of a config (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg
