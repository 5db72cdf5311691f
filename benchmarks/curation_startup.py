"""Fixed cost of a small curation run: where the demo's seconds go (imports, Ray start, the stages, the report).

Usage (from the repository root):

    python benchmarks/curation_startup.py                        # the demo run 3 times, a table of its phases
    python benchmarks/curation_startup.py --runs 5 --json out/startup-after.json
    PYTHONPATH=/tmp/old python benchmarks/curation_startup.py --json out/startup-before.json   # an old checkout
    python benchmarks/curation_startup.py --compare out/startup-before.json out/startup-after.json

On 2,253 documents (1 MB) the steps themselves cost about a second of CPU: everything else is fixed cost, which
is what a user of a small corpus waits for. Each run is a fresh ``python -m curation run --config
configs/curation/demo.yaml`` process with timers wrapped around the pipeline's phases (``init_ray``,
``_stage1``, ``_dedup``, ``_stage2``, ``write_report``, the CLI's ``shutdown_ray``; see ``PHASES``) and its
launch and exit timed from outside (``process``, what the user waits for). Besides their wall seconds it records
the CPU seconds of the whole process tree (driver, Ray's daemons and workers: ``tree_cpu``), sampled just
before Ray stops, which is the figure to trust on a shared machine. It warns when a run leaves a raylet or
gcs_server running. Outputs must not change: compare two runs' outputs with
``tests/curation`` or by reading their parquet files.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PHASES = ("start", "imports", "plan", "ray_init", "stage1", "dedup", "stage2", "write_report", "shutdown", "total",
          "after_main", "process", "tree_cpu")
"""``start``: from launching the process to the benchmark's first line (the interpreter's own start-up);
``plan``: the read plan, the inputs' fingerprints and the output folder's checks (before Ray starts);
``shutdown``: the CLI stopping Ray (0 where the checkout stops it in Ray's exit hook instead); ``total``: the
benchmark's first line to the CLI's return; ``after_main``: from there to the process's exit (Ray's exit hook
when the CLI leaves Ray running); ``process``: launch to exit, what the user waits for."""


def tree_cpu() -> float:
    """CPU seconds of this process and its descendants (Ray's daemons and workers) so far."""
    import psutil

    me = psutil.Process()
    cpu = sum(me.cpu_times()[:4])
    for proc in me.children(recursive=True):
        try:
            cpu += sum(proc.cpu_times()[:2])
        except psutil.Error:  # a worker that exited between the listing and the reading
            continue
    return cpu


def child(argv: list[str], launched: float) -> None:
    """One demo run in this process, its phase times printed as one JSON line on stderr."""
    t0 = time.perf_counter()
    times: dict[str, float] = {"start": time.time() - launched}
    import curation.__main__ as cli
    import curation.layout as layout
    import curation.pipeline as pipeline

    times["imports"] = time.perf_counter() - t0

    def timed(name: str, label: str, module: Any = pipeline, before: Any = None) -> None:
        fn = getattr(module, name, None)
        if fn is None:  # an older checkout without it
            return

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if before is not None:
                before()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[label] = times.get(label, 0.0) + time.perf_counter() - start

        setattr(module, name, wrapper)

    def sample_cpu() -> None:  # before Ray's processes are gone
        times["tree_cpu"] = tree_cpu()

    for name, label in (("plan_reads", "plan"), ("fingerprint_inputs", "plan"), ("init_ray", "ray_init"),
                        ("_stage1", "stage1"), ("_dedup", "dedup"), ("_stage2", "stage2"),
                        ("write_report", "write_report")):
        timed(name, label)
    timed("prepare_output", "plan", module=layout)
    timed("shutdown_ray", "shutdown", module=cli, before=sample_cpu)
    cli.main(argv)
    times["total"] = time.perf_counter() - t0
    times.setdefault("tree_cpu", tree_cpu())
    times.setdefault("shutdown", 0.0)
    times["main_returned"] = time.time()
    print("PHASES " + json.dumps(times), file=sys.stderr)


def run_once(out: Path) -> dict[str, float]:
    before = set(ray_processes())
    launched = time.time()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(launched), "run", "--config",
           "configs/curation/demo.yaml", "--output", str(out), "--overwrite"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ})
    exited = time.time()
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("PHASES ")]
    if proc.returncode or not lines:
        raise SystemExit(f"demo run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    times = json.loads(lines[-1][len("PHASES "):])
    times["after_main"] = exited - times.pop("main_returned")
    times["process"] = exited - launched
    time.sleep(0.5)  # a daemon being reaped
    if leftovers := sorted(set(ray_processes()) - before):  # or another session's Ray that started meanwhile
        print(f"warning: Ray processes that appeared during the run are still running: {leftovers}", flush=True)
    return times


def ray_processes() -> list[str]:
    """Ray daemons (raylet, gcs_server) still running on this machine: a finished run must leave none."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] in ("raylet", "gcs_server") or "/raylet/raylet " in cmd or "gcs_server " in cmd:
            found.append(f"{proc.pid} {proc.info['name']}")
    return found


def summarize(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {p: {"min": min(r.get(p, 0.0) for r in runs), "median": statistics.median(r.get(p, 0.0) for r in runs)}
            for p in PHASES if any(p in r for r in runs)}


def table(summary: dict[str, dict[str, float]]) -> str:
    lines = ["| phase | min s | median s |", "|---|---:|---:|"]
    lines += [f"| {p} | {v['min']:.2f} | {v['median']:.2f} |" for p, v in summary.items()]
    return "\n".join(lines) + "\n"


def compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    lines = ["| phase | before (median s) | after (median s) | before (min s) | after (min s) |",
             "|---|---:|---:|---:|---:|"]
    for p in PHASES:
        if p not in before["summary"] or p not in after["summary"]:  # a phase an older version did not time
            continue
        b, a = before["summary"][p], after["summary"][p]
        lines.append(f"| {p} | {b['median']:.2f} | {a['median']:.2f} | {b['min']:.2f} | {a['min']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        # benchmarks/curation.py would shadow the curation package; PYTHONPATH (an old checkout) comes first
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(REPO)]
        child(argv[2:], float(argv[1]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write the runs and their summary here (input of --compare)")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args(argv)
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        print(compare(before, after))
        return 0
    runs = []
    with tempfile.TemporaryDirectory(prefix="curation-startup-") as tmp:
        for i in range(args.runs):
            runs.append(run_once(Path(tmp) / f"run-{i}"))
            print(f"run {i + 1}/{args.runs}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()),
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    summary = summarize(runs)
    print(table(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": runs, "summary": summary,
                                         "pythonpath": os.environ.get("PYTHONPATH", "")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
