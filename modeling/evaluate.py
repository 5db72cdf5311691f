"""Score a trained model on held-out data: perplexity, next-token accuracy, task metrics on generations.

Two kinds of data, told apart by their columns (any mix of parquet, jsonl[.gz] and, for the first kind, txt):

- documents (``--text-column``, default ``text``; curated shards as they are): ``perplexity`` and
  ``next_token_accuracy`` over fixed-length blocks, packed exactly as training packs them (documents tokenized
  without special tokens, joined by eos, cut into ``--block-size`` blocks; by default the training block size
  the checkpoint or the export's ``training.json`` records), so the number is the one training logs as
  ``val_ppl`` when the data and block size are the same;
- prompts with references (``--prompt-column``, ``--references-column``; a reference is a string or a list of
  acceptable strings): the model continues each prompt (greedy unless ``--decoding`` says otherwise) and
  torchmetrics compares the continuation with the references: ``accuracy`` (exact match) and ``f1`` (token
  overlap), both after SQuAD's normalisation; ``bleu`` (corpus BLEU-4); ``rouge`` (ROUGE-1/2/L).

Usage::

    python -m modeling.evaluate --model runs/tiny-cpu/version_0/hf --data data/heldout \
        --output out/metrics.json
    python -m modeling.evaluate --model runs/tiny-cpu/version_0/checkpoints/last.ckpt \
        --data 'data/qa/*.jsonl' \
        --metrics accuracy,f1,bleu,rouge --prompt-column question --references-column answers --first-line
    python -m modeling.evaluate --model runs/lora/version_0/hf --data data/heldout \
        --device cuda --dtype bfloat16

Without ``--metrics`` every metric the data's columns allow is computed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.text import BLEUScore, SQuAD
from torchmetrics.text.rouge import ROUGEScore
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from curation.paths import InputError, detect_format
from modeling.corpus import TEXT_FORMATS, iter_json_lines, iter_text_batches, open_text, resolve_corpus_files
from modeling.export import ModelLoadError, max_positions, trained_block_size
from modeling.generate import (
    DecodingSetting,
    GenerateError,
    add_model_arguments,
    derive_seed,
    generate_batch,
    iter_batches,
    load_model,
)
from modeling.module import IGNORE_INDEX, TokenPerplexity

log = logging.getLogger("modeling.evaluate")

#: Metrics computed from the model's next-token predictions on documents.
LM_METRICS = ("perplexity", "next_token_accuracy")
#: Metrics comparing generated continuations of prompts with references.
TASK_METRICS = ("accuracy", "f1", "bleu", "rouge")
#: ROUGE variants reported. rougeLsum is left out: it splits sentences with nltk's punkt, a download.
ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")
#: Longest default block when neither the model's files nor the tokenizer say how long training blocks were.
DEFAULT_MAX_BLOCK = 1024


class EvaluateError(ValueError):
    """Evaluation cannot run with the given data or options. The message names the flag or file to fix."""


@dataclass(frozen=True)
class EvaluateConfig:
    """Everything one ``python -m modeling.evaluate`` run needs; the flags map one to one."""

    model: str
    """A Lightning ``.ckpt``, a Hugging Face model directory or a PEFT adapter directory."""
    data: tuple[str, ...]
    """Held-out files, directories or globs (parquet, jsonl[.gz]; txt for documents only)."""
    metrics: tuple[str, ...] | None = None
    """Subset of LM_METRICS + TASK_METRICS; None computes all that the data's columns allow."""
    text_column: str = "text"
    """Column holding the documents for perplexity and next-token accuracy."""
    prompt_column: str = "prompt"
    """Column holding the prompts the model continues for the task metrics."""
    references_column: str = "reference"
    """Column holding the reference answer: a string, or a list of acceptable strings."""
    block_size: int | None = None
    """Tokens per perplexity block. None: the training run's ``data.block_size`` as the checkpoint or the
    export's ``training.json`` records it, else the tokenizer's ``model_max_length`` (exports before
    ``training.json`` kept the block size there; other models keep their context there), else the model's
    positions (at most 1024)."""
    batch_size: int = 8
    """Blocks (perplexity) or prompts (task metrics) per forward / generate call."""
    max_docs: int | None = None
    """Read at most this many documents and this many prompt rows (a quick estimate)."""
    max_new_tokens: int = 32
    """Longest generated answer for the task metrics."""
    decoding: str = "greedy"
    """Decoding setting for the task metrics, as in ``modeling.generate --settings`` (e.g. ``t0.7_p0.9``)."""
    seed: int = 0
    """Seed of the sampling when ``decoding`` samples."""
    first_line: bool = False
    """Score only the first line of each generation (one-line answers; the model may ramble on after)."""
    output: str = "metrics.json"
    """Where the metrics JSON is written."""
    predictions: str | None = None
    """Also write each prompt, its references and the model's answer to this JSONL, for error analysis."""
    device: str = "auto"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (the GPU when there is one)."""
    dtype: str = "auto"
    """Weights dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (float32 on CPU, bf16 on a GPU)."""
    tokenizer: str | None = None
    """Tokenizer directory overriding the one saved with the model (or recorded in the checkpoint)."""
    log_every: int = 20
    """Log progress every this many batches."""


# -------------------------------------------------------------------------------------------- data
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
    """Resolve ``--data`` to files and read each file's columns once."""
    files = resolve_corpus_files(list(data))
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


