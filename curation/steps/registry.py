"""The curation steps: the one list of them, their order and the stage each one runs in.

A step is a module in ``curation/steps/`` (a pure text function, a frozen config dataclass, a batch callable;
see :mod:`curation.steps.base`) plus one :class:`StepSpec` line in :data:`STEPS`. Everything else follows
from that line:

- the run config (:mod:`curation.config` builds ``RunConfig`` from :data:`STEPS`): the step's name in
  ``steps:`` / ``--steps``, and a YAML section of that name holding its config's keys;
- the pipeline (:mod:`curation.pipeline`): which stage runs it, and where in that stage;
- the report: the step's row in the step table (rows and characters in and out, drops, CPU time);
- the command line (:mod:`curation.__main__`): the ``--steps`` choices and the flags the step declares;
- docs/curation-steps.md: the step table there is :func:`markdown_table`, checked by a test.

Steps run in the order of :data:`STEPS`, whatever order a user lists them in: cheap filters first, so that
dropped rows travel light; PII on the rows the filters keep, before the dedup keys are taken, so that texts
that are the same once redacted (a boilerplate page that differed only by an e-mail address) are duplicates;
dedup once every copy of a text has met. How to add one: docs/curation-steps.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from curation import columns
from curation.dedup import REASON_DUPLICATE, DedupConfig, DuplicateMarker
from curation.steps.html import HtmlConfig, HtmlStripper
from curation.steps.language import (
    REASON_LANGUAGE,
    REASON_LOW_SCORE,
    REASON_SHORT,
    LanguageConfig,
    LanguageFilter,
)
from curation.steps.normalize import NormalizeConfig, UnicodeNormalizer
from curation.steps.pii import PiiConfig, PiiRedactor
from curation.steps.quality import DROP_REASONS as QUALITY_REASONS
from curation.steps.quality import QualityConfig, QualityFilter
from curation.steps.urls import UrlConfig, UrlRemover
from curation.steps.whitespace import WhitespaceConfig, WhitespaceNormalizer

Phase = Literal["clean", "shard"]
CLEAN: Phase = "clean"
"""Stage 1, in every read task, batch by batch, before the shuffle: for steps that judge or rewrite one
document at a time. Rows dropped here cross the shuffle as an id and a reason only."""
SHARD: Phase = "shard"
"""Stage 2, once per output shard, after the shuffle: every copy of a text lies in the same shard. For dedup, and
for costly steps that should only see the rows that survived it."""
PHASES: tuple[Phase, ...] = (CLEAN, SHARD)

BatchStep = Callable[[pa.Table], pa.Table]
"""What a step does to a batch: a ``pyarrow.Table`` in, the same rows out (rewritten, marked, annotated)."""


@dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one key of a step's config: ``Flag("--languages", "languages", ...)`` on
    the ``language`` step makes ``--languages en,de`` set ``language.languages``. The flag's type (a comma
    list, a choice, a number, a switch) comes from the config field's annotation."""

    flag: str
    """The flag, ``--kebab-case``."""
    key: str
    """The config field it sets."""
    help: str
    """One line for ``--help``."""


@dataclass(frozen=True)
class StepSpec:
    """One registered step. Its position in :data:`STEPS` is its place in the run order."""

    name: str
    """Name in ``steps:`` / ``--steps``, the YAML section of its options, and its key in the report."""
    phase: Phase
    """:data:`CLEAN` (stage 1, per batch of a read task) or :data:`SHARD` (stage 2, per output shard)."""
    config: type
    """Frozen dataclass of its options; ``config()`` holds the defaults."""
    make: Callable[[Any, str], BatchStep]
    """``make(config, text_column)`` -> the batch callable; the step's class does (``HtmlStripper``). Called
    once per worker process, so a model loads once per process."""
    drop_reasons: tuple[str, ...] = ()
    """The reasons it marks rows with (documentation; the report counts whatever reasons appear)."""
    columns: tuple[str, ...] = ()
    """Output columns it adds: an input column of the same name is kept as ``input_<name>`` when it runs."""
    flags: tuple[Flag, ...] = ()
    """Command-line flags for its most used options (every option has a YAML key anyway)."""


