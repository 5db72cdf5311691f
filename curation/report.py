"""Run report: counts, timings and histograms folded from per-shard summaries, written as JSON and Markdown.

The conservation law ``rows_in == rows_out + sum(dropped.values())`` is checked on every run; a run whose
numbers do not add up fails loudly instead of handing over a corpus nobody can account for.
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from curation import columns

LENGTH_BINS = [0, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 1_000_000, math.inf]
"""Character-length histogram edges of the curated documents."""


class ConservationError(RuntimeError):
    """Rows in != rows out + dropped: a step lost or invented rows."""


@dataclass
class StepStats:
    rows_in: int = 0
    rows_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    seconds: float = 0.0

    def add(self, other: StepStats) -> None:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.chars_in += other.chars_in
        self.chars_out += other.chars_out
        self.seconds += other.seconds


def _value_counts(arr: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in pc.value_counts(arr).to_pylist():
        if item["values"] is not None:
            out[str(item["values"])] = int(item["counts"])
    return out


def _dup_groups(table: pa.Table) -> int:
    """Duplicate groups among ``table``'s rows: the rows dedup kept that had copies."""
    if columns.DUP_COUNT not in table.column_names or not table.num_rows:
        return 0
    return int(pc.sum(pc.greater(table.column(columns.DUP_COUNT), 0)).as_py() or 0)


def shard_summary(shard: int, kept: pa.Table, dropped: pa.Table, stats: dict[str, StepStats],
                  text_column: str, step_columns: Sequence[str]) -> dict[str, Any]:
    """Everything the report needs from one shard, small enough to send to the driver. ``step_columns``: the
    columns this run's steps added; an input column of the same name that no step wrote is not counted."""
    lengths = pc.utf8_length(kept.column(text_column)).to_numpy(zero_copy_only=False) if kept.num_rows else []
    hist = [0] * (len(LENGTH_BINS) - 1)
    for n in lengths:
        for i in range(len(hist)):
            if n < LENGTH_BINS[i + 1]:
                hist[i] += 1
                break
    pii: Counter[str] = Counter()
    if columns.PII_COUNTS in step_columns and columns.PII_COUNTS in kept.column_names and kept.num_rows:
        col = kept.column(columns.PII_COUNTS).combine_chunks()
        for i, f in enumerate(col.type):
            pii[f.name] += int(pc.sum(col.field(i)).as_py() or 0)
    lang = columns.LANG in step_columns
    langs = _value_counts(kept.column(columns.LANG)) if lang and columns.LANG in kept.column_names else {}
    langs_all: Counter[str] = Counter(langs)
    if lang and columns.LANG in dropped.column_names:
        langs_all.update(_value_counts(dropped.column(columns.LANG)))
    return {
        "shard": shard,
        "rows_out": kept.num_rows,
        "chars_out": int(sum(int(n) for n in lengths)),
        "dropped": _value_counts(dropped.column(columns.DROP_REASON)) if dropped.num_rows else {},
        "dup_groups": _dup_groups(kept) + _dup_groups(dropped),
        "languages_kept": langs,
        "languages_seen": dict(langs_all),
        "pii": dict(pii),
        "length_hist": hist,
        "steps": {k: asdict(v) for k, v in stats.items()},
    }


def empty_summary(shard: int) -> dict[str, Any]:
    """The summary of a shard no row was sent to."""
    return {"shard": shard, "rows_out": 0, "chars_out": 0, "dropped": {}, "dup_groups": 0, "languages_kept": {},
            "languages_seen": {}, "pii": {}, "length_hist": [0] * (len(LENGTH_BINS) - 1), "steps": {}}


def fingerprint_inputs(tasks: Sequence[Any], sample_bytes: int = 1 << 20) -> list[dict[str, Any]]:
    """Size, mtime and an xxh3-128 of the first and last MiB of each input file (cheap even for TB).

    Files are named by their path below the input root, so the report reads the same wherever the data lies."""
    out = []
    for source, path in sorted({(t.source or t.path, t.path) for t in tasks}):
        p = Path(path)
        if not p.is_file():
            out.append({"path": source})
            continue
        st = p.stat()
        h = xxhash.xxh3_128()
        with open(p, "rb") as fh:
            h.update(fh.read(sample_bytes))
            if st.st_size > 2 * sample_bytes:
                fh.seek(-sample_bytes, 2)
                h.update(fh.read(sample_bytes))
        h.update(str(st.st_size).encode())
        out.append({"path": source, "bytes": st.st_size, "mtime": st.st_mtime, "xxh3_128_sample": h.hexdigest()})
    return out


