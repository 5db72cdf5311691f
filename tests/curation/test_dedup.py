"""Exact dedup: keys, shard assignment and the smallest-id rule, without Ray."""

import random

import pyarrow as pa

from curation import columns
from curation.dedup import DedupConfig, add_keys, dedup_key, mark_duplicates, shard_of


def _table(ids, texts, reasons=None):
    return pa.table({
        columns.ID: ids,
        "text": pa.array(texts, pa.large_string()),
        columns.DROP_REASON: pa.array(reasons or [None] * len(ids), pa.string()),
    })


def test_key_is_128_bit_and_modes_differ():
    k = dedup_key("Hello  World")
    assert isinstance(k, bytes) and len(k) == 16
    assert dedup_key("Hello  World", "normalized") == dedup_key("hello world", "normalized")
    assert dedup_key("Hello  World") != dedup_key("hello world")
    assert dedup_key("Straße", "normalized") == dedup_key("STRASSE", "normalized")  # casefold, not lower


def test_keeps_smallest_id_and_counts_groups():
    t = add_keys(_table(["c", "a", "b", "d"], ["x", "x", "y", "x"]), "text", 4, DedupConfig())
    out, groups = mark_duplicates(t)
    assert groups == 1
    assert out.column(columns.DROP_REASON).to_pylist() == ["duplicate", None, None, "duplicate"]
    assert out.column(columns.DUP_COUNT).to_pylist() == [0, 2, 0, 0]


def test_dropped_rows_do_not_take_part_and_spread_over_shards():
    t = _table(["a", "b", "c"], ["x", None, "x"], [None, "empty_text", "language"])
    t = add_keys(t, "text", 8, DedupConfig())
    assert t.column(columns.DEDUP_KEY).to_pylist()[1:] == [None, None]
    out, groups = mark_duplicates(t)
    assert groups == 0
    assert out.column(columns.DROP_REASON).to_pylist() == [None, "empty_text", "language"]


def test_result_does_not_depend_on_row_order_or_partitioning():
    rng = random.Random(0)
    texts = [f"doc {rng.randrange(50)}" for _ in range(400)]
    ids = [f"id{i:04d}" for i in range(400)]
    whole, _ = mark_duplicates(add_keys(_table(ids, texts), "text", 4, DedupConfig()))
    kept = {i for i, r in zip(ids, whole.column(columns.DROP_REASON).to_pylist()) if r is None}
    # shuffle rows, split by shard as the pipeline does, dedup each shard alone
    order = list(range(400))
    rng.shuffle(order)
    shuffled = add_keys(_table([ids[i] for i in order], [texts[i] for i in order]), "text", 4, DedupConfig())
    kept2 = set()
    for s in range(4):
        part = shuffled.filter(pa.compute.equal(shuffled.column(columns.SHARD), s))
        part, _ = mark_duplicates(part)
        kept2 |= {i for i, r in zip(part.column(columns.ID).to_pylist(), part.column(columns.DROP_REASON).to_pylist()) if r is None}
    assert kept == kept2
    assert len(kept) == len(set(texts))
    assert all(min(i for i, t in zip(ids, texts) if t == text) in kept for text in set(texts))


def test_shard_is_stable():
    k = dedup_key("abc")
    assert shard_of(k, 7) == shard_of(dedup_key("abc"), 7) == int.from_bytes(k[:8], "little") % 7


def test_dedup_off_still_assigns_shards_by_id():
    t = add_keys(_table(["a", "b"], ["x", "x"]), "text", 3, None)
    assert t.column(columns.DEDUP_KEY).null_count == 2
    out, groups = mark_duplicates(t)
    assert groups == 0 and out.column(columns.DROP_REASON).null_count == 2
