"""Keys-only exact dedup: only (hash, id, read task, row) keys cross the shuffle, never the documents.

Why: moving every kept document to the shard that holds its twins is the corpus crossing the network once
more. Deciding which copy of a text stays needs only the 128-bit hash of its dedup key and its id (the
smallest id wins, :func:`curation.dedup.mark_duplicates`); the documents can stay where their read task left
them, and the losers are dropped there.

The three steps, each a pure function on Arrow tables (unit-tested without Ray):

1. :func:`task_keys`, in each read task: one key row per distinct hash among the task's live rows (its
   smallest id, that row's position in the task and how many copies the task holds); copies inside one
   task never leave it. Each key row goes to the key partition ``shard_of(hash)``.
2. :func:`decide`, one call per key partition: every copy of a text is in one partition; sorted by
   (hash, id, task, row), the first key row of each hash seen from more than one task wins. A decision row
   says (task, row, ``dup_count``): the global winner with the copies removed across the run, or ``-1``, a
   loser. Hashes that only one task holds need no decision (step 3 finds the same answer locally).
3. :func:`curation.dedup.apply_decisions`, in the shard stage, after :func:`~curation.dedup.mark_duplicates` ran on the
   rows of the shard's own read tasks: the decisions override the local answer for hashes that crossed tasks.

The result is the same rows dropped, and the same ``_dup_count`` on the same winners, as one
``mark_duplicates`` over the whole corpus: the global smallest id of a hash is the smallest of the tasks'
smallest ids, and ties of equal ids break by (task, row) in both, as they did when all copies met in one shard.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import columns
from curation.dedup import KEY_TYPE, LOSER
from curation.steps.base import live_mask

HASH, KEY_ID, TASK, ROW, COPIES = "hash", "id", "task", "row", "copies"
KEY_SCHEMA = pa.schema([pa.field(HASH, KEY_TYPE), pa.field(KEY_ID, pa.string()), pa.field(TASK, pa.int32()),
                        pa.field(ROW, pa.int32()), pa.field(COPIES, pa.int32())])
"""What crosses the shuffle per distinct text of a read task: 16 + 12 bytes plus the id."""
DUP_COUNT = "dup_count"
DECISION_SCHEMA = pa.schema([pa.field(TASK, pa.int32()), pa.field(ROW, pa.int32()), pa.field(DUP_COUNT, pa.int32())])
"""What comes back: (task, row, copies removed) for a winner, (task, row, -1) for a loser."""


def _new_group(hashes: pa.Array) -> np.ndarray:
    """True where a sorted array of 16-byte hashes starts a new run of equal hashes."""
    n = len(hashes)
    if not n:
        return np.zeros(0, dtype=bool)
    buf = np.frombuffer(hashes.buffers()[1], dtype=np.uint8, count=(hashes.offset + n) * 16)
    rows = buf.reshape(-1, 16)[hashes.offset:]
    start = np.ones(n, dtype=bool)
    start[1:] = np.any(rows[1:] != rows[:-1], axis=1)
    return start


def task_keys(table: pa.Table, task: int) -> pa.Table:
    """The key rows read task ``task`` sends to the shuffle: per distinct hash among its live keyed rows, the
    smallest id (ties: the first row), its position in ``table`` and the number of copies.

    ``table`` holds the task's rows in the order they are persisted (row ``i`` is the task's ``i``-th row);
    it carries ``_cur_dedup_key`` (from :func:`curation.dedup.add_keys`) and, optionally, ``_cur_shard``."""
    if columns.DEDUP_KEY not in table.column_names or not table.num_rows:
        return KEY_SCHEMA.empty_table()
    keyed = pc.and_(pc.is_valid(table.column(columns.DEDUP_KEY)), pa.array(live_mask(table), type=pa.bool_()))
    idx = np.flatnonzero(keyed.to_numpy(zero_copy_only=False))
    if not len(idx):
        return KEY_SCHEMA.empty_table()
    sub = pa.table({HASH: table.column(columns.DEDUP_KEY).take(pa.array(idx)).combine_chunks(),
                    KEY_ID: table.column(columns.ID).take(pa.array(idx)).cast(pa.string()),
                    ROW: pa.array(idx, type=pa.int32())})
    sub = sub.sort_by([(HASH, "ascending"), (KEY_ID, "ascending"), (ROW, "ascending")])
    hashes = sub.column(HASH).combine_chunks()
    starts = np.flatnonzero(_new_group(hashes))
    copies = np.diff(np.append(starts, len(hashes))).astype(np.int32)
    first = sub.take(pa.array(starts))
    return pa.table({HASH: first.column(HASH), KEY_ID: first.column(KEY_ID),
                     TASK: pa.array(np.full(len(starts), task, dtype=np.int32)), ROW: first.column(ROW),
                     COPIES: pa.array(copies)}, schema=KEY_SCHEMA)


def decide(keys: pa.Table) -> pa.Table:
    """The decisions of one key partition: for each hash sent by more than one read task, the smallest
    (id, task, row) wins with ``dup_count`` = all copies - 1; the other tasks' key rows lose (``-1``).
    Sorted by (task, row)."""
    if keys.num_rows < 2:
        return DECISION_SCHEMA.empty_table()
    keys = keys.sort_by([(HASH, "ascending"), (KEY_ID, "ascending"), (TASK, "ascending"), (ROW, "ascending")])
    start = _new_group(keys.column(HASH).combine_chunks())
    group = np.cumsum(start) - 1
    sizes = np.bincount(group)
    shared = sizes[group] > 1  # hashes only one task holds are decided in that task
    copies = np.bincount(group, weights=keys.column(COPIES).to_numpy()).astype(np.int64)
    dup = np.where(start, copies[group] - 1, LOSER).astype(np.int32)
    picked = np.flatnonzero(shared)
    out = pa.table({TASK: keys.column(TASK).take(pa.array(picked)), ROW: keys.column(ROW).take(pa.array(picked)),
                    DUP_COUNT: pa.array(dup[picked])}, schema=DECISION_SCHEMA)
    return out.sort_by([(TASK, "ascending"), (ROW, "ascending")])


def decision_column(num_rows: int, decisions: pa.Table) -> pa.Array:
    """One read task's decisions (its rows of :func:`decide`'s output) as a column over its ``num_rows`` rows:
    null where no decision was needed."""
    values = np.zeros(num_rows, dtype=np.int32)
    has = np.zeros(num_rows, dtype=bool)
    if decisions.num_rows:
        rows = decisions.column(ROW).to_numpy()
        if rows.max() >= num_rows:
            raise RuntimeError(f"a dedup decision names row {rows.max()} of a read task of {num_rows} rows: the "
                               f"work folder is inconsistent; start over with --overwrite")
        values[rows] = decisions.column(DUP_COUNT).to_numpy()
        has[rows] = True
    return pa.array(values, type=pa.int32(), mask=~has)


def assign_shards(sizes: Sequence[int], num_shards: int) -> list[int]:
    """Output shard of each read task: contiguous runs of tasks, cut where their cumulative input bytes cross
    a multiple of total / ``num_shards`` (by each task's midpoint). Decided from the plan alone, so every
    run of the same plan writes the same rows to the same files. Tasks of unknown size (0) weigh one byte."""
    weights = [max(1, int(s)) for s in sizes]
    total = sum(weights)
    out, before = [], 0
    for w in weights:
        out.append(min(num_shards - 1, (2 * before + w) * num_shards // (2 * total)))
        before += w
    return out
