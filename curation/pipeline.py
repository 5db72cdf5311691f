"""Builds and runs the Ray Data plan. Which steps run in which stage, and in what order, comes from the step
registry (:mod:`curation.steps.registry`); this module runs them.

Plan::

    read tasks ─► stage 1, one Ray task per read task: read, then the ``clean`` steps batch by batch (normalize,
    html, urls, whitespace, quality, language), then the dedup key and output shard of every row; its rows land
    in ``.curation/work/tasks/`` sorted by output shard, one Parquet row group per shard, plus a small JSON of
    its counts (the task's "done" mark)
          ─► stage 2, one Ray task per output shard: its row group of every task's result, the ``shard`` steps
    (dedup, PII), sort by id, the held-out split (:mod:`curation.split`), write ``data/part-NNNNN`` and
    ``heldout/part-NNNNN`` atomically, plus a JSON of the shard's counts
          ─► report, conservation check, report files, then ``_SUCCESS`` (see :mod:`curation.layout`).

Why through files and not a Ray shuffle: every finished read task and every finished shard is on disk, so a
run killed at any point (a worker, the driver, the whole cluster) is finished by ``--resume`` redoing only
the unfinished tasks, with byte-identical output. The output folder must be on a filesystem every worker sees,
which writing the shards already needed. Documents cross the network once, as they did through Ray's object
store; and the per-task files are columnar, so a step that needs only (hash, id) can read just those.

Nothing but small per-task and per-shard counts reaches the driver. Every step runs as a Ray *task*, not an
actor pool: models (the language ID model) are loaded once per worker process and cached there.

Counts are exact when Ray retries a task: a task's counts are written with its results, atomically, and a
retried task overwrites both with the same bytes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import columns, layout, schema, split
from curation.config import RunConfig, to_dict
from curation.dedup import add_keys
from curation.io import (
    ReadAccount,
    ReadTask,
    output_table,
    plan_reads,
    read_task,
    shard_count,
    shard_name,
    write_table,
)
from curation.report import (
    ConservationError,
    StepStats,
    build_report,
    check_conservation,
    check_reader_conservation,
    fingerprint_inputs,
    preload_plotting,
    write_report,
)
from curation.steps.base import live_mask, mark_dropped
from curation.steps.registry import CLEAN, SHARD, BatchStep, StepSpec, step_columns

log = logging.getLogger("curation")

PARTITION_STEP = "dedup"
"""The step whose key partitions the rows between output shards: stage 1 hashes each live row's dedup key
(:func:`curation.dedup.add_keys`), so every copy of a text meets its twins in one shard. Without that step,
rows are spread by the hash of their id."""
EMPTY_AFTER_CLEANING = "empty_after_cleaning"
DATA_DIR = layout.DATA_DIR
HELDOUT_DIR = layout.HELDOUT_DIR
DROPPED_DIR = layout.DROPPED_DIR
TASKS_DIR = f"{layout.WORK_DIR}/tasks"
SHARDS_DIR = f"{layout.WORK_DIR}/shards"
SPILL_BYTES = 256 * 2**20
"""A read task keeps at most this much cleaned data in memory before it writes a part of its result."""
RETRIES = 3
"""Ray retries a task whose worker died this many times; then the run stops (and ``--resume`` goes on)."""


def make_step(spec: StepSpec, cfg: RunConfig) -> BatchStep:
    """The batch callable of one step, configured from the run config."""
    return spec.make(cfg.step_config(spec.name), cfg.text_column)


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


def _mark_empty(batch: pa.Table, text_column: str) -> pa.Table:
    """Text the cleaning steps emptied (an HTML page of only scripts) is dropped, with its own reason."""
    texts = batch.column(text_column)
    empty = pc.fill_null(pc.equal(pc.utf8_length(texts), 0), False).to_pylist()
    return mark_dropped(batch, [EMPTY_AFTER_CLEANING if e else None for e in empty])


def _shrink_dropped(batch: pa.Table, text_column: str) -> pa.Table:
    """Dropped rows keep their id and reason but not their text: the per-task results carry no dead weight."""
    dropped = pc.is_valid(batch.column(columns.DROP_REASON))
    texts = pc.if_else(dropped, pa.scalar(None, pa.large_string()), batch.column(text_column).cast(pa.large_string()))
    return batch.set_column(batch.schema.get_field_index(text_column), text_column, texts)


class CleanStage:
    """The ``clean`` steps on one batch, then dedup keys and shard numbers. Plain Python: unit tests call it
    without Ray."""

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
        rows_in, chars_in = _live_chars(batch, tc)
        stats.setdefault("read", StepStats()).add(StepStats(batch.num_rows, rows_in, 0, chars_in, 0.0))
        for spec, step in zip(self.specs, self._steps):
            batch = run_step(spec.name, step, batch, tc, stats)
        batch = _mark_empty(batch, tc)
        partition = self.cfg.step_config(PARTITION_STEP) if PARTITION_STEP in self.cfg.ordered_steps else None
        batch = add_keys(batch, tc, self.num_shards, partition)
        return _shrink_dropped(batch, tc)


def _task_file(work: Path, index: int) -> Path:
    return work / "tasks" / f"task-{index:06d}.json"


def _shard_file(work: Path, shard: int) -> Path:
    return work / "shards" / f"shard-{shard:05d}.json"


def spill(tables: list[pa.Table], path: Path) -> dict[str, Any]:
    """Write one part of a read task's result: rows sorted by shard, one row group per shard.

    Returns what stage 2 needs to find each shard's rows (``{"file", "groups": {shard: row group}}``) and the
    part's schema, from which the run's output schema is unified."""
    unified, _ = schema.unify(t.schema for t in tables)
    table = pa.concat_tables([schema.conform(t, unified) for t in tables])
    table = table.take(pc.sort_indices(table, [(columns.SHARD, "ascending")]))
    shards = table.column(columns.SHARD).to_numpy()
    groups: dict[int, int] = {}

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, table.schema, compression="lz4") as writer:
            start = 0
            while start < len(shards):
                shard = int(shards[start])
                end = start
                while end < len(shards) and shards[end] == shard:  # rows are sorted: one run per shard
                    end += 1
                groups[shard] = len(groups)
                writer.write_table(table.slice(start, end - start), row_group_size=end - start)
                start = end

    layout.atomic_write(path, write)
    return {"file": path.name, "groups": {str(k): v for k, v in groups.items()},
            "schema": schema.schema_to_json(table.schema)}


class ReadCleanStage:
    """Ray adapter of stage 1: planned read tasks in; each one read, cleaned and written to the work folder.

    Reading and cleaning are one operator on purpose: as two fused ``map_batches`` Ray Data bundles input rows
    up to the larger batch size, which put every read task into one Ray task and left the other CPUs idle.
    A task whose result file exists already (``--resume``, or a retry after the write) is not done again.
    """

    def __init__(self, cfg: RunConfig, num_shards: int, work: str, reserved: frozenset[str]) -> None:
        self.cfg = cfg
        self.work = Path(work)
        self.reserved = reserved
        self.clean = CleanStage(cfg, num_shards)

    def __call__(self, items: pa.Table) -> Iterator[pa.Table]:
        for item in items.to_pylist():
            index = item.pop("index")
            reused = _task_file(self.work, index).is_file()
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
        folder = self.work / "tasks"
        for table in read_task(task, tc, self.cfg.reader, self.reserved, account):
            rows += table.num_rows
            for start in range(0, table.num_rows, size):
                cleaned = self.clean(table.slice(start, size), stats)
                buffer.append(cleaned)
                buffered += cleaned.nbytes
                if buffered >= SPILL_BYTES:
                    parts.append(spill(buffer, folder / f"task-{index:06d}.{len(parts):03d}.parquet"))
                    buffer, buffered = [], 0
        if buffer:
            parts.append(spill(buffer, folder / f"task-{index:06d}.{len(parts):03d}.parquet"))
        layout.write_json_atomic(_task_file(self.work, index), {
            "index": index, "source": task.source, "records": account.records, "rows": rows,
            "corrupt": account.corrupt, "stringified": sorted(account.stringified), "parts": parts, "steps": {k: asdict(v) for k, v in stats.items()},
        })


class ShardStage:
    """Ray adapter of stage 2: one output shard's rows from every read task; the ``shard`` steps (dedup, PII),
    then dropped rows are set apart, the rest sorted by id, split into training and held-out rows
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
            reused = _shard_file(self.work, shard).is_file()
            if not reused:
                self.run_shard(shard, json.loads(item["pieces"]))
            yield pa.table({"shard": [shard], "reused": [reused]})

    def load(self, pieces: list[list[Any]]) -> pa.Table:
        """The shard's rows from every read task's result, in the run's one schema."""
        target = schema.schema_from_json(self.out_schema)
        tables = [schema.conform(pq.ParquetFile(self.work / "tasks" / name).read_row_group(group), target)
                  for name, group in pieces]
        return pa.concat_tables(tables) if tables else target.empty_table()

    def run_shard(self, shard: int, pieces: list[list[Any]]) -> None:
        from curation.report import empty_summary, shard_summary

        tc = self.cfg.text_column
        if not pieces:  # no read task sent a row here (every input empty, or few rows and many shards)
            layout.write_json_atomic(_shard_file(self.work, shard), {"summary": empty_summary(shard), "files": [],
                                                                     "split": {}})
            return
        table = self.load(pieces)
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
        layout.write_json_atomic(_shard_file(self.work, shard), {"summary": summary, "files": files, "split": sides})


