"""Which ``--data`` files feed which metrics: documents for perplexity, prompt/reference rows for the task metrics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from common.files import InputError, detect_format
from modeling.corpus import TEXT_FORMATS, open_text, resolve_corpus_files
from modeling.evaluation.config import LM_METRICS, TASK_METRICS, EvaluateConfig, EvaluateError
from modeling.heldout import heldout_inputs


def columns_of(path: Path) -> list[str]:
    """Column names of a shard (a plain-text file has none: it is one document)."""
    fmt = detect_format(path)
    if fmt == "parquet":
        return list(pq.read_schema(path).names)
    if fmt == "jsonl":
        with open_text(path, errors="replace") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise EvaluateError(f"{path}:{n}: not valid JSON ({err})") from err
                    return list(row) if isinstance(row, dict) else []
        return []
    return []


def resolve_data(data: Sequence[str]) -> tuple[list[Path], dict[Path, list[str]]]:
    """Resolve ``--data`` to files and read each file's columns once; a curation output folder stands for its
    held-out split (:func:`modeling.heldout.heldout_inputs`)."""
    files = resolve_corpus_files(heldout_inputs(list(data)))
    unknown = [str(f) for f in files if detect_format(f) not in TEXT_FORMATS]
    if unknown:
        raise InputError(f"--data: cannot read {unknown[:5]}: use .parquet, .jsonl[.gz] or .txt files")
    return files, {f: columns_of(f) for f in files}


def choose_metrics(
    requested: Sequence[str] | None, columns: dict[Path, list[str]], cfg: EvaluateConfig
) -> tuple[list[str], list[str]]:
    """Split the metrics into (LM, task) and check the data against them.

    Files may mix kinds (curated shards next to a prompts file): documents feed the LM metrics,
    prompt/reference rows the task metrics. Every requested kind needs at least one file with its columns,
    and every file must serve some requested kind; a file that serves none is an error, not silently ignored.
    """
    unknown = [m for m in requested or () if m not in LM_METRICS + TASK_METRICS]
    if unknown:
        raise EvaluateError(
            f"--metrics: unknown {unknown}; choose from {', '.join(LM_METRICS + TASK_METRICS)}"
        )
    task_cols = [cfg.prompt_column, cfg.references_column]
    # a plain-text file is one document whatever --text-column says (modeling.corpus reads it whole)
    has_text = {f for f, cols in columns.items() if cfg.text_column in cols or detect_format(f) == "text"}
    has_task = {f for f, cols in columns.items() if all(c in cols for c in task_cols)}
    if requested is None:
        lm, task = (list(LM_METRICS) if has_text else []), (list(TASK_METRICS) if has_task else [])
    else:
        lm, task = [m for m in requested if m in LM_METRICS], [m for m in requested if m in TASK_METRICS]
    fix = (
        "Name the right columns with --text-column (documents, for perplexity) or --prompt-column and "
        "--references-column (for the task metrics)"
    )
    if lm and not has_text:
        path, cols = next(iter(columns.items()))
        raise EvaluateError(
            f"--metrics {','.join(lm)} needs documents in column {cfg.text_column!r}, but no --data "
            f"file has it ({path} has {cols}). {fix}."
        )
    if task and not has_task:
        path, cols = next(iter(columns.items()))
        hint = "; next-token accuracy on documents is next_token_accuracy" if "accuracy" in task else ""
        raise EvaluateError(
            f"--metrics {','.join(task)} compares generations with references and needs columns "
            f"{task_cols}, but no --data file has both ({path} has {cols}). {fix}{hint}."
        )
    served = (has_text if lm else set()) | (has_task if task else set())
    unused = [f for f in columns if f not in served]
    if unused or not (lm or task):
        path = unused[0] if unused else next(iter(columns))
        wanted = ", ".join(lm + task) or "perplexity or the task metrics"
        raise EvaluateError(
            f"--data: {path} has columns {columns[path]}, none of which {wanted} can use "
            f"(documents: {cfg.text_column!r}; prompts: {task_cols}). {fix}, or leave the file out."
        )
    return lm, task

