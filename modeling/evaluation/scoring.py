"""Scoring packed blocks: perplexity, next-token accuracy and bits per byte, per document and in total.

Bits per byte (bpb) is the tokenizer-independent number: perplexity is per token, and a tokenizer with longer
tokens predicts fewer, harder tokens, so perplexities of models with different tokenizers cannot be compared;
the bytes of the text are the same whatever the tokenizer. Defined as lm-eval's ``bits_per_byte`` and nanochat's
validation bpb::

    bpb = sum of next-token NLL (nats) over the scored target tokens / (ln 2 * UTF-8 bytes those tokens cover)

- *Scored target tokens* are the ones perplexity scores (every token of a block but its first, padding never),
  less the eos the packer puts after each document: it covers no text, so it is left out of both the numerator
  and the denominator (as nanochat does with its special tokens). Perplexity and accuracy still count it,
  exactly as training's ``val_ppl`` / ``val_acc`` do.
- *Bytes a token covers*: the text from the previous token's end offset to its own end offset in the fast
  tokenizer's offsets (:func:`modeling.packing.token_byte_counts`), so the gaps a pre-tokenizer trims belong to
  the next token and a document's tokens sum to ``len(text.encode())`` for BPE, byte-level BPE and
  Unigram/metaspace alike. A token may cover 0 bytes (the second half of a character split in two); its loss
  still counts.
- The first token of each block is context, never a target: its bytes are not counted either.
- Under the document mask (``document_mask=True``, how a ``--model.document_mask`` run trains) the first token
  of every document is not a target either (training's loss skips it: it would be predicted from the previous,
  unrelated document), and likewise its bytes are not counted: bpb stays the NLL of the scored targets over the
  bytes *they* cover. Such a bpb covers slightly fewer bytes than an unmasked one of the same data.

A slow tokenizer has no offsets: ``modeling.evaluate`` then leaves bpb out (with a warning) unless it was asked
for by name, which is an error naming the fix.

Training's held-out callback (``modeling.evaluation.heldout``) and ``modeling.evaluate`` both score with
:func:`score_blocks`; there is one implementation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torchmetrics import MeanMetric
from transformers import PreTrainedModel

from modeling.document_mask import document_eos, mask_document_starts, model_document_inputs
from modeling.inference import iter_batches
from modeling.loss import IGNORE_INDEX, TokenPerplexity, next_token_targets, token_cross_entropy
from modeling.packing import SEPARATOR, Block

log = logging.getLogger("modeling.evaluate")

LN2 = math.log(2)

#: Columns of :attr:`Scores.per_doc`: target tokens, correct predictions, NLL of every target (nats),
#: NLL of the targets that are text (bpb's numerator), bytes those targets cover (bpb's denominator).
TOKENS, CORRECT, NLL, TEXT_NLL, BYTES = range(5)


def bits_per_byte(text_nll: float, nbytes: float) -> float:
    """NLL in nats over text tokens -> bits per UTF-8 byte (NaN when no byte was scored)."""
    return text_nll / (LN2 * nbytes) if nbytes > 0 else float("nan")


@dataclass
class Scores:
    """What :func:`score_blocks` measured. ``per_doc`` (one row per document index, columns ``TOKENS`` ...
    ``BYTES``, float64) is filled when the blocks carry byte counts; summing its rows over any grouping of the
    documents gives that group's numbers, and over all rows the totals."""

    perplexity: float = float("nan")
    loss: float = float("nan")
    next_token_accuracy: float = float("nan")
    tokens: int = 0
    blocks: int = 0
    per_doc: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))

    @property
    def has_bytes(self) -> bool:
        return bool(self.per_doc.size)

    def totals(self) -> np.ndarray:
        return self.per_doc.sum(axis=0)

    @property
    def bits_per_byte(self) -> float:
        total = self.totals()
        return bits_per_byte(total[TEXT_NLL], total[BYTES])


