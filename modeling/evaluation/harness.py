"""lm-evaluation-harness, in process, on any model form ``modeling.inference.load_model`` opens.

People compare small LMs on the harness's tasks (HellaSwag, ARC, LAMBADA, PIQA, WinoGrande, wikitext); litgpt,
torchtune and axolotl call it in process, and so do we: the model is loaded once by our loader (a Lightning
``.ckpt``, a Hugging Face folder, a PEFT adapter), wrapped in lm-eval's ``HFLM``, and scored on the tasks named,
the hub's or local ones from ``include_path`` (such as the domain tasks of
:mod:`modeling.evaluation.domain_tasks`). The result is a compact table (task, metric, value, stderr, n) written
as JSON and Markdown.

lm-eval is a dependency of the project, imported inside the functions (its import costs seconds that perplexity
alone should not pay); an environment without it gets a one-line error that names the command to run.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from common.errors import UserError
from modeling.inference import load_model

log = logging.getLogger("modeling.evaluate")

INSTALL_HINT = "pip install 'lm-eval>=0.4.13,<0.5' (a dependency of this project: pip install -e . installs it)"


class HarnessError(UserError):
    """The harness cannot run with the given model, tasks or options; the message says what to change."""


@dataclass(frozen=True)
class HarnessConfig:
    """One lm-evaluation-harness run on one model: ``python -m modeling.harness run`` (every field a flag)."""

    model: str
    """A Lightning ``.ckpt``, a Hugging Face model directory or a PEFT adapter directory."""
    tasks: tuple[str, ...]
    """lm-eval task, group or tag names: hub tasks (``hellaswag``, ``arc_easy``, ``lambada_openai``, ``piqa``,
    ``winogrande``, ``wikitext``; these download their data) or tasks under ``include_path``."""
    include_path: tuple[str, ...] = ()
    """Folders of extra task YAMLs, e.g. the folder the domain tasks were written to."""
    output: str | None = None
    """JSON file for the results table; the Markdown table goes next to it (same name, ``.md``)."""
    tokenizer: str | None = None
    """Tokenizer directory, overriding the one found with the model."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto (the GPU when there is one)."""
    dtype: str = "auto"
    """float32, bfloat16, float16 or auto (bfloat16 on GPUs that support it, else float32)."""
    batch_size: int = 8
    """Requests per forward pass."""
    max_length: int | None = None
    """Longest input in tokens (lm-eval truncates contexts from the left). None: the model's positions."""
    num_fewshot: int | None = None
    """Examples from the task's own split placed before each question; None keeps each task's default (0 for
    the domain tasks, which have only a test split)."""
    limit: int | None = None
    """Score at most this many items per task: a quick look, not a number to report."""
    bootstrap_iters: int = 1000
    """Bootstrap resamples for the stderr of metrics without a closed form (0: no stderr for those)."""
    seed: int = 0
    """Seed of Python, NumPy and torch for lm-eval (few-shot sampling, any sampling in generation tasks)."""


@dataclass(frozen=True)
class ResultRow:
    """One metric of one task: the table's row."""

    task: str
    metric: str
    """lm-eval's metric name, with its filter when not the default (``exact_match,strict-match``)."""
    value: float
    stderr: float | None
    """Standard error of ``value``; None where lm-eval computed none."""
    n: int
    """Items scored."""


def require_lm_eval() -> Any:
    """The ``lm_eval`` module, or a :class:`HarnessError` saying how to install it."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM  # noqa: F401  (its import needs accelerate et al.)
    except ImportError as err:
        raise HarnessError(f"the lm-evaluation-harness is not installed ({err}): {INSTALL_HINT}") from err
    return lm_eval


def wrap_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int = 8,
    max_length: int | None = None,
) -> Any:
    """The loaded model as lm-eval's ``HFLM`` (``pretrained`` given as the object, so lm-eval loads nothing)."""
    require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    if batch_size < 1:
        raise HarnessError(f"batch_size must be at least 1, got {batch_size}")
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)


def evaluate_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: HarnessConfig
) -> tuple[list[ResultRow], dict[str, Any]]:
    """Run the tasks of ``cfg`` on a model already loaded (a training callback can call this); returns the
    table and lm-eval's own results dict (without per-sample logs)."""
    lm_eval = require_lm_eval()
    if not cfg.tasks:
        raise HarnessError("tasks is empty: name at least one lm-eval task, e.g. domain_cloze or hellaswag")
    for folder in cfg.include_path:
        if not Path(folder).expanduser().is_dir():
            raise HarnessError(f"include_path {folder!r} is not a folder of task YAMLs")
    manager = task_manager(cfg.tasks, cfg.include_path)
    unknown = [t for t in cfg.tasks if not manager.match_tasks([t])]
    if unknown:
        where = f" or in {list(cfg.include_path)}" if cfg.include_path else " (pass include_path for local tasks)"
        raise HarnessError(
            f"tasks {unknown}: lm-eval knows no such task, group or tag{where}. `lm_eval ls tasks` lists them"
        )
    lm = wrap_model(model, tokenizer, cfg.batch_size, cfg.max_length)
    try:
        results = _simple_evaluate(lm_eval, lm, manager, cfg)
    except ConnectionError as err:  # datasets' "Couldn't reach 'allenai/ai2_arc' on the Hub"
        raise HarnessError(
            f"{err}: tasks {list(cfg.tasks)} read their data from the Hugging Face hub, which this machine does "
            "not reach. Run them where the hub is reachable, or fill HF_DATASETS_CACHE there and set "
            "HF_DATASETS_OFFLINE=1 here; local tasks (write_domain_tasks) need no hub"
        ) from err
    if results is None:  # only on a non-zero rank of a distributed run
        return [], {}
    return results_table(results), results


