"""Task metrics: the model answers each prompt, torchmetrics compares the answers with the references."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
from torchmetrics.text import BLEUScore, SQuAD
from torchmetrics.text.rouge import ROUGEScore
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from common.files import detect_format
from modeling.corpus import iter_json_lines
from modeling.evaluation.config import EvaluateConfig, EvaluateError
from modeling.inference import DecodingSetting, derive_seed, generate_batch, iter_batches

log = logging.getLogger("modeling.evaluate")

#: ROUGE variants reported. rougeLsum is left out: it splits sentences with nltk's punkt, a download.
ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


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

