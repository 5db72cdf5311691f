"""The three persisted stages of a curation run, as plain classes that Ray maps over one item at a time
(:func:`curation.pipeline.run` orders them; unit tests call them without Ray).

Work folder (``OUTPUT/.curation/work/``), every file written atomically, each stage's JSON its "done" mark::

    tasks/task-NNNNNN.PPP.parquet   stage 1: read task N's cleaned rows, in read order (dropped rows: id and
                                    reason only); they stay here until stage 2 of their output shard reads them
    tasks/task-NNNNNN.keys.parquet  stage 1: its dedup keys (curation.keys.task_keys), sorted by key partition,
                                    one row group per partition
    tasks/task-NNNNNN.json          stage 1: its counts and the files above
    dedup/part-PPPPP.parquet        dedup: decisions of key partition P, sorted by (task, row), one row group
                                    per output shard; dedup/part-PPPPP.json: its counts and bytes
    shards/shard-SSSSS.json         stage 2: output shard S written (data/, heldout/, dropped/ part-SSSSS)

Only keys (about 30 bytes plus the id per distinct text of a read task) and decisions move between tasks;
a document is read by its read task, written once to ``tasks/``, read once by its output shard.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import columns, keys, layout, schema, split
from curation.config import RunConfig
from curation.dedup import keys_and_shards, set_keys
from curation.io import ReadAccount, ReadTask, output_table, read_task, shard_name, write_table
from curation.report import StepStats
from curation.steps.base import Step, Texts, live_mask, runs_on_texts
from curation.steps.registry import CLEAN, SHARD, BatchStep, StepSpec, step_columns

PARTITION_STEP = "dedup"
"""The step whose key partitions the dedup keys: stage 1 hashes each live row's dedup key
(:func:`curation.dedup.add_keys`), so every copy of a text meets its twins in one key partition. Without that
step no keys are made and the dedup stage does nothing."""
EMPTY_AFTER_CLEANING = "empty_after_cleaning"
DATA_DIR = layout.DATA_DIR
HELDOUT_DIR = layout.HELDOUT_DIR
DROPPED_DIR = layout.DROPPED_DIR
SPILL_BYTES = 256 * 2**20
"""A read task keeps at most this much cleaned data in memory before it writes a part of its result."""


def make_step(spec: StepSpec, cfg: RunConfig) -> BatchStep:
    """The batch callable of one step, configured from the run config."""
    return spec.make(cfg.step_config(spec.name), cfg.text_column)


def run_text_step(name: str, step: Step, texts: Texts, stats: dict[str, StepStats],
                  counted: tuple[int, int]) -> tuple[int, int]:
    """:func:`run_step` for a step that works on :class:`Texts`: the same counts, no Arrow in between.
    ``counted`` is ``texts.live_chars()`` as the step finds them (what the step before counted on its way out);
    returns them as the step leaves them, for the next one."""
    rows_in, chars_in = counted
    t0 = time.perf_counter()
    step.apply(texts)
    seconds = time.perf_counter() - t0
    rows_out, chars_out = texts.live_chars()
    stats.setdefault(name, StepStats()).add(StepStats(rows_in, rows_out, chars_in, chars_out, seconds))
    return rows_out, chars_out


def _live_chars(batch: pa.Table, text_column: str) -> tuple[int, int]:
    """(live rows, characters in live rows) of a batch, computed in Arrow."""
    live = pa.array(live_mask(batch), type=pa.bool_())
    rows = int(pc.sum(live).as_py() or 0)
    lengths = pc.utf8_length(batch.column(text_column))
    chars = pc.sum(pc.if_else(live, lengths, 0)).as_py() or 0
    return rows, int(chars)


def run_step(name: str, step: BatchStep, batch: pa.Table, text_column: str,
             stats: dict[str, StepStats]) -> pa.Table:
    """Run one step on a batch and add its rows/characters in and out and its time to ``stats``."""
    rows_in, chars_in = _live_chars(batch, text_column)
    t0 = time.perf_counter()
    batch = step(batch)
    seconds = time.perf_counter() - t0
    rows_out, chars_out = _live_chars(batch, text_column)
    stats.setdefault(name, StepStats()).add(StepStats(rows_in, rows_out, chars_in, chars_out, seconds))
    return batch


def _shrink_dropped(batch: pa.Table, text_column: str) -> pa.Table:
    """Dropped rows keep their id and reason but not their text: the per-task results carry no dead weight."""
    dropped = pc.is_valid(batch.column(columns.DROP_REASON))
    texts = pc.if_else(dropped, pa.scalar(None, pa.large_string()), batch.column(text_column).cast(pa.large_string()))
    return batch.set_column(batch.schema.get_field_index(text_column), text_column, texts)


class CleanStage:
    """The ``clean`` steps on one batch, then dedup keys and key partitions (``num_shards`` of them). Plain
    Python: unit tests call it without Ray."""

    def __init__(self, cfg: RunConfig, num_shards: int) -> None:
        self.cfg = cfg
        self.num_shards = num_shards
        self.specs = cfg.selected_steps(CLEAN)
        self._steps: list[BatchStep] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_steps": None}  # steps (and their models) are rebuilt in each worker

    def __call__(self, batch: pa.Table, stats: dict[str, StepStats]) -> pa.Table:
        if self._steps is None:
            self._steps = [make_step(spec, self.cfg) for spec in self.specs]
        tc = self.cfg.text_column
        texts = Texts(batch, tc)
        counted = texts.live_chars()
        stats.setdefault("read", StepStats()).add(StepStats(batch.num_rows, counted[0], 0, counted[1], 0.0))
        for spec, step in zip(self.specs, self._steps):
            if runs_on_texts(step):  # the texts stay Python strings between steps
                counted = run_text_step(spec.name, step, texts, stats, counted)
            else:
                batch = run_step(spec.name, step, texts.into(batch), tc, stats)
                texts = Texts(batch, tc)
                counted = texts.live_chars()
        # text the cleaning steps emptied (an HTML page of only scripts) is dropped, with its own reason
        texts.mark([EMPTY_AFTER_CLEANING if text == "" else None for text in texts.values])
        partition = self.cfg.step_config(PARTITION_STEP) if PARTITION_STEP in self.cfg.ordered_steps else None
        ids = batch.column(columns.ID).to_pylist()
        live = [why is None for why in texts.reasons]
        keys, shards = keys_and_shards(texts.values, live, ids, self.num_shards, partition)
        return _shrink_dropped(set_keys(texts.into(batch), keys, shards), tc)



def task_file(work: Path, index: int) -> Path:
    return work / "tasks" / f"task-{index:06d}.json"


def dedup_file(work: Path, partition: int) -> Path:
    return work / "dedup" / f"part-{partition:05d}.json"


def shard_file(work: Path, shard: int) -> Path:
    return work / "shards" / f"shard-{shard:05d}.json"


def write_parts(table: pa.Table, by: str, path: Path) -> dict[str, int]:
    """Write ``table`` sorted by the int column ``by`` (stably), one Parquet row group per value of ``by``
    (the column itself is not written); returns ``{value: row group}``. How the small per-partition and
    per-shard pieces of the key shuffle are laid out, so a reader takes only its own row group."""
    table = table.take(pc.sort_indices(table, [(by, "ascending")]))
    values = table.column(by).to_numpy()
    data = table.drop_columns([by])
    groups: dict[int, int] = {}
    bounds = [0, *(np.flatnonzero(np.diff(values)) + 1).tolist(), len(values)]  # one run per value: sorted

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, data.schema, compression="lz4") as writer:
            for start, end in itertools.pairwise(bounds):
                groups[int(values[start])] = len(groups)
                writer.write_table(data.slice(start, end - start), row_group_size=end - start)

    layout.atomic_write(path, write)
    return groups


def spill(tables: list[pa.Table], path: Path) -> dict[str, Any]:
    """Write one part of a read task's result, rows in read order; returns its file name, row count and schema
    (from which the run's output schema is unified)."""
    unified, _ = schema.unify(t.schema for t in tables)
    table = pa.concat_tables([schema.conform(t, unified) for t in tables])
    layout.atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="lz4"))
    return {"file": path.name, "rows": table.num_rows, "schema": schema.schema_to_json(table.schema)}


