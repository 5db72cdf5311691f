"""Packing documents into fixed-length blocks: the one definition that training and evaluation share.

Each document is tokenized without special tokens and followed by eos; the documents' tokens run on as one
stream, cut every ``block_size`` tokens, so a block may hold the end of one document and the start of the next;
the final block may be shorter. ``modeling.data`` writes these blocks to its token cache (padding the final one)
and ``modeling.evaluate`` scores them, so its perplexity is the ``val_ppl`` of training on the same data and
block size: both get their blocks from :class:`PackedBlocks` (or its push form :class:`BlockPacker`, which
training uses to pack its train and validation documents apart), nothing else packs.

Documents tokenized ahead of time (the token shards of ``python -m modeling.tokenize``) are packed by the same
rule without copying: :class:`PackedStream` gives random access to block ``i`` of the stream "each document's
ids, then eos" cut every ``block_size`` tokens, reading the documents out of memory maps. Both forms rest on the
one definition of the stream; a test checks that they give the same blocks for the same documents.

Evaluation also needs to know which text each token stands for (bits per byte, per-source breakdowns):
:meth:`PackedBlocks.blocks` with ``with_bytes=True`` cuts the same token stream and carries, per token, the
UTF-8 bytes it covers (:func:`token_byte_counts`) and the index of its document. The token ids are the same
either way; training iterates the ids alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Byte count of the eos the packer appends to each document: it covers no text, so bits per byte leaves it out
#: of both its numerator and its denominator (perplexity and accuracy still score it, as training does).
SEPARATOR = -1


def encode_documents(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each document, without special tokens, eos appended (eos separates packed documents)."""
    eos = _eos(tokenizer)
    encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    for ids in encoded:
        ids.append(eos)
    return encoded


def encode_documents_with_bytes(tokenizer: Any, texts: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    """:func:`encode_documents`' ids, and for each token the UTF-8 bytes of its document it covers (the eos
    appended: :data:`SEPARATOR`). Needs a fast tokenizer: the bytes come from its character offsets."""
    eos = _eos(tokenizer)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "byte counts need a fast tokenizer (a tokenizer.json, for its character offsets); this one is "
            f"{type(tokenizer).__name__}: save it with AutoTokenizer.from_pretrained(..., use_fast=True)"
        )
    enc = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, return_offsets_mapping=True,
                    verbose=False)
    ids_out, bytes_out = enc["input_ids"], []
    for text, ids, offsets in zip(texts, ids_out, enc["offset_mapping"], strict=True):
        counts = token_byte_counts(text, [end for _, end in offsets])
        counts.append(SEPARATOR)
        ids.append(eos)
        bytes_out.append(counts)
    return ids_out, bytes_out


def token_byte_counts(text: str, ends: Sequence[int]) -> list[int]:
    """UTF-8 bytes each token covers, from the character offset where each token ends.

    A token covers the text from the previous token's end to its own end, so whitespace that no token's
    offsets include (byte-level BPE and metaspace trim it) belongs to the next token, and text after the last
    token's end to the last token: the counts of a document sum to ``len(text.encode())`` whatever the
    tokenizer's model or pre-tokenizer. Ends are made non-decreasing first (a token inside a multi-byte
    character may repeat its character's offsets: the first one gets the bytes, the next 0). Linear in the text.
    """
    if not ends:
        return []  # a document the tokenizer maps to nothing: no token carries its bytes
    stops = np.maximum.accumulate(np.asarray(ends, dtype=np.int64))
    stops[-1] = len(text)
    if not text.isascii():  # character offsets -> byte offsets: the byte length of every code point, summed
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        widths = 1 + (points >= 0x80).astype(np.int64) + (points >= 0x800) + (points >= 0x10000)
        stops = np.concatenate(([0], np.cumsum(widths)))[stops]
    return np.diff(stops, prepend=0).tolist()


@dataclass
class Block:
    """One packed block: token ids, and with ``with_bytes`` the UTF-8 bytes each token covers
    (:data:`SEPARATOR` for the eos between documents) and the index of the document each token belongs to
    (counted from 0 over everything packed; an eos belongs to the document it ends)."""

    ids: list[int]
    nbytes: list[int] | None = None
    docs: list[int] | None = None


