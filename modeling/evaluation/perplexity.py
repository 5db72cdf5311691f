"""Perplexity, next-token accuracy and bits per byte of a model on documents, over blocks packed exactly as
training packs them.

The blocks come from :class:`modeling.packing.PackedBlocks` and the loss from ``modeling.loss``, the same code as
training's cache and ``val_loss`` / ``val_ppl`` / ``val_acc``: on the same documents, tokenizer and block size the
numbers are the ones training logs. The scoring loop and the definition of bits per byte are
``modeling.evaluation.scoring``'s, shared with training's held-out callback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from modeling.evaluation.breakdown import DocumentLabels, breakdown
from modeling.evaluation.config import EvaluateError
from modeling.evaluation.scoring import BYTES, score_blocks
from modeling.export import load_checkpoint, max_positions, trained_block_size, trained_document_mask
from modeling.packing import PackedBlocks
from modeling.tokenizer.load import check_eos

log = logging.getLogger("modeling.evaluate")

#: Longest default block when neither the model's files nor the tokenizer say how long training blocks were.
DEFAULT_MAX_BLOCK = 1024


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
    state = load_checkpoint(path, mmap=True)  # mmap: only the small hyperparameter dict is read, not the weights
    value = (state.get("datamodule_hyper_parameters") or {}).get("block_size")
    return int(value) if isinstance(value, int) else None


def choose_document_mask(requested: bool | None, model_path: str) -> tuple[bool, str]:
    """Whether to score with ``--model.document_mask`` (each document alone) and where that came from: the
    flag, else what the training run used, as its checkpoint's hyperparameters or its export's
    ``training.json`` record it; a model that records neither (a hub model, an export from before the record)
    was not trained with it."""
    if requested is not None:
        return requested, "--document-mask"
    path = Path(model_path).expanduser()
    if path.is_file() and path.suffix == ".ckpt":
        state = load_checkpoint(path, mmap=True)  # mmap: only the small hyperparameter dict is read
        value = (state.get("hyper_parameters") or {}).get("document_mask", False)
        return bool(value), "the checkpoint's model.document_mask"
    if (trained := trained_document_mask(path)) is not None:
        return trained, "the export's training.json"
    return False, "not recorded with the model (off)"


def language_model_metrics(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    files: Sequence[Path],
    text_column: str,
    block_size: int,
    batch_size: int = 8,
    max_docs: int | None = None,
    log_every: int = 20,
    with_bytes: bool = True,
    breakdown_columns: Sequence[str] = (),
    max_groups: int = 20,
    document_mask: bool = False,
) -> dict[str, Any]:
    """Perplexity = exp(mean NLL over every predicted token), next-token accuracy and (``with_bytes``) bits per
    byte over packed blocks, and per value of each of ``breakdown_columns`` (see ``modeling.evaluation.scoring``
    for the definitions and ``modeling.evaluation.breakdown`` for the groups).

    Each block predicts its tokens 2..n from the ones before; padding of the final short block is masked out
    and never scored. The mean is over tokens, not blocks, so the short last block weighs what it holds.
    ``document_mask``: score each document on its own context, as ``--model.document_mask`` trains
    (:func:`modeling.evaluation.scoring.score_blocks`).
    """
    check_eos(tokenizer, f"the tokenizer {tokenizer.name_or_path!r}", "--tokenizer", EvaluateError)
    if (with_bytes or breakdown_columns) and not getattr(tokenizer, "is_fast", False):
        raise EvaluateError(
            f"bits_per_byte and the per-source breakdowns need a fast tokenizer (tokenizer.json) for its character "
            f"offsets; {tokenizer.name_or_path!r} is {type(tokenizer).__name__}. Pass --tokenizer with a directory "
            "holding a tokenizer.json, or --metrics perplexity,next_token_accuracy"
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    labels = DocumentLabels(breakdown_columns)
    packed = PackedBlocks(labels.read(files, text_column, max_docs=max_docs), tokenizer, block_size)
    scores = score_blocks(model, packed.blocks(with_bytes=with_bytes or bool(breakdown_columns)), pad, batch_size,
                          log_every, document_mask=document_mask, eos_token_id=tokenizer.eos_token_id)
    if scores.tokens == 0:
        raise EvaluateError(
            f"no tokens to score in column {text_column!r} of {[str(f) for f in files[:3]]}: the "
            "data is empty or every document is blank"
        )
    log.info("perplexity: done, %d docs, %d blocks, %d predicted tokens", packed.docs, scores.blocks, scores.tokens)
    out: dict[str, Any] = {
        "perplexity": scores.perplexity,
        "loss": scores.loss,
        "next_token_accuracy": scores.next_token_accuracy,
        "tokens": scores.tokens,
        "blocks": scores.blocks,
        "docs": packed.docs,
    }
    if with_bytes:
        total = scores.totals()
        out.update(bits_per_byte=scores.bits_per_byte, bytes=int(total[BYTES]))
    if breakdown_columns:
        out["breakdowns"] = {c: breakdown(scores.per_doc, labels.codes(c), labels.names[c], max_groups)
                             for c in breakdown_columns}
    return out
