"""Keys-only dedup without Ray: the per-task keys, the decisions, and that together they drop exactly the rows
one ``mark_duplicates`` over the whole corpus drops (the implementation before keys-only dedup), whatever the
split into read tasks and output shards."""

import random

import numpy as np
import pyarrow as pa
import pytest

from curation import columns, keys
from curation.dedup import DedupConfig, DuplicateMarker, add_keys, mark_duplicates


def _table(ids, texts, reasons=None):
    t = pa.table({columns.ID: pa.array(ids, pa.string()), "text": pa.array(texts, pa.large_string()),
                  columns.DROP_REASON: pa.array(reasons or [None] * len(ids), pa.string())})
    return add_keys(t, "text", 4, DedupConfig())


def _decisions(table):
    """(drop reason, dup count) by row of a table ``mark_duplicates`` (or the dedup step) marked."""
    return list(zip(table.column(columns.DROP_REASON).to_pylist(), table.column(columns.DUP_COUNT).to_pylist()))


def keys_only(tasks, task_shards, partitions=3, decide=keys.decide):
    """The pipeline's dedup without Ray: keys per task, decisions per key partition, the dedup step per output
    shard over its tasks' rows. Returns the marked rows in task order (each task's rows in its order)."""
    found = pa.concat_tables([keys.task_keys(t, i) for i, t in enumerate(tasks)])
    hashes = found.column(keys.HASH).to_pylist()
    part = np.array([int.from_bytes(h[:8], "little") % partitions for h in hashes], dtype=int)
    decisions = pa.concat_tables([decide(found.filter(pa.array(part == p))) for p in range(partitions)])
    marker = DuplicateMarker()
    out = [None] * len(tasks)
    for shard in sorted(set(task_shards)):
        owned = [i for i, s in enumerate(task_shards) if s == shard]
        tables = []
        for i in owned:
            mine = decisions.filter(pa.compute.equal(decisions.column(keys.TASK), i))
            tables.append(tasks[i].append_column(columns.DUP_DECISION, keys.decision_column(tasks[i].num_rows, mine)))
        marked = marker(pa.concat_tables(tables))
        start = 0
        for i in owned:
            out[i] = marked.slice(start, tasks[i].num_rows)
            start += tasks[i].num_rows
    return pa.concat_tables(out)


def _random_corpus(seed, rows=600, texts=80, ids=None):
    rng = random.Random(seed)
    ids = ids or [f"id{rng.randrange(10**6):06d}" for _ in range(rows)]
    body = [f"text {rng.randrange(texts)}" for _ in range(rows)]
    reasons = [("language" if rng.random() < 0.1 else None) for _ in range(rows)]
    whole = _table(ids, body, reasons)
    cuts = sorted(rng.sample(range(1, rows), 7))
    tasks = [whole.slice(a, b - a) for a, b in zip([0, *cuts], [*cuts, rows])]
    return whole, tasks


@pytest.mark.parametrize("seed", range(6))
def test_same_decisions_as_one_mark_duplicates_over_everything(seed):
    whole, tasks = _random_corpus(seed, ids=[f"i{n % 250:04d}" for n in range(600)] if seed % 2 else None)
    expected = _decisions(mark_duplicates(whole)[0])
    for task_shards in ([0] * 8, list(range(8)), [0, 0, 1, 1, 1, 2, 2, 2], [0, 1, 1, 1, 1, 1, 1, 3]):
        assert _decisions(keys_only(tasks, task_shards)) == expected, task_shards


def test_a_dedup_that_keeps_the_largest_id_is_caught():
    """The mutant: decisions that keep the largest id. The equivalence check must see it."""

    def largest_wins(found):
        flipped = found.set_column(1, keys.KEY_ID, pa.array(
            ["".join(chr(0x10FFFF - ord(c)) for c in i) for i in found.column(keys.KEY_ID).to_pylist()]))
        return keys.decide(flipped)

    whole, tasks = _random_corpus(1)
    expected = _decisions(mark_duplicates(whole)[0])
    assert _decisions(keys_only(tasks, list(range(8)), decide=largest_wins)) != expected


def test_task_keys_send_one_row_per_text_with_its_smallest_id_and_copies():
    t = _table(["c", "a", "b", "d", "e"], ["x", "x", "y", "x", "z"], [None, None, None, None, "language"])
    found = keys.task_keys(t, 7).to_pylist()
    by_id = {r["id"]: r for r in found}
    assert set(by_id) == {"a", "b"}  # "e" is dropped: it takes no part
    assert by_id["a"]["row"] == 1 and by_id["a"]["copies"] == 3 and by_id["a"]["task"] == 7
    assert by_id["b"]["copies"] == 1


def test_decide_names_only_texts_that_several_tasks_hold():
    a = keys.task_keys(_table(["b", "q"], ["x", "only here"]), 0)
    b = keys.task_keys(_table(["z", "a", "a2"], ["y", "x", "x"]), 1)
    decided = keys.decide(pa.concat_tables([a, b])).to_pylist()
    assert decided == [{"task": 0, "row": 0, "dup_count": keys.LOSER},
                       {"task": 1, "row": 1, "dup_count": 2}]  # "a" wins over "b": 3 copies, 2 removed


def test_equal_ids_break_ties_by_task_then_row_like_one_table():
    whole = _table(["same"] * 4, ["x"] * 4)
    tasks = [whole.slice(0, 2), whole.slice(2, 2)]
    assert _decisions(keys_only(tasks, [1, 0])) == _decisions(mark_duplicates(whole)[0])


def test_output_shards_own_contiguous_tasks_by_size():
    assert keys.assign_shards([10, 10, 10, 10], 2) == [0, 0, 1, 1]
    assert keys.assign_shards([100, 1, 1, 1], 2) == [0, 1, 1, 1]
    assert keys.assign_shards([5], 4) == [2]  # one task, the rest of the shards empty
    assert keys.assign_shards([0, 0, 0], 3) == [0, 1, 2]  # unknown sizes (HF) weigh the same
    shards = keys.assign_shards([random.Random(0).randrange(1, 10**6) for _ in range(1000)], 37)
    assert shards == sorted(shards) and set(shards) == set(range(37))


def test_no_keys_without_dedup_and_an_out_of_range_row_is_an_error():
    t = add_keys(_table(["a"], ["x"]).drop_columns([columns.DEDUP_KEY]), "text", 2, None)
    assert keys.task_keys(t, 0).num_rows == 0
    with pytest.raises(RuntimeError, match="--overwrite"):
        keys.decision_column(2, pa.table({"task": pa.array([0], pa.int32()), "row": pa.array([5], pa.int32()),
                                          "dup_count": pa.array([1], pa.int32())}))