class ReadCleanStage:
    """Ray adapter of stage 1: planned read tasks in; each one read, cleaned and written to the work folder,
    with its dedup keys.

    Reading and cleaning are one task on purpose: a document is read, cleaned and written by the same process,
    and the read tasks spread over every CPU (when they were two fused Ray Data operators, Ray Data bundled
    every read task into one Ray task and left the other CPUs idle). A task whose result file exists already (``--resume``, or a retry after the write) is not done again.
    """

    def __init__(self, cfg: RunConfig, num_shards: int, work: str, reserved: frozenset[str]) -> None:
        self.cfg = cfg
        self.work = Path(work)
        self.reserved = reserved
        self.clean = CleanStage(cfg, num_shards)

    def __call__(self, items: pa.Table) -> Iterator[pa.Table]:
        for item in items.to_pylist():
            index = item.pop("index")
            reused = task_file(self.work, index).is_file()
            if not reused:
                self.run_task(index, ReadTask(**item))
            yield pa.table({"index": [index], "reused": [reused]})

    def run_task(self, index: int, task: ReadTask) -> None:
        tc, size = self.cfg.text_column, self.cfg.batch_size
        account = ReadAccount(source=task.source)
        stats: dict[str, StepStats] = {}
        rows = 0
        buffer: list[pa.Table] = []
        buffered = 0
        parts: list[dict[str, Any]] = []
        keyed: list[pa.Table] = []  # (key, id, partition, drop reason) of every row, for the task's keys
        folder = self.work / "tasks"
        for table in read_task(task, tc, self.cfg.reader, self.reserved, account):
            rows += table.num_rows
            for start in range(0, table.num_rows, size):
                cleaned = self.clean(table.slice(start, size), stats)
                keyed.append(cleaned.select([columns.DEDUP_KEY, columns.ID, columns.SHARD, columns.DROP_REASON]))
                buffer.append(cleaned)
                buffered += cleaned.nbytes
                if buffered >= SPILL_BYTES:
                    parts.append(spill(buffer, folder / f"task-{index:06d}.{len(parts):03d}.parquet"))
                    buffer, buffered = [], 0
        if buffer:
            parts.append(spill(buffer, folder / f"task-{index:06d}.{len(parts):03d}.parquet"))
        key_record = self.write_keys(index, keyed)
        layout.write_json_atomic(task_file(self.work, index), {
            "index": index, "source": task.source, "records": account.records, "rows": rows,
            "corrupt": account.corrupt, "stringified": sorted(account.stringified), "parts": parts,
            "keys": key_record, "steps": {k: asdict(v) for k, v in stats.items()},
        })

    def write_keys(self, index: int, keyed: list[pa.Table]) -> dict[str, Any] | None:
        """Write the task's key rows by key partition; None when it has none (dedup off, or no live row)."""
        if not keyed:
            return None
        table = pa.concat_tables(keyed, promote_options="permissive")
        found = keys.task_keys(table, index)
        if not found.num_rows:
            return None
        partition = table.column(columns.SHARD).take(found.column(keys.ROW))
        path = self.work / "tasks" / f"task-{index:06d}.keys.parquet"
        groups = write_parts(found.append_column("_partition", partition), "_partition", path)
        return {"file": path.name, "rows": found.num_rows, "groups": {str(k): v for k, v in groups.items()}}


