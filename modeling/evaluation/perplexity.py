"""Perplexity and next-token accuracy of a model on documents, over blocks packed exactly as training packs them.

The blocks come from :class:`modeling.packing.PackedBlocks` and the loss from ``modeling.loss``, the same code as
training's cache and ``val_loss`` / ``val_ppl`` / ``val_acc``: on the same documents, tokenizer and block size the
numbers are the ones training logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torchmetrics import MeanMetric
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from modeling.corpus import iter_text_batches
from modeling.evaluation.config import EvaluateError
from modeling.export import load_checkpoint, max_positions, trained_block_size
from modeling.inference import iter_batches
from modeling.loss import IGNORE_INDEX, TokenPerplexity, next_token_targets, token_cross_entropy
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
    check_eos(tokenizer, f"the tokenizer {tokenizer.name_or_path!r}", "--tokenizer", EvaluateError)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # The training module's own metrics: the same definition as val_loss / val_ppl / val_acc.
    loss_metric, ppl_metric, acc_metric = (
        MeanMetric().to(device),
        TokenPerplexity().to(device),
        MeanMetric().to(device),
    )
    texts = iter_text_batches(files, text_column, batch_size=1000, max_docs=max_docs)
    packed = PackedBlocks(texts, tokenizer, block_size)  # training's packing, not a copy of it
    blocks = (b for b in packed if len(b) > 1)  # a final block of one token has nothing to predict
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
        targets = next_token_targets(labels)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            # One row at a time in float32: a whole (batch, time, vocab) float copy can exceed GPU memory.
            nll = sum(token_cross_entropy(logits[r], targets[r], reduction="sum") for r in range(len(batch)))
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
    docs = packed.docs
    log.info("perplexity: done, %d docs, %d blocks, %d predicted tokens", docs, n_blocks, tokens)
    return {
        "perplexity": float(ppl_metric.compute()),
        "loss": float(loss_metric.compute()),
        "next_token_accuracy": float(acc_metric.compute()),
        "tokens": tokens,
        "blocks": n_blocks,
        "docs": docs,
    }

