"""Builds and runs the plan as Ray tasks. Which steps run in which stage, and in what order, comes from the step
registry (:mod:`curation.steps.registry`); this module runs them. The stages themselves are in
:mod:`curation.stages`, the keys-only dedup in :mod:`curation.keys`.

Plan::

    read tasks ─► stage 1, one Ray task per read task: read, then the ``clean`` steps batch by batch (normalize,
    html, urls, whitespace, quality, language, pii), then the dedup key of every row; its rows stay in
    ``.curation/work/tasks/`` in read order, and its dedup keys (one per distinct text: hash, smallest id,
    row) go beside them by key partition, plus a small JSON of its counts (the task's "done" mark)
          ─► dedup, one Ray task per key partition: its keys from every read task, the smallest id of each
    text that several read tasks hold wins (:func:`curation.keys.decide`); decisions written by output shard
          ─► stage 2, one Ray task per output shard, which owns a contiguous run of read tasks: their rows and
    the decisions about them, the ``shard`` steps (dedup), sort by id, the held-out split
    (:mod:`curation.split`), write ``data/part-NNNNN`` and ``heldout/part-NNNNN`` atomically, plus a JSON of the
    shard's counts
          ─► report, conservation check, report files, then ``_SUCCESS`` (see :mod:`curation.layout`).

Why keys only: exact dedup needs (hash, id) to decide which copy stays; moving the documents to wherever
their twins are would be the corpus crossing the network once more. Only the keys (a few percent of the
input; ``report.json`` ``shuffle``) cross between tasks; documents go from their read task to their output
shard, which reads the read tasks' own files.

Why through files and not Ray's object store: every finished read task, key partition and shard is on disk,
so a run killed at any point (a worker, the driver, the whole cluster) is finished by ``--resume`` redoing
only the unfinished ones, with byte-identical output. The output folder must be on a filesystem every worker
sees, which writing the shards already needed.

Nothing but small per-task, per-partition and per-shard counts reaches the driver. Every step runs as a Ray
*task*, not an actor pool: models (the language ID model) are loaded once per worker process and cached there.

Counts are exact when Ray retries a task: a task's counts are written with its results, atomically, and a
retried task overwrites both with the same bytes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from common.ray_runtime import init_ray as common_init_ray
from curation import columns, keys, layout, schema, split
from curation.config import RunConfig, to_dict
from curation.io import ReadTask, output_table, plan_reads, shard_count, shard_name, write_table
from curation.report import (
    ConservationError,
    build_report,
    check_conservation,
    check_reader_conservation,
    fingerprint_inputs,
    preload_plotting,
    write_report,
)
from curation.stages import (
    DATA_DIR,
    DROPPED_DIR,
    HELDOUT_DIR,
    CleanStage,
    DedupStage,
    ReadCleanStage,
    ShardStage,
    dedup_file,
    shard_file,
    task_file,
)
from curation.steps.registry import CLEAN, step_columns

__all__ = ["CleanStage", "plan_record", "planned_files", "run"]

log = logging.getLogger("curation")

RETRIES = 3
"""Ray retries a task whose worker died this many times; then the run stops (and ``--resume`` goes on)."""
PLAN_VERSION = 2
"""Version 2: keys-only dedup, output shards own contiguous read tasks. A work folder of another version is
not resumed (its files mean other things)."""


def init_ray(cfg: RunConfig) -> None:
    """Attach to ``--ray_address`` / ``RAY_ADDRESS`` if given, else start an embedded local Ray."""
    common_init_ray(cfg.ray_address, cfg.num_cpus)


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
    return {"version": PLAN_VERSION, "settings": settings, "num_shards": num_shards, "inputs": inputs,
            "tasks": [asdict(t) for t in tasks]}


def planned_files(cfg: RunConfig, num_shards: int) -> list[str]:
    dirs = ([DATA_DIR] + ([HELDOUT_DIR] if cfg.split.enabled else [])
            + ([DROPPED_DIR] if cfg.writer.write_dropped else []))
    return [f"{d}/{shard_name(s, cfg.writer)}" for d in dirs for s in range(num_shards)]


POLL_SECONDS = 0.05
"""How often :func:`_map_tasks` looks for finished tasks: at most this much later than the last one it sees a
stage end, or a signal."""


def _map_tasks(items: list[dict[str, Any]], fn: Callable[[pa.Table], Iterator[pa.Table]], progress: bool = False,
               label: str = "tasks") -> int:
    """Run ``fn`` on each item (as a one-row table) as its own Ray task, to completion; returns how many items it
    really computed (not found done already).

    Plain Ray tasks, not Ray Data: each item was one task already (``from_items(...).map_batches(fn,
    batch_size=1)``), and Ray Data's start-up (importing it in the driver and the workers, the stats and
    autoscaling-coordinator actors it creates, each a worker process of its own) cost ~3.4 s of the demo run's
    stage 1 on a 2-core machine: 4.8-5.4 s with Ray Data, 1.5-1.6 s without, byte-identical output. The same
    semantics otherwise: ``num_cpus=1`` per task, scheduled ``SPREAD`` over a cluster's nodes (Ray Data's
    default), ``RaySystemError`` retried as Ray Data does, and a task whose worker died retried ``RETRIES``
    times (Ray's default is forever: a document that kills its worker every time, out of memory, would stall
    the run; after ``RETRIES`` the run stops, and ``--resume`` goes on). On a failure or an interrupt the
    tasks still queued or running are cancelled and the error propagates. The tasks are named after the stage
    (``ray::ReadCleanStage`` in ``ps``)."""
    import ray

    if not items:
        return 0
    task = ray.remote(_run_item).options(name=type(fn).__name__, num_cpus=1, max_retries=RETRIES,
                                         retry_exceptions=[ray.exceptions.RaySystemError],
                                         scheduling_strategy="SPREAD")
    fn_ref = ray.put(fn)
    pending = [task.remote(fn_ref, item) for item in items]
    ran = 0
    bar = _progress_bar(label, len(items)) if progress else None
    try:
        while pending:
            # Polled, the waiting done in Python's sleep: a signal handler that raises (the CLI's SIGTERM ->
            # Interrupted) must not run inside Ray's blocking wait, which then either fails with a SystemError
            # or holds the exception until its timeout while the remaining tasks run on.
            try:
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
            except SystemError as e:  # the signal came during that call after all: raise what its handler raised
                if isinstance(e.__cause__, BaseException) and not isinstance(e.__cause__, Exception):
                    raise e.__cause__ from None
                raise
            if ready:
                ran += sum(ray.get(ready))
                if bar is not None:
                    bar.update(len(ready))
            else:
                time.sleep(POLL_SECONDS)
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        raise
    finally:
        if bar is not None:
            bar.close()
    return ran


def _run_item(fn: Callable[[pa.Table], Iterator[pa.Table]], item: dict[str, Any]) -> int:
    """One item of :func:`_map_tasks`, in a Ray worker: 1 when ``fn`` computed it, 0 when it was done already."""
    return sum(not reused for out in fn(pa.Table.from_pylist([item])) for reused in out.column("reused").to_pylist())


def _progress_bar(label: str, total: int) -> Any:
    """A tqdm bar on stderr (``--progress``, as Ray Data's bars were); None without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - Ray itself depends on tqdm
        return None
    return tqdm(total=total, desc=label, unit="task", leave=False)


def _stage1(cfg: RunConfig, tasks: list[ReadTask], num_shards: int, work: Path,
            reserved: frozenset[str]) -> tuple[list[dict[str, Any]], int]:
    """Run the read tasks not done yet; return every task's result record, in task order, and how many ran."""
    todo = [{"index": i, **asdict(t)} for i, t in enumerate(tasks) if not task_file(work, i).is_file()]
    log.info("stage 1 (read, clean): %d of %d read tasks to do", len(todo), len(tasks))
    ran = _map_tasks(todo, ReadCleanStage(cfg, num_shards, str(work), reserved), cfg.progress, "stage 1")
    records = []
    for i in range(len(tasks)):
        path = task_file(work, i)
        if not path.is_file():  # pragma: no cover - Ray reported success, so every task wrote its file
            raise RuntimeError(f"read task {i} ({tasks[i].source}) finished without writing {path}")
        records.append(layout.read_json(path))
    return records, ran


def _dedup(num_partitions: int, work: Path, task_records: list[dict[str, Any]],
           task_shards: list[int], progress: bool = False) -> tuple[list[dict[str, Any]], int]:
    """Run the key partitions not done yet (those some read task sent keys to); return every partition's
    record, in partition order, and how many ran. Partitions no key reached need no task."""
    pieces: dict[int, list[list[Any]]] = {}
    for rec in task_records:
        if rec.get("keys"):
            for partition, group in rec["keys"]["groups"].items():
                pieces.setdefault(int(partition), []).append([rec["keys"]["file"], group])
    todo = [{"partition": p, "pieces": json.dumps(v)} for p, v in sorted(pieces.items())
            if not dedup_file(work, p).is_file()]
    log.info("dedup (keys only): %d of %d key partitions to do", len(todo), len(pieces))
    ran = _map_tasks(todo, DedupStage(str(work), task_shards), progress, "dedup")
    return [layout.read_json(dedup_file(work, p)) for p in sorted(pieces)], ran


def _stage2(cfg: RunConfig, num_shards: int, work: Path, out_schema: pa.Schema, task_records: list[dict[str, Any]],
            dedup_records: list[dict[str, Any]], task_shards: list[int],
            heldout_fraction: float) -> tuple[list[dict[str, Any]], int]:
    """Run the shards not done yet; return every shard's record, in shard order, and how many ran."""
    owned: dict[int, list[list[Any]]] = {s: [] for s in range(num_shards)}
    for rec, shard in zip(task_records, task_shards):
        owned[shard].append([rec["index"], [p["file"] for p in rec["parts"]]])
    decisions: dict[int, list[list[Any]]] = {s: [] for s in range(num_shards)}
    for rec in dedup_records:
        for shard, group in rec["groups"].items():
            decisions[int(shard)].append([rec["file"], group])
    todo = [{"shard": s, "tasks": json.dumps(owned[s]), "decisions": json.dumps(decisions[s])}
            for s in range(num_shards) if not shard_file(work, s).is_file()]
    log.info("stage 2 (dedup, write): %d of %d shards to do", len(todo), num_shards)
    ran = _map_tasks(todo, ShardStage(cfg, str(work), schema.schema_to_json(out_schema), heldout_fraction),
                     cfg.progress, "stage 2")
    return [layout.read_json(shard_file(work, s)) for s in range(num_shards)], ran


def shuffle_report(dedup_records: list[dict[str, Any]], input_bytes: int, num_partitions: int,
                   seconds: float) -> dict[str, Any]:
    """``report["shuffle"]``: what crossed between tasks (Arrow bytes of the key rows the dedup tasks read and of
    the decisions they wrote), against the input's bytes. Documents never cross: they are not counted because
    they are not moved."""
    totals = {k: sum(int(r[k]) for r in dedup_records) for k in ("key_rows", "key_bytes", "decision_rows",
                                                                  "decision_bytes")}
    moved = totals["key_bytes"] + totals["decision_bytes"]
    return {**totals, "bytes": moved, "input_bytes": input_bytes,
            "bytes_per_input_byte": moved / input_bytes if input_bytes else None,
            "key_partitions": num_partitions, "key_partitions_used": len(dedup_records),
            "dedup_seconds": round(seconds, 3),
            "dedup_task_seconds": round(sum(float(r.get("seconds", 0.0)) for r in dedup_records), 3)}


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
    for folder in ("tasks", "dedup", "shards"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    log.info("planned %d read tasks over %.1f MB -> %d output shards%s", len(tasks), input_bytes / 2**20,
             num_shards, " (resuming)" if state.resume else "")
    init_ray(cfg)
    if on_ray_started is not None:
        on_ray_started()
    t_ray = time.time()
    reserved = cfg.reserved_columns
    num_partitions = num_shards  # key partitions: one per output shard keeps each dedup task small
    task_records, tasks_ran = _stage1(cfg, tasks, num_partitions, work, reserved)
    check_reader_conservation(task_records)  # fails here, before any shard is written, if a reader lost rows
    out_schema, stringified = schema.unify(
        schema.schema_from_json(p["schema"]) for rec in task_records for p in rec["parts"])
    t_dedup = time.time()
    task_shards = keys.assign_shards([t.size for t in tasks], num_shards)
    dedup_records, partitions_ran = _dedup(num_partitions, work, task_records, task_shards, cfg.progress)
    shuffle = shuffle_report(dedup_records, input_bytes, num_partitions, time.time() - t_dedup)
    # the cap on held-out documents, from counts every read task recorded: the same on --resume
    fraction = split.effective_fraction(
        cfg.split, split.candidate_docs(task_records, [s.name for s in cfg.selected_steps(CLEAN)]))
    # matplotlib for the report's plots, imported while stage 2 runs (its last shards leave a core idle); before
    # Ray started it competed with Ray's own processes starting up
    preload_plotting()
    shard_records, shards_ran = _stage2(cfg, num_shards, work, out_schema, task_records, dedup_records, task_shards,
                                        fraction)
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
    report["shuffle"] = shuffle
    report["resume"] = {"resumed": state.resume, "read_tasks": len(tasks), "read_tasks_reused": len(tasks) - tasks_ran,
                        "key_partitions": len(dedup_records), "key_partitions_reused": len(dedup_records) - partitions_ran,
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
