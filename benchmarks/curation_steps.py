"""CPU time of each curation step's batch function on a fixed sample of the benchmark corpus, per MB and per doc.

Usage (from the repository root):

    python benchmarks/corpus.py                                   # once: builds data/bench/corpus
    python benchmarks/curation_steps.py                           # 3,000 docs, 3 repeats, prints the table
    python benchmarks/curation_steps.py --docs 500 --repeats 1    # a quick check
    python benchmarks/curation_steps.py --json out/steps-after.json
    python benchmarks/curation_steps.py --compare out/steps-before.json out/steps-after.json \\
        --write-md docs/_sections/bench-curation-steps.md

Why CPU time of the step functions, not wall time of a run: on a shared machine wall time measures the
neighbours; ``time.process_time`` of one process running one step on the same rows does not (much). Each step
runs on the output of the one before, in pipeline order, on Arrow batches of ``--batch-size`` rows (as
``curation.pipeline.CleanStage`` runs them), so the html step sees normalized text and pii sees what survived.
The whole chain is repeated ``--repeats`` times and each step's *minimum* is kept (the run least disturbed
by other processes). Rows a filter drops are left alone by later steps, as in the pipeline.

Before/after a change: run once with the old code on the path (``git archive OLD curation | tar -x -C
/tmp/old`` then ``PYTHONPATH=/tmp/old python benchmarks/curation_steps.py --json before.json``), once with
the new, and ``--compare`` the two JSON files. The sample is the same for both: every ``--stride``-th line of
each corpus part, in file order, until ``--docs`` documents.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# benchmarks/curation.py would shadow the curation package: drop this folder from the path, and put the
# repository *after* PYTHONPATH, so that PYTHONPATH=/tmp/old measures an old checkout of curation.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(REPO)]
DEFAULT_CORPUS = REPO / "data" / "bench" / "corpus"
MB = 1_000_000
STEPS = ("normalize", "html", "urls", "whitespace", "quality", "language", "pii")
"""The per-document steps, in pipeline order (dedup is a per-shard grouping, measured by benchmarks/curation.py)."""


def sample_docs(corpus: Path, docs: int, stride: int) -> list[dict[str, str]]:
    """Every ``stride``-th document of each ``*.jsonl`` part of ``corpus`` (sorted), round-robin over the parts
    so that every source is represented, until ``docs`` documents. Deterministic for a given corpus."""
    parts = sorted(p for p in corpus.glob("*.jsonl") if not p.name.startswith("_"))
    if not parts:
        raise SystemExit(f"no *.jsonl parts in {corpus}: build it with `python benchmarks/corpus.py`")
    per_part = -(-docs // len(parts))
    out: list[dict[str, str]] = []
    for part in parts:
        taken = 0
        with part.open("rb") as f:
            for i, line in enumerate(f):
                if i % stride:
                    continue
                row = json.loads(line)
                out.append({"id": str(row["id"]), "text": row["text"]})
                taken += 1
                if taken >= per_part:
                    break
    return out[:docs]


def _steps(names: list[str]) -> list[tuple[str, Any]]:
    """(name, batch callable) for ``names``, built from the registry with the demo run's settings that matter
    for cost (languages: en, so the language step filters)."""
    from curation.steps.language import LanguageConfig
    from curation.steps.registry import STEPS as SPECS

    by_name = {s.name: s for s in SPECS}
    made = []
    for name in names:
        spec = by_name[name]
        cfg = LanguageConfig(languages=("en",)) if name == "language" else spec.config()
        made.append((name, spec.make(cfg, "text")))
    return made


def measure(rows: list[dict[str, str]], names: list[str], repeats: int, batch_size: int) -> dict[str, Any]:
    """Run the chain of steps ``repeats`` times; per step the least CPU seconds, the rows and bytes it saw."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from curation.steps.base import live_mask

    batches = [pa.table({"id": [r["id"] for r in rows[i:i + batch_size]],
                         "text": pa.array([r["text"] for r in rows[i:i + batch_size]], type=pa.large_string())})
               for i in range(0, len(rows), batch_size)]
    warm = pa.table({"id": ["w"], "text": pa.array(["<p>Warm up: models load, regexes compile.</p>"],
                                                    type=pa.large_string())})
    best: dict[str, float] = {}
    seen: dict[str, dict[str, int]] = {}
    for _ in range(repeats):
        # new step objects each repeat: what a step remembers (the language answers of repeated samples) must not
        # carry over from one repeat to the next; the models themselves stay loaded (once per process)
        steps = _steps(names)
        for _name, step in steps:  # warm-up: model loads, regex compiles, lazy imports
            step(warm)
        cpu = dict.fromkeys(names, 0.0)
        docs = dict.fromkeys(names, 0)
        nbytes = dict.fromkeys(names, 0)
        for batch in batches:
            for name, step in steps:
                live = pa.array(live_mask(batch), type=pa.bool_())
                docs[name] += int(pc.sum(live).as_py() or 0)
                nbytes[name] += int(pc.sum(pc.if_else(live, pc.binary_length(batch.column("text")), 0)).as_py() or 0)
                t0 = time.process_time()
                batch = step(batch)
                cpu[name] += time.process_time() - t0
        for name in names:
            best[name] = min(best.get(name, float("inf")), cpu[name])
        seen = {n: {"docs": docs[n], "bytes": nbytes[n]} for n in names}
    return {n: {**seen[n], "cpu_s": best[n]} for n in names}


