"""Exact deduplication at cluster scale, without MinHash and without collecting anything on the driver.

How it works (each step a plain function on an Arrow table, so it is unit-tested without Ray):
1. ``add_keys``: every live row gets a 128-bit xxh3 hash of its dedup key (the exact text, or the text with
   case and whitespace folded) and a key partition taken from that hash.
2. Keys only, never documents, cross the shuffle (:mod:`curation.keys`): each read task sends one key row per
   distinct hash it holds, one dedup task per key partition decides every hash that several read tasks hold,
   and the decisions go back to the output shard that owns each read task.
3. ``mark_duplicates`` then ``apply_decisions`` (the ``dedup`` step, :class:`DuplicateMarker`), per output
   shard on its own read tasks' rows: each group of equal hashes keeps the row with the smallest id and marks
   the others ``duplicate``; the run-wide decisions settle the groups that cross read tasks. Because the winner
   is chosen by id, not by arrival order, the output is the same for any number of blocks, workers or nodes.

At 128 bits the chance of any collision among 10^12 documents is about 10^-15, so hashes stand in for texts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from curation import columns
from curation.steps.base import live_mask, mark_dropped, set_column

_WS = re.compile(r"\s+")
KEY_TYPE = pa.binary(16)
REASON_DUPLICATE = "duplicate"
"""Drop reason of every copy but the one with the smallest id."""
LOSER = -1
"""``_cur_dup_decision`` of a row that loses to a smaller id in another read task (:mod:`curation.keys`)."""


@dataclass(frozen=True)
class DedupConfig:
    key: Literal["exact", "normalized"] = "exact"
    """``exact``: byte-identical cleaned text; ``normalized``: case-folded, whitespace-collapsed text."""


def dedup_key(text: str, key: str = "exact") -> bytes:
    """16-byte xxh3-128 digest of the text's dedup key."""
    if key == "normalized":
        text = _WS.sub(" ", text.casefold()).strip()
    return xxhash.xxh3_128_digest(text.encode("utf-8"))


def shard_of(digest: bytes, num_shards: int) -> int:
    """Output shard of a 16-byte digest (or of any bytes, e.g. an id's digest)."""
    return int.from_bytes(digest[:8], "little") % num_shards


def add_keys(batch: pa.Table, text_column: str, num_shards: int, cfg: DedupConfig | None) -> pa.Table:
    """Add ``_dedup_key`` (null for dropped rows, or for all rows when dedup is off) and ``_shard``
    (:func:`keys_and_shards`)."""
    keys, shards = keys_and_shards(batch.column(text_column).to_pylist(), live_mask(batch),
                                   batch.column(columns.ID).to_pylist(), num_shards, cfg)
    return set_keys(batch, keys, shards)


def keys_and_shards(texts: Sequence[object], live: Sequence[bool], ids: Sequence[object], num_shards: int,
                    cfg: DedupConfig | None) -> tuple[list[bytes | None], list[int]]:
    """The dedup key and the key partition of each row: the key's hash for a live row with text; rows without
    a key are spread over partitions by the hash of their id, so dropped rows balance too."""
    keys: list[bytes | None] = []
    shards: list[int] = []
    for text, rid, ok in zip(texts, ids, live):
        if cfg is not None and ok and isinstance(text, str):
            k = dedup_key(text, cfg.key)
            keys.append(k)
            shards.append(shard_of(k, num_shards))
        else:
            keys.append(None)
            shards.append(shard_of(xxhash.xxh3_64_digest(str(rid).encode("utf-8")), num_shards))
    return keys, shards


def set_keys(batch: pa.Table, keys: Sequence[bytes | None], shards: Sequence[int]) -> pa.Table:
    """``batch`` with the ``_dedup_key`` and ``_shard`` columns of :func:`keys_and_shards`."""
    batch = set_column(batch, columns.DEDUP_KEY, pa.array(keys, type=KEY_TYPE))
    return set_column(batch, columns.SHARD, pa.array(shards, type=pa.int32()))


def mark_duplicates(table: pa.Table) -> tuple[pa.Table, int]:
    """Mark all but the smallest-id row of every key group as ``duplicate``.

    Returns the table (in its original row order) with ``drop_reason`` updated and ``_dup_count`` set on each
    kept row that had copies, and the number of duplicate groups.
    """
    n = table.num_rows
    dup_count = np.zeros(n, dtype=np.int32)
    reasons: list[str | None] = [None] * n
    groups = 0
    if n and columns.DEDUP_KEY in table.column_names:
        keyed = pc.and_(pc.is_valid(table.column(columns.DEDUP_KEY)), pa.array(live_mask(table)))
        idx = np.flatnonzero(keyed.to_numpy(zero_copy_only=False))
        if len(idx) > 1:
            sub = table.take(pa.array(idx)).select([columns.DEDUP_KEY, columns.ID])
            sub = sub.append_column("_pos", pa.array(idx))
            sub = sub.sort_by([(columns.DEDUP_KEY, "ascending"), (columns.ID, "ascending")])
            keys = sub.column(columns.DEDUP_KEY).to_pylist()
            pos = sub.column("_pos").to_numpy()
            keeper = -1
            for i in range(len(keys)):
                if i and keys[i] == keys[i - 1]:
                    reasons[pos[i]] = REASON_DUPLICATE
                    if dup_count[keeper] == 0:
                        groups += 1
                    dup_count[keeper] += 1
                else:
                    keeper = pos[i]
    table = mark_dropped(table, reasons)
    return set_column(table, columns.DUP_COUNT, pa.array(dup_count, type=pa.int32())), groups


def apply_decisions(table: pa.Table) -> pa.Table:
    """Override :func:`mark_duplicates`' local answer with the run-wide decisions in
    ``_cur_dup_decision``: losers become ``duplicate`` (their local count goes), winners get the run-wide count."""
    if columns.DUP_DECISION not in table.column_names or not table.num_rows:
        return table
    column = table.column(columns.DUP_DECISION)
    decided = pc.is_valid(column).to_numpy(zero_copy_only=False)
    decision = pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    lose = decided & (decision == LOSER)
    win = decided & (decision >= 0)
    counts = table.column(columns.DUP_COUNT).to_numpy(zero_copy_only=False).astype(np.int32)
    counts = np.where(lose, 0, np.where(win, decision, counts)).astype(np.int32)
    table = mark_dropped(table, [REASON_DUPLICATE if x else None for x in lose])
    return set_column(table, columns.DUP_COUNT, pa.array(counts, type=pa.int32()))


class DuplicateMarker:
    """Batch step of the ``dedup`` step: mark the duplicates among one output shard's rows.

    Runs per output shard, on the rows of the shard's own read tasks, after the keys-only shuffle
    (:mod:`curation.keys`) decided every text that other read tasks hold too; those decisions arrive in
    ``_cur_dup_decision`` and override the local answer. The keys were added in the read tasks by
    :func:`add_keys` (with ``cfg.key``), which the pipeline calls for every batch."""

    def __init__(self, cfg: DedupConfig = DedupConfig(), text_column: str = "text") -> None:
        self.cfg = cfg
        self.text_column = text_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        return apply_decisions(mark_duplicates(batch)[0])
