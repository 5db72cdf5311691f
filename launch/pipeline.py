"""The whole chain as one command: curation -> tokenizer -> training -> evaluation -> generation.

Usage::

    python -m launch.pipeline --config configs/pipeline/demo.yaml                 # -> out/pipeline-demo/
    python -m launch.pipeline --config configs/pipeline/demo.yaml --force         # rerun every stage
    python -m launch.pipeline --config configs/pipeline/demo.yaml --stages train,evaluate
    python -m launch.pipeline --config configs/pipeline/demo.yaml --output out/other

The stages are the rows of the stage table (``launch/stages.py``), the same table ``dvc.yaml`` is generated from
(``python -m launch.dvc --write``). Each stage is the project's own command (``python -m curation run``,
``python -m modeling.tokenizer train``, ...) run as a subprocess, so the pipeline adds no second code path: what it
runs is exactly what a user could type, and each command line is printed and logged. A stage is skipped when its
stamp (``<output>/.stamps/<stage>.json``) holds the same input key as now and its outputs exist. The key hashes
the stage's command line (the extra args included), the contents of the files it reads its settings from, the
sizes and mtimes of the data it reads from outside the output folder (the raw input, the prompts) and the keys
of the upstream stages, so changing a stage's config reruns it and everything downstream.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.cli import Command, run_command
from common.config import ConfigError, from_dict, load_yaml
from launch.stages import (
    STAGES,
    PipelineConfig,
    StageArgsConfig,
    StageSpec,
    layout,
    reads_fingerprint,
    stage_table,
)

__all__ = ["STAGES", "PipelineConfig", "Stage", "StageArgsConfig", "StageFailed", "build_stages", "load_config",
           "main", "run_pipeline", "stage_key", "summarize"]

STAMP_DIR = ".stamps"
LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class Stage:
    """One step as the runner sees it: a command and what decides whether it must run again (built from a row of
    the stage table, :mod:`launch.stages`; tests build fake ones)."""

    name: str
    """Name used in messages, ``--stages``, ``logs/<name>.log`` and the stamp file."""
    command: Callable[[], list[str]]
    """Builds the argv when the stage runs."""
    outputs: tuple[str, ...]
    """Glob patterns, relative to the output dir, that must each match a file for the stage to count as done."""
    inputs: tuple[Path, ...] = ()
    """Files whose contents are part of the stage's key (its config files)."""
    upstream: tuple[str, ...] = ()
    """Stages whose keys are part of this stage's key: when they rerun, so does this one."""
    fingerprint: Callable[[], Any] | None = None
    """Extra key material computed at check time (the sizes and mtimes of the data it reads)."""
    clean: tuple[str, ...] = ()
    """Paths, relative to the output dir, removed before the stage runs (stale runs that would be picked up)."""


class StageFailed(RuntimeError):
    """A stage's command exited non-zero."""

    def __init__(self, stage: str, returncode: int, log: Path) -> None:
        super().__init__(f"stage {stage} failed with exit code {returncode}; its log is {log}")
        self.stage = stage
        self.returncode = returncode
        self.log = log


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> PipelineConfig:
    """Read the YAML (strict: unknown keys name the valid ones) and apply CLI overrides (None = not given)."""
    data = load_yaml(path) if path else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(PipelineConfig, data, where=str(path or "pipeline config"))


def to_stage(spec: StageSpec, python: str = sys.executable) -> Stage:
    """The runner's view of a table row: the command with this interpreter, the key's inputs and the done check."""
    argv = spec.argv(python)
    return Stage(
        name=spec.name,
        command=lambda: list(argv),
        outputs=spec.done,
        inputs=tuple(Path(p) for p in spec.params),
        upstream=spec.upstream,
        fingerprint=(lambda: reads_fingerprint(spec.reads)) if spec.reads else None,
        clean=spec.clean,
    )


def build_stages(cfg: PipelineConfig) -> list[Stage]:
    """The stage table (:func:`launch.stages.stage_table`) as runnable stages, in order."""
    return [to_stage(spec) for spec in stage_table(cfg)]