STEPS: tuple[StepSpec, ...] = (
    StepSpec("normalize", CLEAN, NormalizeConfig, UnicodeNormalizer),
    StepSpec("html", CLEAN, HtmlConfig, HtmlStripper),
    StepSpec("urls", CLEAN, UrlConfig, UrlRemover),
    StepSpec("whitespace", CLEAN, WhitespaceConfig, WhitespaceNormalizer),
    StepSpec("quality", CLEAN, QualityConfig, QualityFilter, drop_reasons=QUALITY_REASONS),
    StepSpec("language", CLEAN, LanguageConfig, LanguageFilter,
             drop_reasons=(REASON_LANGUAGE, REASON_LOW_SCORE, REASON_SHORT),
             columns=(columns.LANG, columns.LANG_SCORE),
             flags=(Flag("--languages", "languages", "keep these ISO 639-1 languages, e.g. en,de"),
                    Flag("--language-backend", "backend", "language ID backend (default: fasttext)"))),
    StepSpec("pii", CLEAN, PiiConfig, PiiRedactor, columns=(columns.PII_COUNTS,)),
    StepSpec("dedup", SHARD, DedupConfig, DuplicateMarker, drop_reasons=(REASON_DUPLICATE,),
             flags=(Flag("--dedup-key", "key", "dedup on exact or case/space-folded text"),)),
)
"""Every step, in the order they run."""


def check(steps: Sequence[StepSpec]) -> None:
    """Raise ``ValueError`` unless ``steps`` is a registry the pipeline can run: unique names that can be YAML
    keys, known phases with every stage-1 step before every stage-2 one, dataclass configs, flags on fields."""
    seen: set[str] = set()
    for i, spec in enumerate(steps):
        where = f"step {spec.name!r}"
        if not spec.name.isidentifier() or spec.name in seen:
            raise ValueError(f"{where}: a step name must be unique and a Python identifier")
        seen.add(spec.name)
        if spec.phase not in PHASES:
            raise ValueError(f"{where}: phase must be one of {PHASES}, got {spec.phase!r}")
        if i and PHASES.index(spec.phase) < PHASES.index(steps[i - 1].phase):
            raise ValueError(f"{where} runs in stage 1 ({CLEAN!r}) but comes after {steps[i - 1].name!r} of stage 2 "
                             f"({SHARD!r}); stage-1 steps come first")
        if not dataclasses.is_dataclass(spec.config):
            raise ValueError(f"{where}: config must be a dataclass, got {spec.config!r}")
        fields = {f.name for f in dataclasses.fields(spec.config)}
        for flag in spec.flags:
            if flag.key not in fields or not flag.flag.startswith("--"):
                raise ValueError(f"{where}: flag {flag.flag} must start with -- and set a field of "
                                 f"{spec.config.__name__} ({sorted(fields)})")


check(STEPS)


def step_columns(steps: Iterable[StepSpec]) -> tuple[str, ...]:
    """The output columns ``steps`` add, in step order."""
    return tuple(c for spec in steps for c in spec.columns)


def markdown_table(steps: Sequence[StepSpec] = STEPS) -> str:
    """The step table of docs/curation-steps.md (a test keeps the two the same)."""
    lines = ["| # | step | stage | config (YAML section) | batch step | drop reasons | adds columns |",
             "|---|---|---|---|---|---|---|"]

    def code(items: Iterable[str]) -> str:
        return ", ".join(f"`{x}`" for x in items)

    for i, spec in enumerate(steps, 1):
        stage = "1 (`clean`)" if spec.phase == CLEAN else "2 (`shard`)"
        lines.append(f"| {i} | `{spec.name}` | {stage} | `{spec.config.__name__}` (`{spec.name}:`) | "
                     f"`{spec.make.__module__}.{spec.make.__qualname__}` | {code(spec.drop_reasons)} | "
                     f"{code(spec.columns)} |")
    return "\n".join(lines) + "\n"