def table(results: dict[str, Any], label: str = "") -> str:
    lines = [f"| step{label} | docs in | MB in | CPU s | CPU s / MB | µs / doc |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        mb = r["bytes"] / MB
        lines.append(f"| {name} | {r['docs']:,} | {mb:.1f} | {r['cpu_s']:.3f} | "
                     f"{r['cpu_s'] / mb if mb else 0:.4f} | {1e6 * r['cpu_s'] / max(r['docs'], 1):.0f} |")
    return "\n".join(lines) + "\n"


def compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Before/after table of two ``--json`` results on the same sample."""
    lines = ["| step | MB in | CPU s before | CPU s after | µs/doc before | µs/doc after | speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, a in after["steps"].items():
        b = before["steps"].get(name)
        if b is None:
            continue
        ratio = b["cpu_s"] / a["cpu_s"] if a["cpu_s"] else float("inf")
        lines.append(f"| {name} | {a['bytes'] / MB:.1f} | {b['cpu_s']:.3f} | {a['cpu_s']:.3f} | "
                     f"{1e6 * b['cpu_s'] / max(b['docs'], 1):.0f} | {1e6 * a['cpu_s'] / max(a['docs'], 1):.0f} | "
                     f"{ratio:.2f}x |")
    tb, ta = (sum(r["cpu_s"] for r in x["steps"].values()) for x in (before, after))
    lines.append(f"| **all** | | {tb:.3f} | {ta:.3f} | | | {tb / ta if ta else 0:.2f}x |")
    return "\n".join(lines) + "\n"


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (as the docs should show it)."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(REPO))
    except ValueError:
        return str(path)


def conditions() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"Python {platform.python_version()}, {os.cpu_count()} cores, 1-min load average {load:.1f}; "
            "CPU time (time.process_time) of the step functions in one process, minimum over the repeats")


def markdown(before: dict[str, Any] | None, after: dict[str, Any], command: str) -> str:
    """The docs section: when, the command, the conditions and the table."""
    from benchmarks.docs_section import section_opening

    lines = section_opening("Curation steps: CPU time per step", after["date"], command)
    lines += [f"on {after['docs']:,} documents ({after['mb']:.1f} MB) sampled from `{after['corpus']}` "
              f"(every {after['stride']}th line of each part), batches of {after['batch_size']} rows, "
              f"{after['repeats']} repeats; {after['conditions']}.", ""]
    lines.append(compare(before, after) if before is not None else table(after["steps"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--stride", type=int, default=20, help="take every STRIDE-th line of each part")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--steps", default=",".join(STEPS), help="comma list, in pipeline order")
    ap.add_argument("--json", type=Path, help="write the result here (input of --compare)")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                    help="print (and with --write-md write) the before/after table of two --json results")
    ap.add_argument("--write-md", type=Path, help="write the docs section here")
    args = ap.parse_args(argv)

    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        print(compare(before, after))
        if args.write_md:
            cmd = " ".join(["python benchmarks/curation_steps.py", *sys.argv[1:]])
            args.write_md.write_text(markdown(before, after, cmd))
        return 0

    import curation

    rows = sample_docs(args.corpus, args.docs, args.stride)
    names = [s for s in args.steps.split(",") if s]
    steps = measure(rows, names, args.repeats, args.batch_size)
    result = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "corpus": _shown(args.corpus),
              "docs": len(rows), "mb": sum(len(r["text"].encode()) for r in rows) / MB, "stride": args.stride,
              "batch_size": args.batch_size, "repeats": args.repeats, "curation": str(Path(curation.__file__).parent),
              "conditions": conditions(), "steps": steps}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print(f"{result['docs']} docs, {result['mb']:.1f} MB, curation from {result['curation']}; {result['conditions']}")
    print(table(steps))
    if args.write_md:
        args.write_md.write_text(markdown(None, result, " ".join(["python benchmarks/curation_steps.py",
                                                                   *sys.argv[1:]])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