def init_ray(cfg: RunConfig) -> None:
    """Attach to ``--ray-address`` / ``RAY_ADDRESS`` if given, else start an embedded local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        # No runtime_env here: under `ray job submit` the job already has one, and Ray refuses to merge two
        # that set the same keys. The cluster's (or the job's) environment is the one to use.
        log.info("attaching to Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
    else:
        with worker_env(RAY_WORKER_ENV):
            ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, log_to_driver=True, configure_logging=False)


RAY_WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false"}
"""Environment of the local Ray's workers. Not a ``runtime_env``: with one, Ray cannot use the workers it
prestarts at ``ray.init`` and starts others through its runtime-env agent. On the demo run (busy 2-core machine)
that was a fifth of the CPU time of all its processes (15-16 s against 11.5-12.5 s) and stage 1 took 13.5 s
instead of 4-8 s. Under ``ray job submit`` the job's runtime_env sets it (launch/ray/runtime_env.yaml)."""


@contextlib.contextmanager
def worker_env(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` while the local Ray starts, then restore ours: its processes (the raylet, and the workers
    the raylet starts, at once or later) copy the environment they were started with."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _write_empty_shard(cfg: RunConfig, out: Path, out_schema: pa.Schema, folder: str = DATA_DIR) -> str:
    """No row survived (or the inputs held none), or none was held out: one empty shard with the run's columns,
    so ``OUTPUT/data`` (``OUTPUT/heldout``) still reads as a table with a schema (``id``, the text, ``source`` at
    least) instead of as nothing."""
    base = pa.schema([pa.field(columns.ID, pa.string()), pa.field(cfg.text_column, pa.large_string()),
                      pa.field(columns.SOURCE, pa.string())])
    full, _ = schema.unify([base, out_schema])
    name = f"{folder}/{shard_name(0, cfg.writer)}"
    write_table(output_table(full.empty_table(), cfg.text_column, step_columns(cfg.step_specs)), out / name,
                cfg.writer)
    return name


RESUME_IGNORES = ("input", "output", "overwrite", "resume", "progress", "num_cpus", "ray_address")
"""Settings that do not change a run's results: ``--resume`` may change them. ``input`` is compared as the files
it resolves to (``inputs``, ``tasks``), so ``data/raw`` and ``/abs/path/data/raw`` are the same input."""


def plan_record(cfg: RunConfig, tasks: list[ReadTask], num_shards: int,
                fingerprints: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What the results are computed from; ``--resume`` continues only a run planned from the same.
    ``fingerprints``: :func:`fingerprint_inputs` of ``tasks`` when the caller has them already."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in RESUME_IGNORES}
    inputs = {f["path"]: {k: v for k, v in f.items() if k != "path"}
              for f in (fingerprints if fingerprints is not None else fingerprint_inputs(tasks))}
    return {"version": 1, "settings": settings, "num_shards": num_shards, "inputs": inputs,
            "tasks": [asdict(t) for t in tasks]}


def planned_files(cfg: RunConfig, num_shards: int) -> list[str]:
    dirs = ([DATA_DIR] + ([HELDOUT_DIR] if cfg.split.enabled else [])
            + ([DROPPED_DIR] if cfg.writer.write_dropped else []))
    return [f"{d}/{shard_name(s, cfg.writer)}" for d in dirs for s in range(num_shards)]


def _map_tasks(ds: Any, fn: Callable[[pa.Table], Iterator[pa.Table]]) -> int:
    """Run ``fn`` on each item of ``ds`` as its own Ray task, to completion; returns how many items it
    really computed (not found done already).

    Ray Data retries a task whose worker died forever by default; a document that kills its worker every time
    (out of memory) would stall the run. After ``RETRIES`` the run stops, and ``--resume`` goes on. Ray 2.60
    has no named parameter for that yet and warns that extra remote arguments are deprecated, hence the filter."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        mapped = ds.map_batches(fn, batch_size=1, batch_format="pyarrow", max_retries=RETRIES)
    return sum(not row["reused"] for row in mapped.take_all())


def _configure_ray_data(cfg: RunConfig) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.progress
    ctx.enable_operator_progress_bars = cfg.progress


def _stage1(cfg: RunConfig, tasks: list[ReadTask], num_shards: int, work: Path,
            reserved: frozenset[str]) -> tuple[list[dict[str, Any]], int]:
    """Run the read tasks not done yet; return every task's result record, in task order, and how many ran."""
    import ray.data

    todo = [{"index": i, **asdict(t)} for i, t in enumerate(tasks) if not _task_file(work, i).is_file()]
    log.info("stage 1 (read, clean): %d of %d read tasks to do", len(todo), len(tasks))
    ran = 0
    if todo:
        ds = ray.data.from_items(todo, override_num_blocks=len(todo))
        ran = _map_tasks(ds, ReadCleanStage(cfg, num_shards, str(work), reserved))
    records = []
    for i in range(len(tasks)):
        path = _task_file(work, i)
        if not path.is_file():  # pragma: no cover - Ray reported success, so every task wrote its file
            raise RuntimeError(f"read task {i} ({tasks[i].source}) finished without writing {path}")
        records.append(layout.read_json(path))
    return records, ran


def _stage2(cfg: RunConfig, num_shards: int, work: Path, out_schema: pa.Schema,
            task_records: list[dict[str, Any]], heldout_fraction: float) -> tuple[list[dict[str, Any]], int]:
    """Run the shards not done yet; return every shard's record, in shard order, and how many ran."""
    import ray.data

    pieces: dict[int, list[list[Any]]] = {s: [] for s in range(num_shards)}
    for rec in task_records:
        for part in rec["parts"]:
            for shard, group in part["groups"].items():
                pieces[int(shard)].append([part["file"], group])
    todo = [{"shard": s, "pieces": json.dumps(p)} for s, p in pieces.items() if not _shard_file(work, s).is_file()]
    log.info("stage 2 (dedup, PII, write): %d of %d shards to do", len(todo), num_shards)
    ran = 0
    if todo:
        ds = ray.data.from_items(todo, override_num_blocks=len(todo))
        ran = _map_tasks(ds, ShardStage(cfg, str(work), schema.schema_to_json(out_schema), heldout_fraction))
    return [layout.read_json(_shard_file(work, s)) for s in range(num_shards)], ran


def run(cfg: RunConfig, on_ray_started: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Run the pipeline end to end; returns the report (also written to ``output/report.json``).

    Everything that can be checked is checked before Ray starts: inputs, the text column, the output folder
    (nesting, foreign files, writability, a run in progress, ``--resume`` against the recorded plan).
    ``on_ray_started`` is called once Ray is up (the CLI installs its SIGTERM handler there)."""
    t_start = time.time()
    plan = plan_reads(cfg.input, cfg.text_column, cfg.reader, cfg.reserved_columns)
    tasks = plan.tasks
    input_bytes = sum(t.size for t in tasks)
    num_shards = shard_count(input_bytes, cfg.writer)
    fingerprints = fingerprint_inputs(tasks)  # reads each input's first and last MiB: once per run
    state = layout.prepare_output(cfg.output, inputs=cfg.input, overwrite=cfg.overwrite, resume=cfg.resume,
                                  planned_files=planned_files(cfg, num_shards),
                                  plan=plan_record(cfg, tasks, num_shards, fingerprints))
    try:
        return _run_locked(cfg, plan, state, num_shards, input_bytes, fingerprints, t_start, on_ray_started)
    finally:
        state.release()


def _run_locked(cfg: RunConfig, plan: Any, state: layout.OutputState, num_shards: int, input_bytes: int,
                fingerprints: list[dict[str, Any]], t_start: float,
                on_ray_started: Callable[[], Any] | None) -> dict[str, Any]:
    tasks = plan.tasks
    out = state.out
    if state.already_complete:
        log.info("%s holds a finished run already (%s): nothing to resume", out, layout.MARKER)
        return layout.read_json(out / "report.json")
    work = out / layout.WORK_DIR
    (work / "tasks").mkdir(parents=True, exist_ok=True)
    (work / "shards").mkdir(parents=True, exist_ok=True)
    log.info("planned %d read tasks over %.1f MB -> %d output shards%s", len(tasks), input_bytes / 2**20,
             num_shards, " (resuming)" if state.resume else "")
    preload_plotting()  # while Ray starts and runs: the report needs it only at the end
    init_ray(cfg)
    if on_ray_started is not None:
        on_ray_started()
    _configure_ray_data(cfg)
    t_ray = time.time()
    reserved = cfg.reserved_columns
    task_records, tasks_ran = _stage1(cfg, tasks, num_shards, work, reserved)
    check_reader_conservation(task_records)  # fails here, before any shard is written, if a reader lost rows
    out_schema, stringified = schema.unify(
        schema.schema_from_json(p["schema"]) for rec in task_records for p in rec["parts"])
    # the cap on held-out documents, from counts every read task recorded: the same on --resume
    fraction = split.effective_fraction(
        cfg.split, split.candidate_docs(task_records, [s.name for s in cfg.selected_steps(CLEAN)]))
    shard_records, shards_ran = _stage2(cfg, num_shards, work, out_schema, task_records, fraction)
    for folder in [DATA_DIR] + ([HELDOUT_DIR] if cfg.split.enabled else []):
        if not any(f.startswith(f"{folder}/") for r in shard_records for f in r["files"]):
            shard_records[0]["files"].append(_write_empty_shard(cfg, out, out_schema, folder))
    t_end = time.time()
    report = build_report(
        [r["summary"] for r in shard_records],
        config=to_dict(cfg),
        steps=cfg.ordered_steps,
        inputs=fingerprints,
        wall_seconds={"total": t_end - t_start, "ray_start": t_ray - t_start, "pipeline": t_end - t_ray},
        num_shards=num_shards,
        task_records=task_records,
        plan=plan,
    )
    for rec in task_records:  # columns a reader already had to write as strings inside one file
        for name in rec.get("stringified", []):
            stringified.setdefault(name, ["mixed within a file"])
    report["columns_as_strings"] = stringified
    report["resume"] = {"resumed": state.resume, "read_tasks": len(tasks), "read_tasks_reused": len(tasks) - tasks_ran,
                        "shards": num_shards, "shards_reused": num_shards - shards_ran}
    try:
        check_conservation(report)
        report["split"] = split.split_report(cfg.split, fraction, (r.get("split", {}) for r in shard_records),
                                             report["rows_out"])
    except ConservationError:
        layout.write_json_atomic(out / layout.STATE_DIR / "report.failed.json", report)
        raise
    write_report(report, out)
    layout.write_marker(out, {"rows_in": report["rows_in"], "rows_out": report["rows_out"],
                              "files": sorted(f for r in shard_records for f in r["files"]),
                              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    layout.finish(out)
    return report