def _file_digest(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; fix the path in the pipeline config")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_stamp(out: Path, name: str) -> dict[str, Any] | None:
    p = out / STAMP_DIR / f"{name}.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # a torn stamp counts as no stamp: the stage reruns


def stage_key(stage: Stage, out: Path, keys: dict[str, str]) -> str:
    """Hash of everything the stage's result depends on.

    The command's argv (interpreter path left out, so a new venv does not rerun everything) covers the
    pipeline's own flags and the extra args; file contents cover the config files; upstream keys chain the
    stages, taken from this run when the upstream stage ran or was checked, else from its stamp on disk.
    """
    upstream = {}
    for name in stage.upstream:
        if name in keys:
            upstream[name] = keys[name]
        else:
            stamp = _read_stamp(out, name)
            upstream[name] = stamp["key"] if stamp else "missing"
    material = {
        "stage": stage.name,
        "command": _command_for_key(stage),
        "inputs": {str(p): _file_digest(p) for p in stage.inputs},
        "upstream": upstream,
        "fingerprint": stage.fingerprint() if stage.fingerprint else None,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def _command_for_key(stage: Stage) -> list[str]:
    argv = stage.command()
    return argv[1:] if argv and argv[0] == sys.executable else list(argv)


def _outputs_exist(stage: Stage, out: Path) -> bool:
    return all(any(out.glob(pattern)) for pattern in stage.outputs)


def _run_logged(argv: list[str], log: Path, env: dict[str, str], stream: bool) -> int:
    """Run ``argv``, copying its output (stdout and stderr merged) to ``log`` and, if ``stream``, to stdout."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(argv) + "\n")
        fh.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                text=True, errors="replace", bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if stream:
                sys.stdout.write("  | " + line)
                sys.stdout.flush()
        return proc.wait()


def _tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    with path.open(encoding="utf-8", errors="replace") as fh:
        return "".join(deque(fh, maxlen=n))


def run_pipeline(cfg: PipelineConfig, stages: Sequence[Stage] | None = None, stream: bool = True) -> dict[str, str]:
    """Run the selected stages in order, skipping those that are up to date; returns stage -> 'ran'/'skipped'.

    ``stages`` defaults to :func:`build_stages`; tests pass fake ones. Raises :class:`StageFailed` when a
    stage's command fails: later stages do not run, and the failed stage's stamp is gone so it reruns next time.
    """
    out = Path(cfg.output)
    all_stages = list(stages) if stages is not None else build_stages(cfg)
    selected = [s for s in all_stages if s.name in cfg.stages]
    keys: dict[str, str] = {}
    result: dict[str, str] = {}
    started = time.perf_counter()
    for i, stage in enumerate(selected, 1):
        key = stage_key(stage, out, keys)
        keys[stage.name] = key
        stamp = _read_stamp(out, stage.name)
        if not cfg.force and stamp and stamp.get("key") == key and _outputs_exist(stage, out):
            print(f"[{i}/{len(selected)}] stage {stage.name} up to date (inputs unchanged), skipping", flush=True)
            result[stage.name] = "skipped"
            continue
        stamp_path = out / STAMP_DIR / f"{stage.name}.json"
        stamp_path.unlink(missing_ok=True)  # until it succeeds, this stage is not up to date
        for rel in stage.clean:
            shutil.rmtree(out / rel, ignore_errors=True)
        argv = stage.command()
        log = out / "logs" / f"{stage.name}.log"
        why = "forced" if cfg.force else ("no stamp" if not stamp else
                                           "inputs changed" if stamp.get("key") != key else "outputs missing")
        print(f"[{i}/{len(selected)}] stage {stage.name} starting ({why}): {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        rc = _run_logged(argv, log, cfg.env, stream)
        seconds = time.perf_counter() - t0
        if rc != 0:
            print(f"[{i}/{len(selected)}] stage {stage.name} FAILED after {seconds:.1f}s (exit code {rc}); "
                  f"last lines of {log}:\n{_tail(log)}", file=sys.stderr, flush=True)
            raise StageFailed(stage.name, rc, log)
        if not _outputs_exist(stage, out):
            print(f"stage {stage.name} exited 0 but did not write {list(stage.outputs)} under {out}; see {log}",
                  file=sys.stderr, flush=True)
            raise StageFailed(stage.name, 1, log)
        stamp_path.parent.mkdir(parents=True, exist_ok=True)
        stamp_path.write_text(json.dumps({"stage": stage.name, "key": key, "command": argv,
                                          "seconds": round(seconds, 2), "finished": time.time()}, indent=1))
        print(f"[{i}/{len(selected)}] stage {stage.name} done in {seconds:.1f}s", flush=True)
        result[stage.name] = "ran"
    print(f"pipeline finished in {time.perf_counter() - started:.1f}s", flush=True)
    return result


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def summarize(cfg: PipelineConfig) -> str:
    """Where every artifact is and the headline numbers, from the files the stages wrote."""
    at = layout(cfg)
    out = at.root
    lines = [f"Artifacts under {out}:"]
    report = _load_json(at.curated / "report.json")
    lines.append(f"  curated shards   {at.shards}  (report: {at.curated / 'report.md'})")
    lines.append(f"  tokenizer        {at.tokenizer}")
    lines.append(f"  token shards     {at.tokens}  (manifest.json)")
    lines.append(f"  training run     {at.run if at.run.is_dir() else at.train}  (hf/, checkpoints/, TensorBoard events)")
    lines.append(f"  metrics          {at.metrics}")
    lines.append(f"  samples          {at.samples}  (+ samples.md)")
    lines.append(f"  logs             {out / 'logs'}")
    lines.append("Headline numbers:")
    if report:
        dropped = report.get("dropped", {})
        rows_in, rows_out = report.get("rows_in", 0), report.get("rows_out", 0)
        reasons = ", ".join(f"{k}={v:,}" for k, v in sorted(dropped.items()))
        lines.append(f"  rows: {rows_in:,} in -> {rows_out:,} kept, {sum(dropped.values()):,} dropped ({reasons})")
        split = report.get("split") or {}
        if split.get("heldout"):
            lines.append(f"  split: {split['train']['docs']:,} documents to train on, {split['heldout']['docs']:,} "
                         f"held out (by {split.get('key')} hash, fraction {split.get('effective_fraction')})")
    stats = _load_json(at.tokenizer / "train_stats.json")
    if stats:
        lines.append(f"  vocab size: {stats.get('vocab_size')} ({stats.get('model')})")
    tokens = _load_json(at.tokens / "manifest.json")
    if tokens:
        lines.append("  token shards: " + ", ".join(f"{split} {info['docs']:,} docs / {info['tokens']:,} tokens"
                                                   for split, info in tokens["splits"].items()))
    metrics = _load_json(at.metrics)
    if metrics:
        m, lm = metrics.get("metrics", {}), metrics.get("details", {}).get("language_modeling", {})
        lines.append(f"  held-out ({lm.get('docs', '?')} documents never trained on): "
                     f"bits per byte {m.get('bits_per_byte', float('nan')):.3f}, "
                     f"perplexity {m.get('perplexity', float('nan')):.3f}, "
                     f"next-token accuracy {m.get('next_token_accuracy', float('nan')):.3f}")
        for row in metrics.get("harness", {}).get("results", []):
            if row.get("metric") in ("acc", "acc_norm") and "_" in row.get("task", ""):
                lines.append(f"  harness {row['task']} ({row['n']} items): {row['metric']} {row['value']:.3f}")
    if at.samples.is_file():
        first = at.samples.read_text(encoding="utf-8").splitlines()[:1]
        if first:
            row = json.loads(first[0])
            lines.append(f"  sample ({row.get('setting')}): {row.get('prompt')!r} -> {row.get('output')!r}")
    return "\n".join(lines)


@dataclass(frozen=True)
class PipelineSwitches:
    """Switches of the command that are not part of the pipeline's config."""

    quiet: bool = False
    """Do not stream the stages' output to the terminal (``logs/<stage>.log`` still has all of it)."""


COMMAND = Command(prog="python -m launch.pipeline", description=__doc__, config=PipelineConfig,
                  flags=PipelineSwitches)
"""Every key of :class:`PipelineConfig` is a flag (``--stages train,evaluate``, ``--extra_args.evaluate
'[--max_docs, "100"]'``), plus ``--quiet``."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (a failed stage's own, 2 for a config the pipeline cannot use)."""

    def run(cfg: PipelineConfig, switches: PipelineSwitches) -> int:
        try:
            result = run_pipeline(cfg, stream=not switches.quiet)
        except StageFailed as e:
            print(f"error: {e}", file=sys.stderr)
            return e.returncode
        ran = [k for k, v in result.items() if v == "ran"]
        print(f"ran: {', '.join(ran) or 'nothing (everything up to date)'}")
        print(summarize(cfg))
        return 0

    return run_command(COMMAND, argv, run)


if __name__ == "__main__":
    sys.exit(main())