class DedupStage:
    """Ray adapter of the dedup stage: one key partition; its row group of every read task's keys, the
    decisions (:func:`curation.keys.decide`), written by output shard. Counts the Arrow bytes it read and
    wrote: what crossed the shuffle."""

    def __init__(self, work: str, task_shards: list[int]) -> None:
        self.work = Path(work)
        self.task_shards = task_shards

    def __call__(self, items: pa.Table) -> Iterator[pa.Table]:
        for item in items.to_pylist():
            partition = item["partition"]
            reused = dedup_file(self.work, partition).is_file()
            if not reused:
                self.run_partition(partition, json.loads(item["pieces"]))
            yield pa.table({"partition": [partition], "reused": [reused]})

    def run_partition(self, partition: int, pieces: list[list[Any]]) -> None:
        t0 = time.perf_counter()
        tables = [pq.ParquetFile(self.work / "tasks" / name).read_row_group(group) for name, group in pieces]
        found = pa.concat_tables(tables) if tables else keys.KEY_SCHEMA.empty_table()
        decisions = keys.decide(found)
        record: dict[str, Any] = {"key_rows": found.num_rows, "key_bytes": sum(t.nbytes for t in tables),
                                  "decision_rows": decisions.num_rows, "decision_bytes": decisions.nbytes,
                                  "file": None, "groups": {}}
        if decisions.num_rows:
            shards = pa.array([self.task_shards[t] for t in decisions.column(keys.TASK).to_pylist()], pa.int32())
            path = self.work / "dedup" / f"part-{partition:05d}.parquet"
            groups = write_parts(decisions.append_column("_shard", shards), "_shard", path)
            record.update(file=path.name, groups={str(k): v for k, v in groups.items()})
        record["seconds"] = time.perf_counter() - t0
        layout.write_json_atomic(dedup_file(self.work, partition), record)


