"""Score a trained model on held-out data: perplexity, next-token accuracy, task metrics on generations.

Two kinds of data, told apart by their columns (any mix of parquet, jsonl[.gz] and, for the first kind, txt):

- documents (``--text_column``, default ``text``; curated shards as they are): ``perplexity``,
  ``next_token_accuracy`` and ``bits_per_byte`` (the tokenizer-independent one; per ``source`` and ``lang``
  too when the shards have those columns) over fixed-length blocks, packed exactly as training packs them
  (documents tokenized without special tokens, joined by eos, cut into ``--block_size`` blocks; by default the
  training block size
  the checkpoint or the export's ``training.json`` records; a model trained with ``--model.document_mask``
  scores each document on its own context, as training did, unless ``--document_mask`` says otherwise), so the
  number is the one training logs as ``val_ppl`` when the data and block size are the same;
- prompts with references (``--prompt_column``, ``--references_column``; a reference is a string or a list of
  acceptable strings): the model continues each prompt (greedy unless ``--decoding`` says otherwise) and
  torchmetrics compares the continuation with the references: ``accuracy`` (exact match) and ``f1`` (token
  overlap), both after SQuAD's normalisation; ``bleu`` (corpus BLEU-4); ``rouge`` (ROUGE-1/2/L).

Usage::

    python -m modeling.evaluate --model runs/tiny-cpu/version_0/hf --data data/heldout --output out/metrics.json
    python -m modeling.evaluate --config configs/evaluate/qa.yaml --model runs/qa/version_0/checkpoints/last.ckpt
    python -m modeling.evaluate --model runs/qa/version_0/checkpoints/last.ckpt --data 'data/qa/*.jsonl' \\
        --metrics accuracy,f1,bleu,rouge --prompt_column question --references_column answers --first_line
    python -m modeling.evaluate --model runs/lora/version_0/hf --data data/heldout --device cuda --dtype bfloat16

Every key of the YAML config (``configs/evaluate/``) is a flag; ``--print_config`` prints the resolved config.
Without ``--metrics`` every metric the data's columns allow is computed. Beside ``--output`` go a Markdown report
(``metrics.md``) and a bar chart of bits per byte per source / language (``metrics-bpb.png``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

# The command alone lives here (the docstring above is its --help): its library is modeling.evaluation, and the
# inference it shares with modeling.generate is modeling.inference.
from common.cli import Command, run_command
from common.files import detect_format
from modeling.evaluation.config import EvaluateConfig, EvaluateError
from modeling.evaluation.data import choose_metrics, resolve_data
from modeling.evaluation.harness import HarnessConfig, evaluate_model, markdown_table, require_lm_eval
from modeling.evaluation.perplexity import choose_block_size, choose_document_mask, language_model_metrics
from modeling.evaluation.report import write_report
from modeling.evaluation.tasks import task_metrics
from modeling.inference import DecodingSetting, load_model

log = logging.getLogger("modeling.evaluate")


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Load the model once, compute the chosen metrics, write ``cfg.output``; returns what was written."""
    if cfg.batch_size < 1 or cfg.max_new_tokens < 1:
        raise EvaluateError(
            f"--batch-size and --max-new-tokens must be at least 1, got {cfg.batch_size} and "
            f"{cfg.max_new_tokens}"
        )
    files, columns = resolve_data(cfg.data)
    lm, task = choose_metrics(cfg.metrics, columns, cfg)
    harness = harness_config(cfg)
    if harness is not None:
        require_lm_eval()  # before the model loads
    DecodingSetting.parse(cfg.decoding)  # a typo fails before the model loads
    start = time.perf_counter()
    model, tokenizer = load_model(cfg.model, cfg.device, cfg.dtype, cfg.tokenizer)
    device = next(model.parameters()).device
    log.info("model %s on %s (%s); metrics %s", cfg.model, device, model.dtype, ", ".join(lm + task))
    result: dict[str, Any] = {"metrics": {}, "details": {}}
    if lm:
        text_files = [f for f in files if cfg.text_column in columns[f] or detect_format(f) == "text"]
        block, source = choose_block_size(cfg.block_size, model, tokenizer, cfg.model)
        document_mask, mask_source = choose_document_mask(cfg.document_mask, cfg.model)
        log.info("document mask %s (%s)", "on" if document_mask else "off", mask_source)
        if "bits_per_byte" in lm and not getattr(tokenizer, "is_fast", False) and cfg.metrics is None:
            # the documented fallback: asked for by name it is an error (language_model_metrics names the fix)
            log.warning("no bits_per_byte: the tokenizer is not a fast one (no tokenizer.json), so it has no offsets")
            lm = [m for m in lm if m != "bits_per_byte"]
        with_bytes = "bits_per_byte" in lm
        breakdown_columns = [c for c in cfg.breakdown_columns if any(c in columns[f] for f in text_files)]
        out = language_model_metrics(
            model, tokenizer, text_files, cfg.text_column, block, cfg.batch_size, cfg.max_docs, cfg.log_every,
            with_bytes=with_bytes, breakdown_columns=breakdown_columns if with_bytes else (),
            max_groups=cfg.max_groups, document_mask=document_mask,
        )
        result["metrics"].update({k: out[k] for k in lm})
        result["details"]["language_modeling"] = {
            "loss": out["loss"],
            "tokens": out["tokens"],
            **({"bytes": out["bytes"]} if with_bytes else {}),
            "blocks": out["blocks"],
            "docs": out["docs"],
            "block_size": block,
            "block_size_from": source,
            "document_mask": document_mask,
            "document_mask_from": mask_source,
            "files": len(text_files),
        }
        if out.get("breakdowns"):
            result["breakdowns"] = out["breakdowns"]
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
    if harness is not None:
        rows, raw = evaluate_model(model, tokenizer, harness)
        result["harness"] = {"results": [asdict(r) for r in rows], "versions": raw.get("versions", {}),
                             "tasks": list(harness.tasks), "include_path": list(harness.include_path)}
        log.info("harness:\n%s", markdown_table(rows))
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
    if cfg.report:
        log.info("report: %s", ", ".join(map(str, write_report(result, out_path))))
    log.info("wrote %s: %s", out_path, ", ".join(f"{k}={v:.4g}" for k, v in result["metrics"].items()))
    return result


def harness_config(cfg: EvaluateConfig) -> HarnessConfig | None:
    """The lm-evaluation-harness part of an evaluation, or None when it names no task."""
    if not cfg.harness_tasks:
        return None
    return HarnessConfig(model=cfg.model, tasks=cfg.harness_tasks, include_path=cfg.harness_include,
                         batch_size=cfg.batch_size, limit=cfg.harness_limit, num_fewshot=cfg.harness_num_fewshot,
                         seed=cfg.seed)


COMMAND = Command(prog="python -m modeling.evaluate", description=__doc__, config=EvaluateConfig)
"""Every field of :class:`EvaluateConfig` is a flag and a YAML key (``configs/evaluate/``)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a usage error, with the message on stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    def run(cfg: EvaluateConfig, _: object) -> None:
        result = evaluate(cfg)
        print(json.dumps(result["metrics"], indent=2))

    return run_command(COMMAND, argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
