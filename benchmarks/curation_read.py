"""CPU time of the curation reader (``curation.io.read_task``, stage 1's parsing) on one input file.

Usage (from the repository root):

    python benchmarks/curation_read.py                                  # data/bench/corpus/part-00003.jsonl
    python benchmarks/curation_read.py PATH --repeats 5 --batch-rows 8192
    python benchmarks/curation_read.py PATH --json out/read-after.json
    python benchmarks/curation_read.py PATH --reference /tmp/old        # the same, old code vs this checkout
    python benchmarks/curation_read.py --compare out/read-before.json out/read-after.json

What is measured: the planned read tasks of the file (``plan_reads``, not timed) run one after the other
through ``read_task``, all of its tables taken, with the default ``ReaderConfig`` but for ``--batch-rows``.
The time is ``time.process_time`` of this process (CPU, not wall: on a shared machine wall time measures
the neighbours), the minimum of ``--repeats`` runs (the least disturbed one). It prints MB/s of input and
µs per document (per record the reader counted).

Old code against new: ``git archive OLD curation common | tar -x -C /tmp/old``, then ``--reference
/tmp/old`` runs the measurement again in a child process with ``PYTHONPATH=/tmp/old`` and prints both, or
measure each on its own with ``--json`` and ``--compare`` the two files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# benchmarks/curation.py would shadow the curation package: drop this folder from the path, and put the
# repository *after* PYTHONPATH, so that PYTHONPATH=/tmp/old measures an old checkout of curation.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(REPO)]
DEFAULT_FILE = REPO / "data" / "bench" / "corpus" / "part-00003.jsonl"
MB = 1_000_000


def measure(path: Path, repeats: int, batch_rows: int, text_column: str) -> dict[str, Any]:
    """Minimum CPU seconds of reading ``path`` whole over ``repeats`` runs, with rows, bytes and rates."""
    import curation
    from curation.io import ReadAccount, ReaderConfig, plan_reads, read_task

    cfg = ReaderConfig(batch_rows=batch_rows)
    tasks = plan_reads([str(path)], text_column, cfg).tasks
    best, records, rows = float("inf"), 0, 0
    for _ in range(repeats):
        records = rows = 0
        start = time.process_time()
        for task in tasks:
            account = ReadAccount(task.source)
            rows += sum(t.num_rows for t in read_task(task, text_column, cfg, account=account))
            records += account.records
        best = min(best, time.process_time() - start)
    size = path.stat().st_size
    return {"file": str(path), "bytes": size, "records": records, "rows": rows, "repeats": repeats,
            "batch_rows": batch_rows, "cpu_s": best, "mb_per_s": size / MB / best,
            "us_per_doc": best / max(records, 1) * 1e6, "code": str(Path(curation.__file__).parent),
            "python": platform.python_version()}


def line(label: str, r: dict[str, Any]) -> str:
    return (f"{label:<10} {r['cpu_s']:8.3f} s CPU  {r['mb_per_s']:7.1f} MB/s  {r['us_per_doc']:8.1f} µs/doc  "
            f"({r['records']:,} docs, {r['bytes'] / MB:.1f} MB, min of {r['repeats']}; {r['code']})")


def compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    return "\n".join([line("before", before), line("after", after),
                      f"speed-up   {before['cpu_s'] / after['cpu_s']:.2f}x "
                      f"({(1 - after['cpu_s'] / before['cpu_s']) * 100:.0f}% less CPU)"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", type=Path, default=DEFAULT_FILE, help="input file (any reader format)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-rows", type=int, default=8192)
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--json", type=Path, help="write the result here (input of --compare); - prints it")
    ap.add_argument("--reference", type=Path, metavar="DIR",
                    help="also measure the checkout in DIR (PYTHONPATH=DIR, in a child process) and compare")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                    help="compare two --json results and exit")
    args = ap.parse_args()
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        print(compare(before, after))
        return
    if not args.file.exists():
        raise SystemExit(f"no file {args.file}: build the corpus with `python benchmarks/corpus.py` or pass a path")
    result = measure(args.file, args.repeats, args.batch_rows, args.text_column)
    if str(args.json) == "-":  # how --reference gets the child's result
        print(json.dumps(result))
        return
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.reference is None:
        print(line("read_task", result))
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(args.reference.resolve())] +
                                                      [p for p in [os.environ.get("PYTHONPATH")] if p]))
    child = subprocess.run([sys.executable, __file__, str(args.file), "--repeats", str(args.repeats),
                            "--batch-rows", str(args.batch_rows), "--text-column", args.text_column,
                            "--json", "-"], env=env, check=True, capture_output=True, text=True)
    reference = json.loads(child.stdout.strip().splitlines()[-1])
    print(compare(reference, result))


if __name__ == "__main__":
    main()
