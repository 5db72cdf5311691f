"""Packing documents into fixed-length blocks: the one definition that training and evaluation share.

Each document is tokenized without special tokens and followed by eos; the documents' tokens run on as one
stream, cut every ``block_size`` tokens, so a block may hold the end of one document and the start of the next;
the final block may be shorter. ``modeling.data`` writes these blocks to its token cache (padding the final one)
and ``modeling.evaluate`` scores them, so its perplexity is the ``val_ppl`` of training on the same data and
block size: both get their blocks from :class:`PackedBlocks` (or its push form :class:`BlockPacker`, which
training uses to pack its train and validation documents apart), nothing else packs.
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


class BlockPacker:
    """The packing, fed one batch of documents at a time: ``add`` returns the blocks those documents completed,
    ``finish`` the final, possibly shorter one. Training packs its train and validation documents with two of
    these in one pass over the corpus; :class:`PackedBlocks` is the same packer over an iterable."""

    def __init__(self, tokenizer: Any, block_size: int) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.docs = 0
        self.tokens = 0
        self._buf: list[int] = []

    def add(self, texts: list[str]) -> list[list[int]]:
        """Pack ``texts`` after the documents added before; the full blocks they complete."""
        if not texts:
            return []
        encoded = encode_documents(self.tokenizer, texts)
        for ids in encoded:
            self._buf.extend(ids)
            self.tokens += len(ids)
        self.docs += len(encoded)
        size = self.block_size
        full = len(self._buf) // size * size
        blocks = [self._buf[start : start + size] for start in range(0, full, size)]
        self._buf = self._buf[full:]
        return blocks

    def finish(self) -> list[list[int]]:
        """The last block (shorter than ``block_size``) if tokens are left over, else nothing."""
        rest, self._buf = self._buf, []
        return [rest] if rest else []


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
        packer = BlockPacker(self.tokenizer, self.block_size)
        for texts in self.text_batches:
            blocks = packer.add(texts)
            self.docs, self.tokens = packer.docs, packer.tokens
            yield from blocks
        yield from packer.finish()