def score_blocks(
    model: PreTrainedModel,
    blocks: Iterable[Block],
    pad: int,
    batch_size: int = 8,
    log_every: int = 20,
    document_mask: bool = False,
    eos_token_id: int | None = None,
) -> Scores:
    """Score every block (a short one too: its padding is masked out, never scored) with one forward pass per
    batch. Perplexity, loss and accuracy come from training's own metrics (``TokenPerplexity``, token-weighted
    means), so they are ``val_ppl`` / ``val_loss`` / ``val_acc``'s definitions; blocks with byte counts also fill
    the per-document sums that bits per byte and the breakdowns are made of.

    ``document_mask``: score as ``--model.document_mask`` trains (``modeling.document_mask``, the module's own
    helpers): each document sees only itself, positions restart after each eos (``eos_token_id``, default the
    model config's), and a document's first token is not a target, so neither its loss nor (bits per byte) its
    bytes count. Blocks of unequal length (the short last one) then go in separate forward passes instead of
    being padded: flash attention's packed path takes no padding mask.
    """
    device = next(model.parameters()).device
    eos = document_eos(model, eos_token_id) if document_mask else None
    loss_metric, ppl_metric, acc_metric = MeanMetric().to(device), TokenPerplexity().to(device), MeanMetric().to(device)
    sums = _DocSums()
    scores = Scores()
    start = time.perf_counter()
    usable = (b for b in blocks if len(b.ids) > 1)  # a final block of one token has nothing to predict
    for step, batch in enumerate(iter_batches(usable, batch_size), 1):
        for group in _equal_lengths(batch) if document_mask else [batch]:
            ids, mask = _pad(group, pad, device)
            labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
            if eos is not None:
                labels = mask_document_starts(labels, ids, eos)  # exactly training's loss under the mask
            targets = next_token_targets(labels)
            with torch.inference_mode():
                inputs = (model_document_inputs(model, ids, eos) if eos is not None
                          else {"input_ids": ids, "attention_mask": mask})
                logits = model(**inputs, use_cache=False).logits
                logits = logits.reshape(*ids.shape, logits.shape[-1])  # flash attention's packing flattens rows
                # One row at a time in float32: a whole (batch, time, vocab) float copy can exceed GPU memory.
                nll = torch.stack([token_cross_entropy(logits[r], targets[r], reduction="none")
                                   for r in range(len(group))])
                keep = targets != IGNORE_INDEX
                n = int(keep.sum())
                hits = logits.argmax(-1) == targets
                if n:  # under the mask a tiny block can hold nothing but document starts
                    total = nll.sum()
                    loss_metric.update(total / n, n)
                    ppl_metric.update(total / n, n)
                    acc_metric.update(hits[keep].float())
            if group[0].nbytes is not None:
                sums.add(group, nll.double().cpu().numpy(), hits.cpu().numpy(), keep.cpu().numpy())
            scores.blocks += len(group)
            scores.tokens += n
        if step % log_every == 0:
            log.info("scoring: %d blocks, %d tokens, running ppl %.3f, %.0f tokens/s", scores.blocks, scores.tokens,
                     float(ppl_metric.compute()), scores.tokens / (time.perf_counter() - start))
    if scores.tokens:
        scores.perplexity = float(ppl_metric.compute())
        scores.loss = float(loss_metric.compute())
        scores.next_token_accuracy = float(acc_metric.compute())
    scores.per_doc = sums.array()
    return scores


def _pad(batch: list[Block], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of the batch right-padded to its longest block; mask 1 = a real token."""
    width = max(len(b.ids) for b in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, block in enumerate(batch):
        ids[row, : len(block.ids)] = torch.tensor(block.ids)
        mask[row, : len(block.ids)] = 1
    return ids.to(device), mask.to(device)


def _equal_lengths(batch: list[Block]) -> list[list[Block]]:
    """The batch split into runs of blocks of one length, in order (in practice: the full blocks, then the
    short last one), so no row needs padding."""
    groups: list[list[Block]] = []
    for block in batch:
        if groups and len(groups[-1][0].ids) == len(block.ids):
            groups[-1].append(block)
        else:
            groups.append([block])
    return groups


class _DocSums:
    """Per-document sums, grown as document indices arrive (they only increase). Each batch touches a narrow
    range of documents, so adding it costs its own size, not the number of documents seen."""

    def __init__(self) -> None:
        self._rows = np.zeros((1024, 5))
        self._n = 0

    def add(self, batch: list[Block], nll: np.ndarray, hits: np.ndarray, keep: np.ndarray) -> None:
        docs, nbytes = np.zeros(keep.shape, dtype=np.int64), np.zeros(keep.shape, dtype=np.int64)
        for row, block in enumerate(batch):  # the target of position t is token t + 1
            assert block.docs is not None and block.nbytes is not None
            docs[row, : len(block.ids) - 1] = block.docs[1:]
            nbytes[row, : len(block.ids) - 1] = block.nbytes[1:]
        docs, nbytes, nll, hits = docs[keep], nbytes[keep], nll[keep], hits[keep]
        if not docs.size:
            return
        text = nbytes != SEPARATOR
        lo, hi = int(docs.min()), int(docs.max()) + 1
        self._grow(hi)
        at, size = docs - lo, hi - lo
        rows = self._rows[lo:hi]
        rows[:, TOKENS] += np.bincount(at, minlength=size)
        rows[:, CORRECT] += np.bincount(at, weights=hits.astype(np.float64), minlength=size)
        rows[:, NLL] += np.bincount(at, weights=nll, minlength=size)
        rows[:, TEXT_NLL] += np.bincount(at, weights=np.where(text, nll, 0.0), minlength=size)
        rows[:, BYTES] += np.bincount(at, weights=np.where(text, nbytes, 0).astype(np.float64), minlength=size)

    def _grow(self, n: int) -> None:
        if n > len(self._rows):
            grown = np.zeros((max(n, 2 * len(self._rows)), 5))
            grown[: self._n] = self._rows[: self._n]
            self._rows = grown
        self._n = max(self._n, n)

    def array(self) -> np.ndarray:
        return self._rows[: self._n].copy()
