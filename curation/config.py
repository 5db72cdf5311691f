"""Run configuration: one frozen dataclass for the run, with one section per step, loaded from YAML and flags.

The YAML file holds everything the flags hold and more (per-step options); flags override it. Unknown keys
are errors that name the key, the section and the valid keys, because a typo such as ``min_char:`` silently
ignored would run an hour with the wrong settings. The steps, and so the step sections, come from
:mod:`curation.steps.registry`; the YAML-to-dataclass machinery is :mod:`common.config`, shared by every stage
(``ConfigError``, ``from_dict``, ``load_yaml``, ``merge`` are re-exported here).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from common.config import ConfigError, from_dict, load_yaml, merge, to_dict
from curation import columns
from curation.io import ReaderConfig, WriterConfig
from curation.split import SplitConfig
from curation.steps import registry
from curation.steps.registry import Phase, StepSpec


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
    """Show a progress bar per stage (tasks done of tasks to do) on stderr."""
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    """The held-out split written to ``heldout/`` beside ``data/`` (see :mod:`curation.split`)."""

    step_specs: ClassVar[tuple[StepSpec, ...]] = ()
    """Every step this config class knows, in run order (see :func:`run_config_class`)."""

    def __post_init__(self) -> None:
        names = [s.name for s in self.step_specs]
        unknown = [s for s in self.steps if s not in names]
        if unknown:
            raise ConfigError(f"steps: unknown step(s) {unknown}; valid steps are {','.join(names)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        self.split.check_steps(self.steps)

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


__all__ = ["ConfigError", "RunConfig", "RunOptions", "build_config", "from_dict", "load_yaml", "merge",
           "run_config_class", "to_dict"]

RunConfig = run_config_class(registry.STEPS)
"""The run config: the run's options, then a section per step of :data:`curation.steps.registry.STEPS`."""


def build_config(yaml_path: str | Path | None, overrides: dict[str, Any],
                 config_cls: type[RunOptions] | None = None) -> RunOptions:
    """YAML (optional) + flag overrides -> a validated run config (a :data:`RunConfig` unless ``config_cls``)."""
    data = load_yaml(yaml_path) if yaml_path else {}
    cfg = from_dict(config_cls or RunConfig, merge(data, overrides))
    if not cfg.input:
        raise ConfigError("no input: pass --input PATH_OR_GLOB (or input: [...] in the config)")
    if not cfg.output:
        raise ConfigError("no output: pass --output DIR (or output: in the config)")
    if cfg.output.startswith("~"):  # a YAML value or a quoted flag: the shell did not expand it, and Ray workers
        cfg = dataclasses.replace(cfg, output=os.path.expanduser(cfg.output))  # would expand it differently
    return cfg
