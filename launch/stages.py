"""The pipeline's stages in one table: ``python -m launch.pipeline`` runs it, ``python -m launch.dvc`` writes
``dvc.yaml`` from it, and a test keeps the two equal.

A row (:class:`StageSpec`) says which module the stage runs (``python -m <module> <args>``), its arguments (built
from the pipeline config, every path under the config's ``output``), what it writes, the config files it takes
its settings from, the data it reads from outside the output folder and the stages whose outputs it reads. The
rows are plain values: nothing is looked up while a stage runs, so a stage's command line is known, printed and
hashed before anything starts. The repository modules a stage's code is made of are not listed here:
``launch.dvc`` finds them from the entry module's imports.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import ConfigError, load_yaml

STAGES: tuple[str, ...] = ("curation", "tasks", "tokenizer", "tokenize", "train", "evaluate", "generate")
"""Every stage, in the order it runs (the rows of :func:`stage_table`, in order)."""

RUN_VERSION = "version_0"
"""The training run's version folder: the pipeline empties ``train/`` first, so the number never climbs."""


@dataclass(frozen=True)
class StageArgsConfig:
    """Extra command-line arguments appended to each stage's command (they override its config file)."""

    curation: tuple[str, ...] = ()
    """Extra flags of ``python -m curation run``, e.g. ``[--num_cpus, "2"]``."""
    tasks: tuple[str, ...] = ()
    """Extra flags of ``python -m modeling.harness tasks``, e.g. ``[--max_docs, "500"]``."""
    tokenizer: tuple[str, ...] = ()
    """Extra flags of ``python -m modeling.tokenizer train``, e.g. ``[--vocab_size, "1000"]``."""
    tokenize: tuple[str, ...] = ()
    """Extra flags of ``python -m modeling.tokenize``, e.g. ``[--num_cpus, "2"]``."""
    train: tuple[str, ...] = ()
    """Extra flags of ``python -m modeling.train fit``, e.g. ``[--trainer.max_steps, "10"]``."""
    evaluate: tuple[str, ...] = ()
    """Extra flags of ``python -m modeling.evaluate``, e.g. ``[--max_docs, "100"]``."""
    generate: tuple[str, ...] = ()
    """Extra flags of ``python -m modeling.generate``, e.g. ``[--max_new_tokens, "20"]``."""


@dataclass(frozen=True)
class PipelineConfig:
    """One run of the whole chain; every key of ``configs/pipeline/*.yaml``."""

    output: str = "out/pipeline-demo"
    """Directory that receives every artifact: curated/, tokenizer/, tokens/, train/, metrics.json, samples.jsonl,
    logs/."""
    curation_config: str = "configs/curation/demo.yaml"
    """``--config`` of the curation stage; its ``input`` names the raw data (its ``output`` is overridden)."""
    tokenizer_config: str = "configs/tokenizer/demo.yaml"
    """``--config`` of the tokenizer stage."""
    tokenize_config: str = "configs/tokenize/default.yaml"
    """``--config`` of the tokenize stage (the Ray Data job writing the token shards training reads)."""
    train_config: str = "configs/train/tiny-cpu.yaml"
    """``--config`` of the training stage; the data, tokenizer, run directory and ``--name`` are set by the
    pipeline (the name is the config file's, unless ``extra_args.train`` gives ``--name``)."""
    prompts: str = "configs/generate/prompts.txt"
    """Prompts for the generation stage (``--prompts``)."""
    harness_tasks: tuple[str, ...] = ("domain",)
    """lm-evaluation-harness tasks the evaluation stage runs next to perplexity and bits per byte: ``domain``
    (the two tasks the ``tasks`` stage writes from the held-out split), its parts ``domain_cloze`` and
    ``domain_choice``, or hub tasks where the hub is reachable (``hellaswag``, ...). Empty: none."""
    extra_args: StageArgsConfig = field(default_factory=StageArgsConfig)
    """Extra flags per stage, appended after the pipeline's own (later flags win)."""
    stages: tuple[str, ...] = STAGES
    """Which stages to run; the others are neither run nor checked (their existing outputs are used)."""
    force: bool = False
    """Rerun the selected stages even when they are up to date."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables for the stage processes, e.g. ``OMP_NUM_THREADS: "1"`` on a small shared machine."""

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"stages: unknown stage(s) {unknown}; valid stages are {','.join(STAGES)}")
        if not self.stages:
            raise ConfigError(f"stages: name at least one of {','.join(STAGES)}")
        if not isinstance(self.env, dict) or not all(isinstance(v, str) for v in self.env.values()):
            raise ConfigError(f"env: must map names to strings (quote numbers: \"1\"), got {self.env!r}")