def _simple_evaluate(lm_eval: Any, lm: Any, manager: Any, cfg: HarnessConfig) -> dict[str, Any] | None:
    return lm_eval.simple_evaluate(
        model=lm,
        tasks=list(cfg.tasks),
        task_manager=manager,
        num_fewshot=cfg.num_fewshot,
        limit=cfg.limit,
        bootstrap_iters=cfg.bootstrap_iters,
        log_samples=False,
        random_seed=cfg.seed,
        numpy_random_seed=cfg.seed,
        torch_random_seed=cfg.seed,
        fewshot_random_seed=cfg.seed,
    )


def task_manager(tasks: Sequence[str], include_path: Sequence[str]) -> Any:
    """lm-eval's ``TaskManager`` for ``include_path``. When every task is found there, lm-eval's own ~15,000
    task YAMLs are not indexed: that takes ~7 s, longer than running the domain tasks on a small model."""
    from lm_eval.tasks import TaskManager

    paths = [str(Path(p).expanduser()) for p in include_path]
    if paths:
        local = TaskManager(include_path=paths, include_defaults=False)
        if all(local.match_tasks([t]) for t in tasks):
            return local
    return TaskManager(include_path=paths or None)


def results_table(results: dict[str, Any]) -> list[ResultRow]:
    """Flatten lm-eval's ``results`` (``{"task": {"acc,none": v, "acc_stderr,none": s, ...}}``) to rows, in the
    order lm-eval reports the tasks. Groups' aggregate rows are kept; their n is the sum of their tasks'."""
    n_samples = results.get("n-samples", {})
    rows = []
    for task, metrics in results.get("results", {}).items():
        n = int(n_samples.get(task, {}).get("effective", 0))
        if task in results.get("groups", {}) and not n:
            n = sum(int(n_samples.get(t, {}).get("effective", 0)) for t in results.get("group_subtasks", {})
                    .get(task, []))
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            name, _, filt = key.partition(",")
            stderr = metrics.get(f"{name}_stderr,{filt}")
            rows.append(ResultRow(
                task=task,
                metric=name if filt == "none" else key,
                value=float(value),
                stderr=float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None,
                n=n,
            ))
    return rows


def run_harness(cfg: HarnessConfig) -> dict[str, Any]:
    """Load ``cfg.model`` with the shared loader, run the tasks, write ``cfg.output`` (+ ``.md``) when given;
    returns what was (or would be) written as JSON."""
    require_lm_eval()
    start = time.perf_counter()
    model, tokenizer = load_model(cfg.model, cfg.device, cfg.dtype, cfg.tokenizer)
    loaded = time.perf_counter()
    rows, raw = evaluate_model(model, tokenizer, cfg)
    import lm_eval

    report = {
        "model": cfg.model,
        "tasks": list(cfg.tasks),
        "results": [asdict(r) for r in rows],
        "versions": raw.get("versions", {}),
        "lm_eval_version": getattr(lm_eval, "__version__", None),
        "device": str(next(model.parameters()).device),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "seconds": {"load": round(loaded - start, 3), "evaluate": round(time.perf_counter() - loaded, 3)},
        "config": asdict(cfg),
    }
    if cfg.output:
        write_results(report, cfg.output)
    return report


def markdown_table(rows: Sequence[ResultRow]) -> str:
    """The table as GitHub Markdown, values to 4 decimals, a missing stderr as an empty cell."""
    lines = ["| task | metric | value | stderr | n |", "|---|---|---:|---:|---:|"]
    for r in rows:
        stderr = f"{r.stderr:.4f}" if r.stderr is not None else ""
        lines.append(f"| {r.task} | {r.metric} | {r.value:.4f} | {stderr} | {r.n} |")
    return "\n".join(lines) + "\n"


def write_results(report: dict[str, Any], output: str | Path) -> tuple[Path, Path]:
    """Write the report as JSON at ``output`` and its table as Markdown next to it; returns both paths."""
    path = Path(output).expanduser()
    if path.suffix != ".json":
        raise HarnessError(f"output {str(output)!r}: name a .json file (the Markdown table goes next to it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    rows = [ResultRow(**r) for r in report["results"]]
    md = path.with_suffix(".md")
    md.write_text(
        f"# lm-evaluation-harness: {report['model']}\n\n{markdown_table(rows)}\n"
        f"lm-eval {report.get('lm_eval_version')}, {report.get('device')}, {report.get('dtype')}; "
        f"{report['seconds']['evaluate']:.1f} s evaluating\n"
    )
    return path, md