class ShardStage:
    """Ray adapter of stage 2: one output shard; the cleaned rows of its read tasks (a contiguous run of them,
    :func:`curation.keys.assign_shards`) with the dedup decisions that concern them, the ``shard`` steps
    (dedup), then dropped rows set apart, the rest sorted by id, split into training and held-out rows
    (``heldout_fraction``: the run's effective fraction) and written atomically."""

    def __init__(self, cfg: RunConfig, work: str, out_schema: str, heldout_fraction: float = 0.0) -> None:
        self.cfg = cfg
        self.work = Path(work)
        self.out_schema = out_schema
        self.heldout_fraction = heldout_fraction
        self.specs = cfg.selected_steps(SHARD)
        self._steps: list[BatchStep] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_steps": None}  # steps are rebuilt in each worker

    def __call__(self, items: pa.Table) -> Iterator[pa.Table]:
        for item in items.to_pylist():
            shard = item["shard"]
            reused = shard_file(self.work, shard).is_file()
            if not reused:
                self.run_shard(shard, json.loads(item["tasks"]), json.loads(item["decisions"]))
            yield pa.table({"shard": [shard], "reused": [reused]})

    def load(self, tasks: list[list[Any]], decision_pieces: list[list[Any]]) -> pa.Table:
        """The rows of the shard's read tasks ``[[task, [part files]], ...]``, in task order then read order,
        in the run's one schema, with ``_cur_dup_decision`` from the decision row groups ``[[file, group]]``."""
        target = schema.schema_from_json(self.out_schema)
        found = [pq.ParquetFile(self.work / "dedup" / name).read_row_group(group) for name, group in decision_pieces]
        decisions = pa.concat_tables(found) if found else keys.DECISION_SCHEMA.empty_table()
        task_col = decisions.column(keys.TASK)
        tables = []
        for task, files in tasks:
            parts = [schema.conform(pq.read_table(self.work / "tasks" / name), target) for name in files]
            rows = pa.concat_tables(parts) if parts else target.empty_table()
            mine = decisions.filter(pc.equal(task_col, task)) if decisions.num_rows else decisions
            tables.append(rows.append_column(columns.DUP_DECISION, keys.decision_column(rows.num_rows, mine)))
        return pa.concat_tables(tables) if tables else target.empty_table()

    def run_shard(self, shard: int, tasks: list[list[Any]], decision_pieces: list[list[Any]]) -> None:
        from curation.report import empty_summary, shard_summary

        tc = self.cfg.text_column
        table = self.load(tasks, decision_pieces) if tasks else None
        if table is None or not table.num_rows:  # no read task here (few tasks, many shards), or all empty
            layout.write_json_atomic(shard_file(self.work, shard), {"summary": empty_summary(shard), "files": [],
                                                                    "split": {}})
            return
        if self._steps is None:
            self._steps = [make_step(spec, self.cfg) for spec in self.specs]
        stats: dict[str, StepStats] = {}
        for spec, step in zip(self.specs, self._steps):
            table = run_step(spec.name, step, table, tc, stats)  # steps skip the rows dropped before them
        dropped_mask = pc.is_valid(table.column(columns.DROP_REASON))
        dropped = table.filter(dropped_mask)
        kept = table.filter(pc.invert(dropped_mask))
        kept = kept.sort_by([(columns.ID, "ascending")])
        out = Path(self.cfg.output)
        files = []
        train, heldout = split.split_table(kept, self.cfg.split, self.heldout_fraction, tc)
        for folder, rows in ((DATA_DIR, train), (HELDOUT_DIR, heldout)):
            if rows.num_rows:
                name = f"{folder}/{shard_name(shard, self.cfg.writer)}"
                write_table(output_table(rows, tc, step_columns(self.cfg.step_specs)), out / name, self.cfg.writer)
                files.append(name)
        if self.cfg.writer.write_dropped and dropped.num_rows:
            name = f"{DROPPED_DIR}/{shard_name(shard, self.cfg.writer)}"
            cols = dropped.select([columns.ID, columns.DROP_REASON]).rename_columns(["id", "drop_reason"])
            write_table(cols.sort_by([("id", "ascending")]), out / name, self.cfg.writer)
            files.append(name)
        summary = shard_summary(shard, kept, dropped, stats, tc, step_columns(self.cfg.selected_steps()))
        sides = {"train": split.side_counts(train, tc), "heldout": split.side_counts(heldout, tc)}
        layout.write_json_atomic(shard_file(self.work, shard), {"summary": summary, "files": files, "split": sides})
