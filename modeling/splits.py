"""Which documents training holds out for validation: a stable hash of each document's key, never its position.

A document is on the validation side when ``validation_score(key, seed) < val_fraction``. The key is the
document's id (curated shards have an ``id`` column) or, without one, its text (see
``modeling.corpus.iter_keyed_documents``). Deciding per document, by a hash, means:

- no document lends tokens to both sides (a block split puts the two halves of a document on either side, so
  validation rewards memorising the training half);
- the split does not depend on file order, sharding, ``max_docs`` or other documents: adding data moves no
  existing document across, and a resumed run sees the same split;
- ``data.seed`` salts the hash, so another seed draws another split.

The hash is salted with its own personalisation string, so it is independent of any hash curation uses to pick
its held-out documents (``<curated>/heldout/``): the validation set is a fair sample of the training side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Protocol

#: blake2b personalisation (at most 16 bytes): keeps this hash apart from every other hash of document ids.
_PERSON = b"lm-val-split-v1"


def validation_score(key: str, seed: int) -> float:
    """A number in [0, 1), uniform over documents and fixed for a (key, seed) pair."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode("utf-8", "surrogatepass"), digest_size=8,
                             person=_PERSON).digest()
    return int.from_bytes(digest, "big") / 2**64


def is_validation(key: str, val_fraction: float, seed: int) -> bool:
    """Whether the document keyed ``key`` is held out for validation (about ``val_fraction`` of documents)."""
    return validation_score(key, seed) < val_fraction


class SetWriter(Protocol):
    """Where one side's documents go (:class:`modeling.block_cache.BlockWriter`)."""

    def add(self, texts: list[str]) -> None: ...

    def close(self) -> dict[str, Any]: ...


def pack_split(documents: Iterable[list[tuple[str, str]]], writers: dict[str, SetWriter], val_fraction: float,
               seed: int, forced: str | None = None) -> tuple[dict[str, dict[str, Any]], str | None]:
    """One pass over ``(key, text)`` batches, each document to ``writers["val"]`` or ``writers["train"]``
    (``forced``, a key, goes to validation whatever its score). Returns each writer's summary and the
    lowest-scoring key: the caller's validation document when none scored under ``val_fraction``."""
    lowest: tuple[float, str] | None = None
    for batch in documents:
        sides: dict[str, list[str]] = {"train": [], "val": []}
        for key, text in batch:
            score = validation_score(key, seed)
            if lowest is None or score < lowest[0]:
                lowest = (score, key)
            sides["val" if score < val_fraction or key == forced else "train"].append(text)
        for side, texts in sides.items():
            writers[side].add(texts)
    return {side: w.close() for side, w in writers.items()}, lowest[1] if lowest else None