def file_accounts(task_records: Sequence[dict[str, Any]], plan: Any = None) -> dict[str, Any]:
    """Every input file: read (records, rows), corrupt (why), empty, or skipped (why); from the read tasks'
    records and the read plan. A file split into byte ranges is one entry."""
    read: dict[str, dict[str, Any]] = {}
    for rec in task_records:
        entry = read.setdefault(rec["source"], {"records": 0, "rows": 0})
        entry["records"] += rec["records"]
        entry["rows"] += rec["rows"]
        if rec.get("corrupt"):
            entry["corrupt"] = rec["corrupt"]
    return {
        "read": [{"path": k, **v} for k, v in sorted(read.items())],
        "corrupt": [{"path": k, "error": v["corrupt"]} for k, v in sorted(read.items()) if "corrupt" in v],
        "empty": sorted(getattr(plan, "empty", []) or []),
        "skipped": list(getattr(plan, "skipped", []) or []),
        "renamed_columns": dict(getattr(plan, "renamed", {}) or {}),
    }


def build_report(summaries: Sequence[dict[str, Any]], *, config: dict[str, Any], steps: Sequence[str],
                 inputs: list[dict[str, Any]], wall_seconds: dict[str, float], num_shards: int,
                 task_records: Sequence[dict[str, Any]] = (), plan: Any = None) -> dict[str, Any]:
    """Fold per-read-task records (read and cleaning counts) and per-shard summaries into the run report."""
    dropped: Counter[str] = Counter()
    langs_kept: Counter[str] = Counter()
    langs_seen: Counter[str] = Counter()
    pii: Counter[str] = Counter()
    hist = [0] * (len(LENGTH_BINS) - 1)
    step_stats: dict[str, StepStats] = {}
    rows_out = chars_out = dup_groups = 0
    for s in summaries:
        rows_out += s["rows_out"]
        chars_out += s["chars_out"]
        dup_groups += s["dup_groups"]
        dropped.update(s["dropped"])
        langs_kept.update(s["languages_kept"])
        langs_seen.update(s["languages_seen"])
        pii.update(s["pii"])
        hist = [a + b for a, b in zip(hist, s["length_hist"])]
        for name, values in s["steps"].items():
            step_stats.setdefault(name, StepStats()).add(StepStats(**values))
    for rec in task_records:
        for name, values in rec["steps"].items():
            step_stats.setdefault(name, StepStats()).add(StepStats(**values))
    read = step_stats.pop("read", StepStats())
    rows_in = read.rows_in
    total = wall_seconds.get("total", 0.0)
    return {
        "rows_in": rows_in,
        "rows_out": rows_out,
        "dropped": dict(sorted(dropped.items())),
        "chars_in": read.chars_out,
        "chars_out": chars_out,
        "docs_per_second": rows_in / total if total else None,
        "duplicates": {"groups": dup_groups, "rows_removed": dropped.get("duplicate", 0)},
        "languages": {"kept": dict(langs_kept.most_common()), "seen": dict(langs_seen.most_common())},
        "pii": dict(sorted(pii.items())),
        "length_histogram": {
            "edges": [e if e != math.inf else None for e in LENGTH_BINS],
            "counts": hist,
        },
        "steps": {
            name: {**asdict(step_stats[name]), "rows_dropped": step_stats[name].rows_in - step_stats[name].rows_out}
            for name in steps if name in step_stats
        },
        "read": {"rows": read.rows_in, "valid_rows": read.rows_out,
                 "records": sum(r["records"] for r in task_records)},
        "files": file_accounts(task_records, plan),
        "timings": {"wall_seconds": wall_seconds,
                    "step_cpu_seconds": {n: round(step_stats[n].seconds, 3) for n in steps if n in step_stats}},
        "num_shards": num_shards,
        "inputs": inputs,
        "config": config,
    }