@dataclass(frozen=True)
class Out:
    """Something a stage writes (a file or a folder), as DVC tracks it."""

    path: str
    cache: bool = True
    """False for what DVC should leave alone (the token cache: big, and remade on demand)."""
    metric: bool = False
    """A metrics file (``dvc metrics show``): evaluation's metrics.json."""


@dataclass(frozen=True)
class StageSpec:
    """One row of the stage table."""

    name: str
    """Name used in messages, ``--stages``, ``logs/<name>.log``, the stamp file and dvc.yaml."""
    module: str
    """What runs: ``python -m <module>``."""
    args: tuple[str, ...]
    """The arguments after the module, the config's ``extra_args`` for this stage last."""
    outs: tuple[Out, ...]
    """What it writes (DVC's outs and metrics)."""
    done: tuple[str, ...]
    """Glob patterns, relative to the output folder, that must each match a file for the stage to count as done."""
    params: tuple[str, ...] = ()
    """The config files it takes its settings from (their contents are part of its key; DVC's params)."""
    reads: tuple[str, ...] = ()
    """Data it reads from outside the output folder: the raw input, the prompts (DVC deps; for the pipeline,
    their files' sizes and modification times are part of its key)."""
    upstream: tuple[str, ...] = ()
    """Stages whose outputs it reads: when they rerun, so does this one."""
    clean: tuple[str, ...] = ()
    """Paths, relative to the output folder, removed before it runs (stale runs that would be picked up)."""

    def argv(self, python: str = "python") -> list[str]:
        """The command line, ``python`` being the interpreter to name."""
        return [python, "-m", self.module, *self.args]


@dataclass(frozen=True)
class Layout:
    """Where each stage writes, under the pipeline's output folder."""

    root: Path
    run_name: str
    """The training experiment's ``--name``: the run is ``train/<run_name>/version_0``."""

    @property
    def curated(self) -> Path:
        return self.root / "curated"

    @property
    def shards(self) -> Path:
        return self.curated / "data"

    @property
    def tasks(self) -> Path:
        return self.root / "tasks"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def run(self) -> Path:
        return self.train / self.run_name / RUN_VERSION

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def samples(self) -> Path:
        return self.root / "samples.jsonl"


def layout(cfg: PipelineConfig) -> Layout:
    return Layout(Path(cfg.output), run_name(cfg))