def iter_blocks(
    text_batches: Iterable[list[str]], tokenizer: PreTrainedTokenizerBase, block_size: int
) -> Iterator[list[int]]:
    """Pack documents as training does: tokens without special tokens, eos after each document, cut every
    ``block_size`` tokens. The final block may be shorter."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise EvaluateError(
            "the tokenizer has no eos token, which separates documents in a block; pass a "
            "tokenizer with one (--tokenizer)"
        )
    buf: list[int] = []
    for texts in text_batches:
        for ids in tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)[
            "input_ids"
        ]:
            buf.extend(ids)
            buf.append(eos)
        full = len(buf) // block_size * block_size
        for start in range(0, full, block_size):
            yield buf[start : start + block_size]
        buf = buf[full:]
    if buf:
        yield buf


class TaskRows:
    """Batches of (prompt, references) from the data files.

    Rows without a prompt or a reference are skipped and counted in ``skipped`` rather than failing a long run
    on one bad row; the count goes into the metrics file.
    """

    def __init__(
        self,
        files: Sequence[Path],
        prompt_column: str,
        references_column: str,
        batch_size: int,
        max_rows: int | None = None,
    ) -> None:
        self.files = files
        self.columns = (prompt_column, references_column)
        self.batch_size = batch_size
        self.max_rows = max_rows
        self.skipped = 0

    def __iter__(self) -> Iterator[list[tuple[str, list[str]]]]:
        rows = (
            self._pair(row) for path in self.files for row in _iter_rows(path, self.columns, self.batch_size)
        )
        good = (pair for pair in rows if pair is not None)
        if self.max_rows is not None:
            good = itertools.islice(good, self.max_rows)
        yield from iter_batches(good, self.batch_size)

    def _pair(self, row: dict[str, Any]) -> tuple[str, list[str]] | None:
        prompt, refs = row.get(self.columns[0]), row.get(self.columns[1])
        refs = [refs] if isinstance(refs, str) else refs
        if (
            not isinstance(prompt, str)
            or not prompt
            or not isinstance(refs, list)
            or not refs
            or not all(isinstance(r, str) for r in refs)
        ):
            self.skipped += 1
            return None
        return prompt, refs


def _iter_rows(path: Path, columns: Sequence[str], batch_size: int) -> Iterator[dict[str, Any]]:
    if detect_format(path) == "parquet":
        for rb in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=list(columns)):
            yield from rb.to_pylist()
        return
    for _, row in iter_json_lines(path, EvaluateError, errors="replace"):
        yield row if isinstance(row, dict) else {}


# ----------------------------------------------------------------------------------------- metrics
def choose_block_size(
    requested: int | None, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, model_path: str
) -> tuple[int, str]:
    """The block length and where it came from (logged and written to the metrics file)."""
    limit = max_positions(model)
    if requested is not None:
        block, source = requested, "--block-size"
    elif (trained := _checkpoint_block_size(model_path)) is not None:
        block, source = trained, "the checkpoint's data.block_size"
    elif (trained := trained_block_size(model_path)) is not None:
        block, source = trained, "the export's training.json"
    elif 1 < (tokenizer.model_max_length or 0) < 1_000_000:
        block, source = int(tokenizer.model_max_length), "the tokenizer's model_max_length"
    else:
        block, source = min(limit or DEFAULT_MAX_BLOCK, DEFAULT_MAX_BLOCK), "the model's positions"
        log.warning(
            "the block size is not recorded with the model: using %d (%s). Pass --block-size with the "
            "training data.block_size to compare with val_ppl",
            block,
            source,
        )
    if block < 2:
        raise EvaluateError(
            f"--block-size must be at least 2 (one token to read, one to predict), got {block}"
        )
    if limit is not None and block > limit:
        raise EvaluateError(
            f"block size {block} (from {source}) exceeds the model's {limit} positions: pass "
            f"--block-size {limit} or less"
        )
    return block, source


def _checkpoint_block_size(model_path: str) -> int | None:
    path = Path(model_path).expanduser()
    if not (path.is_file() and path.suffix == ".ckpt"):
        return None
    # mmap: only the small hyperparameter dict is actually read, not the weights.
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    value = (state.get("datamodule_hyper_parameters") or {}).get("block_size")
    return int(value) if isinstance(value, int) else None


def language_model_metrics(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    files: Sequence[Path],
    text_column: str,
    block_size: int,
    batch_size: int = 8,
    max_docs: int | None = None,
    log_every: int = 20,
) -> dict[str, float | int]:
    """Perplexity = exp(mean NLL over every predicted token), and next-token accuracy, over packed blocks.

    Each block predicts its tokens 2..n from the ones before; padding of the final short block is masked out
    and never scored. The mean is over tokens, not blocks, so the short last block weighs what it holds.
    """
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # The training module's own metrics: the same definition as val_loss / val_ppl / val_acc.
    loss_metric, ppl_metric, acc_metric = (
        MeanMetric().to(device),
        TokenPerplexity().to(device),
        MeanMetric().to(device),
    )
    docs = 0

    def counted(batches: Iterable[list[str]]) -> Iterator[list[str]]:
        nonlocal docs
        for texts in batches:
            docs += len(texts)
            yield texts

    texts = counted(iter_text_batches(files, text_column, batch_size=1000, max_docs=max_docs))
    blocks = (b for b in iter_blocks(texts, tokenizer, block_size) if len(b) > 1)
    n_blocks = tokens = 0
    start = time.perf_counter()
    for step, batch in enumerate(iter_batches(blocks, batch_size), 1):
        ids = torch.full((len(batch), max(map(len, batch))), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, block in enumerate(batch):
            ids[row, : len(block)] = torch.tensor(block)
            mask[row, : len(block)] = 1
        ids, mask = ids.to(device), mask.to(device)
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
        targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            # One row at a time in float32: a whole (batch, time, vocab) float copy can exceed GPU memory.
            nll = sum(
                F.cross_entropy(logits[r].float(), targets[r], ignore_index=IGNORE_INDEX, reduction="sum")
                for r in range(len(batch))
            )
            keep = targets != IGNORE_INDEX
            n = int(keep.sum())
            correct = (logits.argmax(-1) == targets)[keep].float()
            loss_metric.update(nll / n, n)
            ppl_metric.update(nll / n, n)
            acc_metric.update(correct)
        n_blocks += len(batch)
        tokens += n
        if step % log_every == 0:
            log.info(
                "perplexity: %d blocks, %d tokens, running ppl %.3f, %.0f tokens/s",
                n_blocks,
                tokens,
                float(ppl_metric.compute()),
                tokens / (time.perf_counter() - start),
            )
    if tokens == 0:
        raise EvaluateError(
            f"no tokens to score in column {text_column!r} of {[str(f) for f in files[:3]]}: the "
            "data is empty or every document is blank"
        )
    log.info("perplexity: done, %d docs, %d blocks, %d predicted tokens", docs, n_blocks, tokens)
    return {
        "perplexity": float(ppl_metric.compute()),
        "loss": float(loss_metric.compute()),
        "next_token_accuracy": float(acc_metric.compute()),
        "tokens": tokens,
        "blocks": n_blocks,
        "docs": docs,
    }


def _rouge_normalizer(text: str) -> str:
    """rouge_score's normalisation (lower case, non-alphanumerics to spaces) for every script, not only
    a-z0-9: the default would erase all non-ASCII text and score a German or Greek answer as empty."""
    return re.sub(r"[\W_]+", " ", text.lower())


class TaskMetrics:
    """Exact match, token F1, BLEU and ROUGE over (prediction, references) pairs, with torchmetrics.

    - ``accuracy``: share of predictions equal to some reference after SQuAD normalisation (lower case, no
      punctuation, no English articles, single spaces);
    - ``f1``: token-overlap F1 of the normalised prediction and its best reference, averaged over examples;
    - ``bleu``: corpus BLEU-4 on whitespace tokens, uniform weights, brevity penalty, no smoothing;
    - ``rouge``: ROUGE-1/2/L precision, recall and F-measure against the best reference, averaged over
      examples.

    All are fractions in [0, 1] (torchmetrics' SQuAD gives percentages; they are divided by 100 here).
    """

    def __init__(self, metrics: Sequence[str]) -> None:
        self.metrics = tuple(metrics)
        self.squad = SQuAD() if {"accuracy", "f1"} & set(metrics) else None
        self.bleu = BLEUScore(n_gram=4) if "bleu" in metrics else None
        self.rouge = (
            ROUGEScore(rouge_keys=ROUGE_KEYS, normalizer=_rouge_normalizer) if "rouge" in metrics else None
        )
        self.count = 0

    def update(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        if self.squad is not None:
            ids = [str(self.count + i) for i in range(len(predictions))]
            self.squad.update(
                [{"prediction_text": p, "id": i} for p, i in zip(predictions, ids, strict=True)],
                [
                    {"answers": {"text": list(r), "answer_start": [0] * len(r)}, "id": i}
                    for r, i in zip(references, ids, strict=True)
                ],
            )
        if self.bleu is not None:
            self.bleu.update(list(predictions), [list(r) for r in references])
        if self.rouge is not None:
            self.rouge.update(list(predictions), [list(r) for r in references])
        self.count += len(predictions)

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.squad is not None:
            squad = self.squad.compute()
            if "accuracy" in self.metrics:
                out["accuracy"] = float(squad["exact_match"]) / 100
            if "f1" in self.metrics:
                out["f1"] = float(squad["f1"]) / 100
        if self.bleu is not None:
            out["bleu"] = float(self.bleu.compute())
        if self.rouge is not None:
            out.update({k: float(v) for k, v in sorted(self.rouge.compute().items())})
        return out


def task_metrics(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    files: Sequence[Path],
    cfg: EvaluateConfig,
    metrics: Sequence[str],
) -> dict[str, float | int]:
    """Generate an answer for every prompt and score it against the references."""
    setting = DecodingSetting.parse(cfg.decoding)
    scorer = TaskMetrics(metrics)
    rows = TaskRows(files, cfg.prompt_column, cfg.references_column, cfg.batch_size, cfg.max_docs)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if cfg.predictions:
            Path(cfg.predictions).parent.mkdir(parents=True, exist_ok=True)
        rows_out = (
            stack.enter_context(open(cfg.predictions, "w", encoding="utf-8")) if cfg.predictions else None
        )
        for step, batch in enumerate(rows, 1):
            prompts = [p for p, _ in batch]
            torch.manual_seed(derive_seed(cfg.seed, setting.name, step))
            samples = generate_batch(model, tokenizer, prompts, setting, cfg.max_new_tokens)
            answers = [clean_answer(s.output, cfg.first_line) for s in samples]
            scorer.update(answers, [refs for _, refs in batch])
            if rows_out is not None:
                for (prompt, refs), answer, s in zip(batch, answers, samples, strict=True):
                    rows_out.write(
                        json.dumps(
                            {
                                "prompt": prompt,
                                "references": refs,
                                "prediction": answer,
                                "generated": s.output,
                                "mean_logprob": s.mean_logprob,
                            },
                            ensure_ascii=False,
                        )
                        + "\n"
                    )
            if step % cfg.log_every == 0:
                log.info(
                    "task: %d prompts answered, %.1f prompts/s",
                    scorer.count,
                    scorer.count / (time.perf_counter() - start),
                )
    if scorer.count == 0:
        raise EvaluateError(
            f"no usable rows in {[str(f) for f in files[:3]]}: every row lacks a non-empty "
            f"{cfg.prompt_column!r} or {cfg.references_column!r} ({rows.skipped} skipped)"
        )
    if rows.skipped:
        log.warning("task: skipped %d rows without a prompt or references", rows.skipped)
    log.info("task: done, %d prompts", scorer.count)
    return {**scorer.compute(), "examples": scorer.count, "skipped_rows": rows.skipped}


def clean_answer(text: str, first_line: bool) -> str:
    """The part of a generation that is scored: stripped, and cut at the first line break if asked."""
    text = text.strip()
    return text.split("\n", 1)[0].strip() if first_line else text


# ---------------------------------------------------------------------------------------------- run
def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Load the model once, compute the chosen metrics, write ``cfg.output``; returns what was written."""
    if cfg.batch_size < 1 or cfg.max_new_tokens < 1:
        raise EvaluateError(
            f"--batch-size and --max-new-tokens must be at least 1, got {cfg.batch_size} and "
            f"{cfg.max_new_tokens}"
        )
    files, columns = resolve_data(cfg.data)
    lm, task = choose_metrics(cfg.metrics, columns, cfg)
    DecodingSetting.parse(cfg.decoding)  # a typo fails before the model loads
    start = time.perf_counter()
    model, tokenizer = load_model(cfg.model, cfg.device, cfg.dtype, cfg.tokenizer)
    device = next(model.parameters()).device
    log.info("model %s on %s (%s); metrics %s", cfg.model, device, model.dtype, ", ".join(lm + task))
    result: dict[str, Any] = {"metrics": {}, "details": {}}
    if lm:
        text_files = [f for f in files if cfg.text_column in columns[f] or detect_format(f) == "text"]
        block, source = choose_block_size(cfg.block_size, model, tokenizer, cfg.model)
        out = language_model_metrics(
            model, tokenizer, text_files, cfg.text_column, block, cfg.batch_size, cfg.max_docs, cfg.log_every
        )
        result["metrics"].update({k: out[k] for k in lm})
        result["details"]["language_modeling"] = {
            "loss": out["loss"],
            "tokens": out["tokens"],
            "blocks": out["blocks"],
            "docs": out["docs"],
            "block_size": block,
            "block_size_from": source,
            "files": len(text_files),
        }
    if task:
        task_files = [
            f for f in files if cfg.prompt_column in columns[f] and cfg.references_column in columns[f]
        ]
        out = task_metrics(model, tokenizer, task_files, cfg, task)
        result["metrics"].update({k: v for k, v in out.items() if k not in ("examples", "skipped_rows")})
        result["details"]["task"] = {
            "examples": out["examples"],
            "skipped_rows": out["skipped_rows"],
            "decoding": cfg.decoding,
            "max_new_tokens": cfg.max_new_tokens,
            "first_line": cfg.first_line,
            "files": len(task_files),
        }
    result["run"] = {
        "model": str(cfg.model),
        "data": [str(f) for f in files],
        "device": str(device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "batch_size": cfg.batch_size,
        "max_docs": cfg.max_docs,
        "seconds": round(time.perf_counter() - start, 2),
    }
    out_path = Path(cfg.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("wrote %s: %s", out_path, ", ".join(f"{k}={v:.4g}" for k, v in result["metrics"].items()))
    return result


def parser() -> argparse.ArgumentParser:
    d = EvaluateConfig(model="", data=())
    p = argparse.ArgumentParser(
        prog="python -m modeling.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, nargs="+", help="held-out files, directories or globs")
    p.add_argument(
        "--metrics",
        help=f"comma-separated subset of {','.join(LM_METRICS + TASK_METRICS)} "
        "(default: all the data's columns allow)",
    )
    p.add_argument("--text-column", default=d.text_column, help="documents column (default: text)")
    p.add_argument("--prompt-column", default=d.prompt_column, help="prompts column (default: prompt)")
    p.add_argument(
        "--references-column",
        default=d.references_column,
        help="references column, a string or a list of strings per row (default: reference)",
    )
    p.add_argument(
        "--block-size",
        type=int,
        help="tokens per perplexity block (default: the training block size the checkpoint or the "
        "export's training.json records, else the tokenizer's model_max_length, else the model's "
        "positions up to 1024)",
    )
    p.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="blocks or prompts per batch (default 8)"
    )
    p.add_argument("--max-docs", type=int, help="read at most this many documents / prompt rows")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="longest answer (default 32)")
    p.add_argument(
        "--decoding", default=d.decoding, help="greedy (default) or a sampling setting like t0.7_p0.9"
    )
    p.add_argument(
        "--seed", type=int, default=d.seed, help="sampling seed when --decoding samples (default 0)"
    )
    p.add_argument("--first-line", action="store_true", help="score only the first line of each answer")
    p.add_argument("--output", default=d.output, help="metrics JSON (default: metrics.json)")
    p.add_argument("--predictions", help="also write prompt, references and answer per row to this JSONL")
    add_model_arguments(p, d.log_every)
    return p


def config_from_args(a: argparse.Namespace) -> EvaluateConfig:
    metrics = tuple(m.strip() for m in a.metrics.split(",") if m.strip()) if a.metrics else None
    values = {k: v for k, v in vars(a).items() if k not in ("metrics", "data")}
    return EvaluateConfig(data=tuple(a.data), metrics=metrics, **values)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a usage error, with the message on stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        result = evaluate(config_from_args(args))
    except (EvaluateError, GenerateError, ModelLoadError, InputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result["metrics"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