def check_reader_conservation(task_records: Sequence[dict[str, Any]]) -> None:
    """Each read task turned every record it found into exactly one row (kept, or dropped with a reason)."""
    for rec in task_records:
        if rec["records"] != rec["rows"]:
            raise ConservationError(
                f"{rec['source']}: the reader found {rec['records']} records but produced {rec['rows']} rows; "
                f"records were merged or lost. This is a bug in the reader; please report it with this file."
            )


def check_conservation(report: dict[str, Any]) -> None:
    """``rows_in == rows_out + dropped``, and every record the readers found is one of those rows."""
    if "records" in report["read"] and report["read"]["records"] != report["rows_in"]:
        raise ConservationError(
            f"the readers found {report['read']['records']} records but {report['rows_in']} rows entered the "
            f"steps. This is a bug; please report it with report.json."
        )
    total = report["rows_out"] + sum(report["dropped"].values())
    if report["rows_in"] != total:
        raise ConservationError(
            f"rows do not add up: rows_in={report['rows_in']} but rows_out + dropped = {report['rows_out']} + "
            f"{sum(report['dropped'].values())} = {total}. This is a bug in a step; please report it with report.json."
        )


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A short human summary for stdout."""
    w = report["timings"]["wall_seconds"]
    lines = [
        f"rows in {report['rows_in']:,} -> out {report['rows_out']:,} "
        f"({report['rows_out'] / max(1, report['rows_in']):.1%} kept) in {w.get('total', 0):.1f}s "
        f"({report['docs_per_second'] or 0:,.0f} docs/s)",
        f"chars in {report['chars_in']:,} -> out {report['chars_out']:,}",
    ]
    if report["dropped"]:
        lines.append("dropped: " + ", ".join(f"{k}={v:,}" for k, v in report["dropped"].items()))
    if report["duplicates"]["groups"]:
        d = report["duplicates"]
        lines.append(f"duplicates: {d['rows_removed']:,} rows in {d['groups']:,} groups")
    sh = report.get("shuffle")
    if sh and sh.get("bytes_per_input_byte") is not None and sh.get("key_rows"):
        lines.append(f"dedup shuffle (keys only): {sh['bytes'] / 2**20:,.2f} MiB for {sh['key_rows']:,} keys, "
                     f"{sh['bytes_per_input_byte']:.2%} of the input bytes")
    if report["languages"]["seen"]:
        lines.append("languages seen: " + ", ".join(f"{k}={v:,}" for k, v in list(report["languages"]["seen"].items())[:8]))
    files = report.get("files") or {}
    if files.get("corrupt") or files.get("skipped") or files.get("empty"):
        lines.append(f"files: {len(files.get('read', []))} read, {len(files.get('corrupt', []))} corrupt, "
                     f"{len(files.get('empty', []))} empty, {len(files.get('skipped', []))} skipped "
                     f"(see report.md)")
    sp = report.get("split")
    if sp and sp["heldout_fraction"]:
        lines.append(f"held-out split: {sp['heldout']['docs']:,} docs in heldout/, {sp['train']['docs']:,} in data/ "
                     f"(fraction {sp['effective_fraction']:.4g}, keyed by {sp['key']})")
    if report["pii"]:
        lines.append("PII redacted: " + (", ".join(f"{k}={v:,}" for k, v in report["pii"].items() if v) or "none"))
    return lines


def _import_pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def preload_plotting() -> threading.Thread:
    """Import matplotlib in a background thread, so that the report's plots do not wait for it at the end of
    the run: the import costs ~0.6 CPU s (1.5 s on a busy machine) while the driver mostly waits on Ray.
    A second import of the same module waits for this one (Python's per-module import lock). Not a daemon
    thread: the interpreter finishes the import before it exits rather than killing it half-way."""

    def run() -> None:
        try:
            _import_pyplot()
        except ImportError:  # _plots imports it again and reports the error where it matters
            return

    thread = threading.Thread(target=run, name="preload-matplotlib")
    thread.start()
    return thread


def _plots(report: dict[str, Any], out: Path) -> list[str]:
    plt = _import_pyplot()

    made = []
    langs = report["languages"]["seen"]
    if langs:
        items = list(langs.items())[:20]
        fig, ax = plt.subplots(figsize=(7, 3.2))
        kept = report["languages"]["kept"]
        ax.bar([k for k, _ in items], [v for _, v in items], color="#c9c9c9", label="seen")
        ax.bar([k for k, _ in items], [kept.get(k, 0) for k, _ in items], color="#3b7dd8", label="kept")
        ax.set_ylabel("documents")
        ax.set_title("Languages")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "languages.png", dpi=110)
        plt.close(fig)
        made.append("languages.png")
    counts = report["length_histogram"]["counts"]
    if any(counts):
        edges = report["length_histogram"]["edges"]
        labels = [f"<{int(e):,}" if e is not None else f">={int(edges[-2]):,}" for e in edges[1:]]
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.bar(labels, counts, color="#3b7dd8")
        ax.set_ylabel("documents")
        ax.set_xlabel("characters")
        ax.set_title("Document length (curated)")
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
        fig.tight_layout()
        fig.savefig(out / "lengths.png", dpi=110)
        plt.close(fig)
        made.append("lengths.png")
    return made


def render_markdown(report: dict[str, Any], plots: Sequence[str]) -> str:
    lines = ["# Curation report", "", *[f"- {line}" for line in summary_lines(report)], "", "## Steps", "",
             "| step | rows in | rows out | dropped | chars in | chars out | CPU s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in report["steps"].items():
        lines.append(f"| {name} | {s['rows_in']:,} | {s['rows_out']:,} | {s['rows_dropped']:,} | {s['chars_in']:,} | "
                     f"{s['chars_out']:,} | {s['seconds']:.2f} |")
    lines += ["", "## Dropped rows by reason", "", "| reason | rows |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in report["dropped"].items()] or ["| (none) | 0 |"]
    files = report.get("files")
    if files:
        lines += ["", "## Input files", "",
                  f"- read: {len(files['read'])} files, {report['read'].get('records', 0):,} records",
                  f"- corrupt (read up to the error, then one `corrupt_file` row): {len(files['corrupt'])}",
                  f"- empty: {len(files['empty'])}", f"- skipped (each with its reason): {len(files['skipped'])}"]
        lines += [f"  - corrupt: `{c['path']}`: {c['error']}" for c in files["corrupt"]]
        lines += [f"  - skipped: `{c['path']}`: {c['reason']}" for c in files["skipped"][:50]]
        lines += [f"  - empty: `{c}`" for c in files["empty"][:50]]
        lines += [f"  - input column `{k}` renamed to `{v}`" for k, v in files.get("renamed_columns", {}).items()]
    if report.get("columns_as_strings"):
        lines += ["", "Columns whose types differ between files, written as strings: "
                  + ", ".join(f"`{k}` ({' / '.join(v)})" for k, v in report["columns_as_strings"].items())]
    sp = report.get("split")
    if sp:
        capped = (f", lowered from {sp['heldout_fraction']:.4g} by `heldout_max_docs` {sp['heldout_max_docs']:,}"
                  if sp["effective_fraction"] != sp["heldout_fraction"] else "")
        lines += ["", "## Held-out split", "",
                  f"Fraction {sp['effective_fraction']:.4g}{capped}; a document's side is the hash of its "
                  f"{sp['key']} (salt `{sp['salt']}`). Training reads `data/`, evaluation `heldout/`.", "",
                  "| side | folder | documents | text bytes |", "|---|---|---:|---:|",
                  f"| train | `data/` | {sp['train']['docs']:,} | {sp['train']['text_bytes']:,} |",
                  f"| held-out | `heldout/` | {sp['heldout']['docs']:,} | {sp['heldout']['text_bytes']:,} |"]
    if report["pii"]:
        lines += ["", "## PII redacted", "", "| type | count |", "|---|---:|"]
        lines += [f"| {k} | {v:,} |" for k, v in report["pii"].items()]
    for p in plots:
        lines += ["", f"![{p}]({p})"]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> None:
    """report.json (machine-readable), report.md and PNG plots (for people)."""
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out / "report.md").write_text(render_markdown(report, _plots(report, out)), encoding="utf-8")