class BlockPacker:
    """The packing, fed one batch of documents at a time: ``add`` returns the blocks those documents completed,
    ``finish`` the final, possibly shorter one. Training packs its train and validation documents with two of
    these in one pass over the corpus; :class:`PackedBlocks` is the same packer over an iterable.

    With ``with_bytes`` the blocks also carry each token's UTF-8 byte count and document index
    (:meth:`add_blocks`, :meth:`finish_blocks`; a fast tokenizer is needed, see
    :func:`encode_documents_with_bytes`); the token ids are the same either way."""

    def __init__(self, tokenizer: Any, block_size: int, with_bytes: bool = False) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.with_bytes = with_bytes
        self.docs = 0
        self.tokens = 0
        self._buf: list[int] = []
        self._nbytes: list[int] = []
        self._doc_of: list[int] = []

    def add(self, texts: list[str]) -> list[list[int]]:
        """Pack ``texts`` after the documents added before; the token ids of the full blocks they complete."""
        return [block.ids for block in self.add_blocks(texts)]

    def finish(self) -> list[list[int]]:
        """The last block's ids (shorter than ``block_size``) if tokens are left over, else nothing."""
        return [block.ids for block in self.finish_blocks()]

    def add_blocks(self, texts: list[str]) -> list[Block]:
        """:meth:`add`, as :class:`Block` objects."""
        if not texts:
            return []
        if self.with_bytes:
            encoded, counts = encode_documents_with_bytes(self.tokenizer, texts)
            for doc, (ids, c) in enumerate(zip(encoded, counts, strict=True), self.docs):
                self._nbytes.extend(c)
                self._doc_of.extend([doc] * len(ids))
        else:
            encoded = encode_documents(self.tokenizer, texts)
        for ids in encoded:
            self._buf.extend(ids)
            self.tokens += len(ids)
        self.docs += len(encoded)
        size = self.block_size
        full = len(self._buf) // size * size
        blocks = [_block(self._buf, self._nbytes, self._doc_of, start, start + size, self.with_bytes)
                  for start in range(0, full, size)]
        self._buf = self._buf[full:]
        if self.with_bytes:
            self._nbytes, self._doc_of = self._nbytes[full:], self._doc_of[full:]
        return blocks

    def finish_blocks(self) -> list[Block]:
        """:meth:`finish`, as :class:`Block` objects."""
        rest = _block(self._buf, self._nbytes, self._doc_of, 0, len(self._buf), self.with_bytes)
        self._buf, self._nbytes, self._doc_of = [], [], []
        return [rest] if rest.ids else []


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
        for block in self.blocks(with_bytes=False):
            yield block.ids

    def blocks(self, with_bytes: bool = True) -> Iterator[Block]:
        """The blocks as :class:`Block`; ``with_bytes`` adds per-token byte counts and document indices
        (a fast tokenizer is needed, see :func:`encode_documents_with_bytes`)."""
        packer = BlockPacker(self.tokenizer, self.block_size, with_bytes)
        for texts in self.text_batches:
            blocks = packer.add_blocks(texts)
            self.docs, self.tokens = packer.docs, packer.tokens
            yield from blocks
        yield from packer.finish_blocks()


def _block(ids: list[int], nbytes: list[int], docs: list[int], start: int, stop: int, with_bytes: bool) -> Block:
    if not with_bytes:
        return Block(ids[start:stop])
    return Block(ids[start:stop], nbytes[start:stop], docs[start:stop])


def _eos(tokenizer: Any) -> int:
    eos = tokenizer.eos_token_id
    if eos is None:  # the tokenizer loaders refuse such tokenizers first, naming the flag
        raise ValueError("the tokenizer has no eos token, which separates packed documents")
    return eos


class PackedStream:
    """Block ``i`` of the documents ``segments`` names, packed as :class:`BlockPacker` packs: each document's ids
    followed by eos, run on as one stream, cut every ``block_size`` tokens; the final block is padded with
    ``pad`` (its real length is :attr:`last_block_tokens`). Nothing is copied ahead: item ``i`` reads its
    tokens out of ``arrays`` (memory maps of token shards), so any number of ranks share the page cache.

    ``segments`` is an (n, 3) int64 array of ``(array index, start, stop)``: document ``k`` of the stream is
    ``arrays[a][start:stop]``, without eos. A document may appear more than once (mixture weights)."""

    def __init__(self, arrays: Sequence[np.ndarray], segments: np.ndarray, eos: int, pad: int, block_size: int,
                 dtype: np.dtype) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        self.arrays, self.eos, self.pad, self.block_size, self.dtype = arrays, eos, pad, block_size, np.dtype(dtype)
        self.segments = np.asarray(segments, dtype=np.int64).reshape(-1, 3)
        self.lengths = self.segments[:, 2] - self.segments[:, 1] + 1  # + eos
        self.ends = np.cumsum(self.lengths)
        self.tokens = int(self.ends[-1]) if len(self.ends) else 0
        self.docs = len(self.segments)
        self.n_blocks = -(-self.tokens // block_size)
        self.last_block_tokens = self.tokens - (self.n_blocks - 1) * block_size if self.n_blocks else 0

    def __len__(self) -> int:
        return self.n_blocks

    def __getstate__(self) -> dict[str, Any]:
        """Memory maps travel as (file, dtype, offset, shape) and are mapped again where unpickled: pickling a
        memmap copies its data, which would send the whole corpus to every spawned DataLoader worker."""
        state = self.__dict__.copy()
        state["arrays"] = [("memmap", a.filename, a.dtype.str, a.offset, a.shape)
                           if isinstance(a, np.memmap) and a.filename else a for a in self.arrays]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["arrays"] = [np.memmap(a[1], dtype=np.dtype(a[2]), mode="r", offset=a[3], shape=a[4])
                           if isinstance(a, tuple) else a for a in state["arrays"]]
        self.__dict__.update(state)

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n_blocks:
            raise IndexError(f"block {i} of {self.n_blocks}")
        size = self.block_size
        pos, stop = i * size, min((i + 1) * size, self.tokens)
        out = np.full(size, self.pad, dtype=self.dtype)
        d, w = int(np.searchsorted(self.ends, pos, side="right")), 0
        while pos < stop:
            a, start, end = self.segments[d]
            first = int(self.ends[d] - self.lengths[d])  # stream position of the document's first token
            n, off = int(end - start), pos - first
            if off < n:
                take = min(n - off, stop - pos)
                out[w:w + take] = self.arrays[a][start + off:start + off + take]
                w, pos = w + take, pos + take
            if pos < stop:  # the document's ids are all in: its eos comes next
                out[w] = self.eos
                w, pos = w + 1, pos + 1
            d += 1
        return out
