"""Packing documents into fixed-length blocks: the one definition that training and evaluation share.

Each document is tokenized without special tokens and followed by eos; the documents' tokens run on as one
stream, cut every ``block_size`` tokens, so a block may hold the end of one document and the start of the next;
the final block may be shorter. ``modeling.data`` writes these blocks to its token cache (padding the final one)
and ``modeling.evaluate`` scores them, so its perplexity is the ``val_ppl`` of training on the same data and
block size: both get their blocks from :class:`PackedBlocks`, nothing else packs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


def encode_documents(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each document, without special tokens, eos appended (eos separates packed documents)."""
    eos = tokenizer.eos_token_id
    if eos is None:  # the tokenizer loaders refuse such tokenizers first, naming the flag
        raise ValueError("the tokenizer has no eos token, which separates packed documents")
    encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    for ids in encoded:
        ids.append(eos)
    return encoded


@dataclass
class PackedBlocks:
    """Iterating yields the blocks (lists of ``block_size`` token ids, the last one possibly shorter) of the
    documents in ``text_batches``; ``docs`` and ``tokens`` count what has been packed so far.

    Memory is bounded by one batch of documents, never by the corpus."""

    text_batches: Iterable[list[str]]
    tokenizer: Any
    block_size: int
    docs: int = 0
    tokens: int = 0

    def __iter__(self) -> Iterator[list[int]]:
        if self.block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {self.block_size}")
        size = self.block_size
        buf: list[int] = []
        for texts in self.text_batches:
            encoded = encode_documents(self.tokenizer, texts)
            for ids in encoded:
                buf.extend(ids)
                self.tokens += len(ids)
            self.docs += len(encoded)
            full = len(buf) // size * size
            for start in range(0, full, size):
                yield buf[start : start + size]
            buf = buf[full:]
        if buf:
            yield buf