def _flag_values(args: tuple[str, ...] | list[str], flag: str) -> list[str]:
    """The values given to ``flag`` in ``args``, as ``--flag VALUE`` or ``--flag=VALUE``, in order."""
    values = [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]
    values += [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
    return values


def run_name(cfg: PipelineConfig) -> str:
    """The training experiment's name: ``--name`` from ``extra_args.train``, else the train config file's name
    (what ``modeling.train`` would pick itself). The pipeline passes it, so the run's folder is known in advance."""
    given = _flag_values(cfg.extra_args.train, "--name")
    return given[-1] if given else Path(cfg.train_config).stem


def raw_inputs(cfg: PipelineConfig) -> list[str]:
    """The curation stage's raw input: ``--input`` in ``extra_args.curation``, else the curation config's ``input``."""
    inputs = _flag_values(cfg.extra_args.curation, "--input")
    if not inputs:
        raw = load_yaml(cfg.curation_config).get("input") if Path(cfg.curation_config).is_file() else None
        inputs = [raw] if isinstance(raw, str) else list(raw or [])
    return inputs


def reads_fingerprint(reads: tuple[str, ...]) -> list[Any]:
    """Sizes and mtimes of the files ``reads`` names (files, folders, globs): cheap, and enough to notice a changed
    or added file. Remote inputs (``hf://``, URLs) are keyed by name only: they cannot be listed cheaply."""
    out: list[Any] = []
    for spec in reads:
        if "://" in spec:
            out.append(spec)
            continue
        p = Path(spec)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
        elif not p.is_file() and not any(c in spec for c in "*?["):
            raise ConfigError(f"{spec} does not exist; fix the path in the pipeline config (or the stage's config)")
        else:
            files = sorted(Path(f) for f in glob.glob(spec, recursive=True) if Path(f).is_file())
        out.append([spec, [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]])
    return out


def stage_table(cfg: PipelineConfig) -> tuple[StageSpec, ...]:
    """The stages, wired to each other's outputs under ``cfg.output``. Curation splits once: the tokenizer and the
    tokenize job read its ``data/`` (the job its ``heldout/`` too), training reads the job's token shards; the
    domain tasks and evaluation read the held-out ``heldout/`` (evaluation names the curation output, which stands
    for its held-out split)."""
    at = layout(cfg)
    x = cfg.extra_args
    shards, tokenizer, run = str(at.shards), str(at.tokenizer), at.run
    return (
        StageSpec(
            name="curation",
            module="curation",
            args=("run", "--config", cfg.curation_config, "--output", str(at.curated), "--overwrite",
                  "--progress", "false", *x.curation),
            outs=(Out(str(at.curated)),),
            done=("curated/_SUCCESS", "curated/report.json", "curated/data/part-*"),
            params=(cfg.curation_config,),
            reads=tuple(raw_inputs(cfg)),
        ),
        StageSpec(
            name="tasks",
            module="modeling.harness",
            args=("tasks", "--data", str(at.curated), "--output", str(at.tasks), *x.tasks),
            outs=(Out(str(at.tasks)),),
            done=("tasks/domain_tasks.json",),
            upstream=("curation",),
        ),
        StageSpec(
            name="tokenizer",
            module="modeling.tokenizer",
            args=("train", "--config", cfg.tokenizer_config, "--input", shards, "--output", tokenizer, *x.tokenizer),
            outs=(Out(tokenizer),),
            done=("tokenizer/tokenizer.json", "tokenizer/train_stats.json"),
            params=(cfg.tokenizer_config,),
            upstream=("curation",),
        ),
        StageSpec(
            name="tokenize",
            module="modeling.tokenize",
            # --overwrite: a rerun replaces the shards this stage wrote before (the tool removes only its own files)
            args=("--config", cfg.tokenize_config, "--input", str(at.curated), "--tokenizer", tokenizer,
                  "--output", str(at.tokens), "--overwrite", "true", "--progress", "false", *x.tokenize),
            outs=(Out(str(at.tokens)),),
            done=("tokens/manifest.json",),
            params=(cfg.tokenize_config,),
            upstream=("curation", "tokenizer"),
        ),
        StageSpec(
            name="train",
            module="modeling.train",
            # The run lands in train/<name>/version_0: the directory is emptied first (clean), so the version
            # number never climbs and evaluation and generation name the run's files without searching.
            # --data.path null: the train config's path gives way to the token shards (nothing is re-tokenized)
            args=("fit", "--config", cfg.train_config, "--name", at.run_name, "--data.path", "null",
                  "--data.token_shards", str(at.tokens), "--data.tokenizer", tokenizer,
                  "--trainer.default_root_dir", str(at.train), *x.train),
            outs=(Out(str(at.train)),),
            done=(_pattern(run / "hf" / "config.json", at), _pattern(run / "checkpoints" / "last.ckpt", at)),
            params=(cfg.train_config,),
            upstream=("tokenizer", "tokenize"),
            clean=("train",),
        ),
        StageSpec(
            name="evaluate",
            module="modeling.evaluate",
            args=("--model", str(run / "hf"), "--data", str(at.curated), "--output", str(at.metrics),
                  *(("--harness_tasks", ",".join(cfg.harness_tasks), "--harness_include", str(at.tasks))
                    if cfg.harness_tasks else ()), *x.evaluate),
            outs=(Out(str(at.metrics), cache=False, metric=True),),
            done=("metrics.json",),
            upstream=("curation", "tasks", "train"),
        ),
        StageSpec(
            name="generate",
            module="modeling.generate",
            args=("--model", str(run / "checkpoints" / "last.ckpt"), "--prompts", cfg.prompts,
                  "--output", str(at.samples), *x.generate),
            outs=(Out(str(at.samples)), Out(str(at.samples.with_suffix(".md")))),
            done=("samples.jsonl",),
            reads=(cfg.prompts,),
            upstream=("train",),
        ),
    )


def _pattern(path: Path, at: Layout) -> str:
    """``path`` as a glob pattern relative to the output folder, matching only itself."""
    return glob.escape(path.relative_to(at.root).as_posix())
