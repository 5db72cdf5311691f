"""Builds and runs the Ray Data plan. The only module that knows the order of the steps.

Plan::

    read tasks ─► read, then clean + filter + hash per batch (one map_batches: normalize, html, urls,
    whitespace, quality, language, dedup keys) ─► shuffle by shard ─► per shard (map_groups): mark duplicates,
    redact PII, sort by id, write part-NNNNN atomically ─► per-shard statistics ─► report

Nothing but statistics ever reaches the driver. Every step runs as a Ray *task*, not an actor pool: models
(the language ID model) are loaded once per worker process and cached there, and no actor pool can hold
the CPUs that the shuffle needs (with 2 CPUs that starves the shuffle and the run hangs).

Statistics travel with the data: each cleaning batch appends one extra row (``drop_reason`` =
``_stats_row``) whose ``_stats`` column holds that batch's per-step counts and timings as JSON. The shard
stage folds them in. So counts are exact even when Ray retries a task, and no side channel is needed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation import columns
from curation.config import RunConfig, to_dict
from curation.dedup import add_keys, mark_duplicates
from curation.io import (
    ReadTask,
    output_table,
    plan_reads,
    read_task,
    shard_count,
    shard_name,
    write_table,
)
from curation.report import StepStats, build_report, check_conservation, fingerprint_inputs, write_report
from curation.steps.base import live_mask
from curation.steps.html import HtmlStripper
from curation.steps.language import LanguageFilter
from curation.steps.normalize import UnicodeNormalizer
from curation.steps.pii import PiiRedactor
from curation.steps.quality import QualityFilter
from curation.steps.urls import UrlRemover
from curation.steps.whitespace import WhitespaceNormalizer

log = logging.getLogger("curation")

BEFORE_SHUFFLE = ("normalize", "html", "urls", "whitespace", "quality", "language")
"""Steps that run per batch before the shuffle; ``dedup`` and ``pii`` run per shard after it."""

EMPTY_AFTER_CLEANING = "empty_after_cleaning"
DATA_DIR = "data"
"""Curated shards go to ``OUTPUT/data/part-NNNNN.<ext>`` so the folder reads as one dataset
(``pq.read_table("OUTPUT/data")``) without the report files in the way."""
DROPPED_DIR = "dropped"
"""With ``writer.write_dropped``: ``OUTPUT/dropped/part-NNNNN.<ext>`` lists every removed id and its reason."""


def make_step(name: str, cfg: RunConfig) -> Callable[[pa.Table], pa.Table]:
    """The batch callable of one step, configured from the run config."""
    tc = cfg.text_column
    factories: dict[str, Callable[[], Callable[[pa.Table], pa.Table]]] = {
        "normalize": lambda: UnicodeNormalizer(cfg.normalize, tc),
        "html": lambda: HtmlStripper(cfg.html, tc),
        "urls": lambda: UrlRemover(cfg.urls, tc),
        "whitespace": lambda: WhitespaceNormalizer(cfg.whitespace, tc),
        "quality": lambda: QualityFilter(cfg.quality, tc),
        "language": lambda: LanguageFilter(cfg.language, tc),
        "pii": lambda: PiiRedactor(cfg.pii, tc),
    }
    return factories[name]()


def _live_chars(batch: pa.Table, text_column: str) -> tuple[int, int]:
    """(live rows, characters in live rows) of a batch, computed in Arrow."""
    live = pa.array(live_mask(batch), type=pa.bool_())
    rows = int(pc.sum(live).as_py() or 0)
    lengths = pc.utf8_length(batch.column(text_column))
    chars = pc.sum(pc.if_else(live, lengths, 0)).as_py() or 0
    return rows, int(chars)


def run_step(name: str, step: Callable[[pa.Table], pa.Table], batch: pa.Table, text_column: str,
             stats: dict[str, StepStats]) -> pa.Table:
    """Run one step on a batch and add its rows/characters in and out and its time to ``stats``."""
    rows_in, chars_in = _live_chars(batch, text_column)
    t0 = time.perf_counter()
    batch = step(batch)
    seconds = time.perf_counter() - t0
    rows_out, chars_out = _live_chars(batch, text_column)
    stats.setdefault(name, StepStats()).add(StepStats(rows_in, rows_out, chars_in, chars_out, seconds))
    return batch


class ReadCleanStage:
    """Ray adapter: planned read tasks in; their rows read, cleaned, filtered and keyed, batch by batch, out.

    Reading and cleaning are one operator on purpose: as two fused ``map_batches`` Ray Data bundles input rows
    up to the larger batch size, which put every read task into one Ray task and left the other CPUs idle.
    Here each read task is its own Ray task, and its rows are cleaned in batches of ``batch_size``.
    """

    def __init__(self, cfg: RunConfig, num_shards: int) -> None:
        self.cfg = cfg
        self.clean = CleanStage(cfg, num_shards)

    def __call__(self, tasks: pa.Table) -> Iterator[pa.Table]:
        size = self.cfg.batch_size
        for t in tasks.to_pylist():
            for table in read_task(ReadTask(**t), self.cfg.text_column, self.cfg.reader):
                for start in range(0, table.num_rows, size):
                    yield self.clean(table.slice(start, size))


class CleanStage:
    """Ray adapter: the per-batch steps, then dedup keys and shard numbers, then a statistics row."""

    def __init__(self, cfg: RunConfig, num_shards: int) -> None:
        self.cfg = cfg
        self.num_shards = num_shards
        self.names = [s for s in cfg.ordered_steps if s in BEFORE_SHUFFLE]
        self._steps: list[Callable[[pa.Table], pa.Table]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_steps": None}  # steps (and their models) are rebuilt in each worker

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self._steps is None:
            self._steps = [make_step(n, self.cfg) for n in self.names]
        tc = self.cfg.text_column
        stats: dict[str, StepStats] = {}
        rows_in, chars_in = _live_chars(batch, tc)
        stats["read"] = StepStats(batch.num_rows, rows_in, 0, chars_in, 0.0)
        for name, step in zip(self.names, self._steps):
            batch = run_step(name, step, batch, tc, stats)
        batch = _mark_empty(batch, tc)
        dedup_cfg = self.cfg.dedup if "dedup" in self.cfg.steps else None
        batch = add_keys(batch, tc, self.num_shards, dedup_cfg)
        batch = _shrink_dropped(batch, tc)
        return _append_stats_row(batch, stats, self.num_shards)


def _mark_empty(batch: pa.Table, text_column: str) -> pa.Table:
    """Text the cleaning steps emptied (an HTML page of only scripts) is dropped, with its own reason."""
    from curation.steps.base import mark_dropped

    texts = batch.column(text_column)
    empty = pc.fill_null(pc.equal(pc.utf8_length(texts), 0), False).to_pylist()
    return mark_dropped(batch, [EMPTY_AFTER_CLEANING if e else None for e in empty])


def _shrink_dropped(batch: pa.Table, text_column: str) -> pa.Table:
    """Dropped rows keep their id and reason but not their text: the shuffle should not carry dead weight."""
    dropped = pc.is_valid(batch.column(columns.DROP_REASON))
    texts = pc.if_else(dropped, pa.scalar(None, pa.large_string()), batch.column(text_column).cast(pa.large_string()))
    return batch.set_column(batch.schema.get_field_index(text_column), text_column, texts)


def _append_stats_row(batch: pa.Table, stats: dict[str, StepStats], num_shards: int) -> pa.Table:
    payload = json.dumps({k: asdict(v) for k, v in stats.items()})
    row: dict[str, Any] = {name: None for name in batch.column_names}
    row[columns.DROP_REASON] = columns.STATS_ROW
    row[columns.SHARD] = 0  # statistics rows are folded in by whichever shard gets them
    extra = pa.Table.from_pylist([row], schema=batch.schema)
    if columns.STATS not in batch.column_names:
        batch = batch.append_column(columns.STATS, pa.nulls(batch.num_rows, pa.string()))
        extra = extra.append_column(columns.STATS, pa.array([payload], pa.string()))
    return pa.concat_tables([batch, extra])


class ShardStage:
    """Ray adapter: one whole output shard in; dedup, PII, sort, atomic write; one statistics row out."""

    __name__ = "ShardStage"  # Ray's map_groups names its operator after the function

    def __init__(self, cfg: RunConfig, num_shards: int) -> None:
        self.cfg = cfg
        self.num_shards = num_shards
        self._pii: Callable[[pa.Table], pa.Table] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pii": None}

    def __call__(self, table: pa.Table) -> pa.Table:
        from curation.report import shard_summary

        tc = self.cfg.text_column
        shard = int(table.column(columns.SHARD)[0].as_py()) if table.num_rows else 0
        is_stats = pc.fill_null(pc.equal(table.column(columns.DROP_REASON), columns.STATS_ROW), False)
        stats_rows = table.filter(is_stats)
        table = table.filter(pc.invert(is_stats))
        stats: dict[str, StepStats] = {}
        for payload in stats_rows.column(columns.STATS).to_pylist() if columns.STATS in table.column_names else []:
            for name, values in json.loads(payload).items():
                stats.setdefault(name, StepStats()).add(StepStats(**values))
        groups = 0
        if "dedup" in self.cfg.steps:
            def dedup(t: pa.Table) -> pa.Table:
                nonlocal groups
                t, groups = mark_duplicates(t)
                return t

            table = run_step("dedup", dedup, table, tc, stats)
        dropped_mask = pc.is_valid(table.column(columns.DROP_REASON))
        dropped = table.filter(dropped_mask)
        kept = table.filter(pc.invert(dropped_mask))
        if "pii" in self.cfg.steps:
            if self._pii is None:
                self._pii = make_step("pii", self.cfg)
            kept = run_step("pii", self._pii, kept, tc, stats)
        kept = kept.sort_by([(columns.ID, "ascending")])
        out = Path(self.cfg.output)
        if kept.num_rows:
            write_table(output_table(kept, tc), out / DATA_DIR / shard_name(shard, self.cfg.writer), self.cfg.writer)
        if self.cfg.writer.write_dropped and dropped.num_rows:
            cols = [columns.ID, columns.DROP_REASON]
            write_table(dropped.select(cols).sort_by([(columns.ID, "ascending")]).rename_columns(["id", "drop_reason"]),
                        out / DROPPED_DIR / shard_name(shard, self.cfg.writer), self.cfg.writer)
        summary = shard_summary(shard, kept, dropped, stats, groups, tc)
        return pa.table({"shard": [shard], "summary": [json.dumps(summary)]})


def prepare_output(cfg: RunConfig) -> Path:
    """Create the output directory; refuse to mix with an earlier run's shards unless ``overwrite``."""
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--output {str(out)!r} is a file; give a directory")
    old = sorted(p.name for p in (out / DATA_DIR).glob("part-*")) if (out / DATA_DIR).is_dir() else []
    if old and not cfg.overwrite:
        raise FileExistsError(
            f"--output {str(out)!r} already holds curated shards ({', '.join(old[:3])}, ...) from an earlier run; "
            f"pass --overwrite to replace them or choose another directory"
        )
    for sub in (DATA_DIR, DROPPED_DIR):
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)
    out.mkdir(parents=True, exist_ok=True)
    return out


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
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
                 log_to_driver=True, configure_logging=False)


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run the pipeline end to end; returns the report (also written to ``output/report.json``)."""
    import ray
    import ray.data
    from ray.data.context import ShuffleStrategy

    t_start = time.time()
    tasks = plan_reads(cfg.input, cfg.text_column, cfg.reader)  # fails fast on bad input, before Ray starts
    out = prepare_output(cfg)
    input_bytes = sum(t.size for t in tasks)
    num_shards = shard_count(input_bytes, cfg.writer)
    log.info("planned %d read tasks over %.1f MB -> %d output shards", len(tasks), input_bytes / 2**20, num_shards)
    init_ray(cfg)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.progress
    ctx.enable_operator_progress_bars = cfg.progress
    ctx.shuffle_strategy = (ShuffleStrategy.SORT_SHUFFLE_PULL_BASED if cfg.shuffle == "sort"
                            else ShuffleStrategy.HASH_SHUFFLE)
    t_ray = time.time()

    ds = ray.data.from_items([asdict(t) for t in tasks], override_num_blocks=len(tasks))
    ds = ds.map_batches(ReadCleanStage(cfg, num_shards), batch_size=1, batch_format="pyarrow")
    summaries = (
        ds.groupby(columns.SHARD, num_partitions=num_shards)
        .map_groups(ShardStage(cfg, num_shards), batch_format="pyarrow")
        .take_all()
    )
    t_end = time.time()
    report = build_report(
        [json.loads(s["summary"]) for s in summaries],
        config=to_dict(cfg),
        steps=cfg.ordered_steps,
        inputs=fingerprint_inputs(tasks),
        wall_seconds={"total": t_end - t_start, "ray_start": t_ray - t_start, "pipeline": t_end - t_ray},
        num_shards=num_shards,
    )
    write_report(report, out)
    check_conservation(report)
    return report
