"""Step time and peak memory of ``--model.fused_cross_entropy chunked`` against the standard full-logits loss.

Both sides train the same from-scratch GPT-2 (same config, same initial weights, same random token batches)
through a Lightning ``Trainer`` and our ``CausalLMModule`` (fused AdamW, accuracy on the logged steps only, as in
a real run), each in a fresh process so peak memory is that run's own. Step time: the median over the steps after
``--warmup`` of per-step timestamps (robust to other jobs briefly taking the CPU), and the process CPU seconds
per step (what the work costs whatever else runs; with one thread about the wall time of a quiet machine). Peak
memory: the most the timed steps hold above what the process held when they started (weights, optimizer state,
data), i.e. the activations, logits and gradients of a step: on CUDA ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``; on CPU the peak resident set size (``VmHWM``, reset through
``/proc/self/clear_refs``) minus the resident size. Each side also reports its losses, which must agree.

The default shape is small enough for 2 CPU cores yet has the proportions where the logits dominate: a vocabulary
of 32000 with 4 x 512 tokens a step makes 262 MB of fp32 logits, against a 2-layer, 256-wide body.

Usage (from the repository root, with the project's venv):
    python benchmarks/fused_cross_entropy.py                          # CPU, 2 interleaved repeats
    python benchmarks/fused_cross_entropy.py --write-md docs/_sections/bench-fused-ce.md
    python benchmarks/fused_cross_entropy.py --preset gpu              # GPT-2 124M shape, bf16-mixed, on CUDA
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.docs_section import section_opening  # noqa: E402

#: Shapes per preset: "cpu" runs in about a minute on 2 cores; "gpu" is GPT-2 124M at the issue's 16 x 1024.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"vocab": 32000, "seq": 512, "batch": 4, "layers": 2, "width": 256, "heads": 4, "steps": 8,
            "warmup": 2, "precision": "32-true", "device": "cpu"},
    "gpu": {"vocab": 50304, "seq": 1024, "batch": 16, "layers": 12, "width": 768, "heads": 12, "steps": 20,
            "warmup": 5, "precision": "bf16-mixed", "device": "cuda"},
}
VARIANTS = ("off", "chunked")


def rss_and_peak() -> tuple[int, int]:
    """Resident set size of this process and its peak since the last :func:`reset_peak_rss`, in bytes (Linux)."""
    with open("/proc/self/status") as fh:
        fields = dict(line.split(":", 1) for line in fh if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as fh:  # "5": reset the peak resident set size (Linux >= 4.0)
        fh.write("5")


def worker(variant: str, shape: dict[str, Any], threads: int) -> dict[str, Any]:
    """Train ``shape['steps']`` steps with ``fused_cross_entropy=variant``; timestamps, losses and peak memory."""
    import lightning.pytorch as pl
    import torch

    from modeling.module import CausalLMModule, ScratchModelConfig

    torch.set_num_threads(threads)
    cuda = shape["device"] == "cuda"
    torch.manual_seed(0)
    module = CausalLMModule(
        scratch=ScratchModelConfig(arch="gpt2", vocab_size=shape["vocab"], max_position_embeddings=shape["seq"],
                                   hidden_size=shape["width"], num_layers=shape["layers"], num_heads=shape["heads"]),
        vocab_size=shape["vocab"], fused_cross_entropy=variant)
    n = shape["batch"] * shape["steps"]
    ids = torch.randint(0, shape["vocab"], (n, shape["seq"]), generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader([{"input_ids": row} for row in ids], batch_size=shape["batch"])
    stamps: list[tuple[float, float]] = []
    losses: list[float] = []
    memory: dict[str, int] = {}

    class Probe(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == 0:
                stamps.append((time.perf_counter(), time.process_time()))
            if batch_idx == shape["warmup"]:  # after the first steps' one-time allocations (optimizer state)
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    memory["base"] = torch.cuda.memory_allocated()
                else:
                    reset_peak_rss()
                    memory["base"] = rss_and_peak()[0]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            losses.append(float(outputs["loss"]))  # a GPU sync, as the timestamp needs anyway
            if cuda:
                torch.cuda.synchronize()
            stamps.append((time.perf_counter(), time.process_time()))

    trainer = pl.Trainer(max_steps=shape["steps"], accelerator="gpu" if cuda else "cpu", devices=1,
                         precision=shape["precision"], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=50,
                         callbacks=[Probe()])
    trainer.fit(module, train_dataloaders=loader)
    peak = (torch.cuda.max_memory_allocated() if cuda else rss_and_peak()[1]) - memory["base"]
    return {"stamps": stamps, "losses": losses, "peak_bytes": peak}


def run_variant(variant: str, shape: dict[str, Any], threads: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--_worker", variant, "--_shape", json.dumps(shape), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{variant} run failed:\n{proc.stderr[-4000:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    stamps = res["stamps"][shape["warmup"]:]
    steps = [b[0] - a[0] for a, b in itertools.pairwise(stamps)]
    cpu = (stamps[-1][1] - stamps[0][1]) / (len(stamps) - 1)
    return {"step_s": statistics.median(steps), "cpu_s": cpu, "peak_mb": res["peak_bytes"] / 2**20,
            "losses": res["losses"], "tokens_per_s": shape["batch"] * shape["seq"] / statistics.median(steps)}


def render_markdown(report: dict[str, Any]) -> str:
    s, m = report["shape"], report["machine"]
    logits_mb = s["batch"] * s["seq"] * s["vocab"] * 4 / 2**20
    rows = []
    for variant in VARIANTS:
        runs = report["runs"][variant]
        rows.append(f"| {variant} | {statistics.median(r['step_s'] for r in runs):.3f} | "
                    f"{statistics.median(r['cpu_s'] for r in runs):.3f} | "
                    f"{statistics.median(r['tokens_per_s'] for r in runs):,.0f} | "
                    f"{statistics.median(r['peak_mb'] for r in runs):,.0f} | "
                    f"{runs[0]['losses'][0]:.4f} -> {runs[0]['losses'][-1]:.4f} |")
    memory_how = ("`torch.cuda.max_memory_allocated`" if s["device"] == "cuda" else
                  "peak resident set size (`VmHWM`, reset before the timed steps)")
    return "\n".join([
        *section_opening("Fused cross-entropy: the head and the loss in chunks vs the full logits", report["date"],
                         report["command"]),
        f"on {m['device']}, {m['cpus']} CPU cores, Python {m['python']}, torch {m['torch']}, "
        f"{report['threads']} torch thread(s); 1-min load average {m['load_before']:.1f} before, "
        f"{m['load_after']:.1f} after.",
        "",
        f"Setup: a from-scratch GPT-2 ({s['layers']} layers x {s['width']} wide, tied embeddings, vocabulary "
        f"{s['vocab']:,}), batch {s['batch']} x {s['seq']} tokens ({s['batch'] * s['seq']:,} a step: "
        f"{logits_mb:,.0f} MB of fp32 logits), {s['precision']}, fused AdamW, {s['steps']} steps through a Lightning "
        f"`Trainer`, the first {s['warmup']} left out of the timing; each variant in a fresh process, "
        f"{report['repeats']} interleaved repeat(s), medians. Peak memory: the most the timed steps hold above what "
        f"the process held when they started (weights, optimizer state), by {memory_how}. `chunked` is `--model.fused_cross_entropy chunked` "
        "(`modeling/loss.py`); `off` is the standard path (full logits, then `F.cross_entropy` in fp32).",
        "",
        "| fused_cross_entropy | step (s, median) | CPU s per step | tokens/s | peak memory added (MB) | "
        "loss first -> last |",
        "|---|---:|---:|---:|---:|---|",
        *rows,
        "",
        f"**chunked vs off: {report['speedup']:.2f}x the tokens/s ({report['cpu_speedup']:.2f}x per CPU second), "
        f"{report['memory_ratio']:.2f}x the peak memory "
        f"({report['memory_saved_mb']:,.0f} MB less)**; largest loss difference over the run "
        f"{report['max_loss_diff']:.2g}.",
        "",
        "Wall-clock steps move with whatever else runs on a shared machine (see the load average); the CPU seconds "
        "per step are the steadier comparison. The memory saved is the logits' (their log-softmax and gradient "
        "too), so it grows with batch x sequence x vocabulary while the chunk stays at 2**24 logits.",
        *([] if s["device"] == "cuda" else [
            "",
            "No GPU took part in this measurement. On one, `python benchmarks/fused_cross_entropy.py --preset gpu` "
            "measures GPT-2 124M at 16 x 1024 tokens in bf16-mixed (3.1 GiB of fp32 logits), and "
            "`benchmarks/gpu_check.py`'s `gpt2-fused-ce` check gives tokens/s and MFU through the training CLI "
            "next to `gpt2-eager`."]),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu")
    for key in ("vocab", "seq", "batch", "layers", "width", "steps", "warmup"):
        parser.add_argument(f"--{key}", type=int, help=f"override the preset's {key}")
    parser.add_argument("--precision", help="override the preset's precision (32-true, bf16-mixed, ...)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved off/chunked pairs; medians reported")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (the same for both; 1 is steadiest on a shared machine)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--write-md", type=Path, help="write the docs section here")
    parser.add_argument("--_worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--_shape", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._worker:
        print("RESULT " + json.dumps(worker(args._worker, json.loads(args._shape), args.threads)), flush=True)
        return 0

    shape = dict(PRESETS[args.preset])
    for key in ("vocab", "seq", "batch", "layers", "width", "steps", "warmup", "precision"):
        if getattr(args, key) is not None:
            shape[key] = getattr(args, key)
    import torch

    if shape["device"] == "cuda" and not torch.cuda.is_available():
        print("fused_cross_entropy: the gpu preset needs a CUDA device; run the cpu preset here", file=sys.stderr)
        return 2
    machine = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
               "device": torch.cuda.get_device_name() if shape["device"] == "cuda" else "CPU only (no GPU)",
               "load_before": os.getloadavg()[0]}
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        for variant in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
            res = run_variant(variant, shape, args.threads)
            runs[variant].append(res)
            print(f"[{r + 1}/{args.repeats}] {variant:8s} step {res['step_s']:.3f} s ({res['cpu_s']:.3f} CPU s), "
                  f"{res['tokens_per_s']:,.0f} "
                  f"tokens/s, peak +{res['peak_mb']:,.0f} MB, loss {res['losses'][0]:.4f} -> {res['losses'][-1]:.4f}",
                  flush=True)
    machine["load_after"] = os.getloadavg()[0]

    def med(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[variant])

    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/fused_cross_entropy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "shape": shape, "threads": args.threads, "repeats": args.repeats, "machine": machine, "runs": runs,
        "speedup": med("chunked", "tokens_per_s") / med("off", "tokens_per_s"),
        "cpu_speedup": med("off", "cpu_s") / med("chunked", "cpu_s"),
        "memory_ratio": med("chunked", "peak_mb") / med("off", "peak_mb"),
        "memory_saved_mb": med("off", "peak_mb") - med("chunked", "peak_mb"),
        "max_loss_diff": max(abs(a - b) for a, b in zip(runs["off"][0]["losses"], runs["chunked"][0]["losses"])),
    }
    report["command"] = report["command"].strip()
    print(f"chunked vs off: {report['speedup']:.2f}x tokens/s ({report['cpu_speedup']:.2f}x per CPU second), "
          f"{report['memory_ratio']:.2f}x peak memory "
          f"({report['memory_saved_mb']:,.0f} MB less); max loss difference {report['max_loss_diff']:.2g}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    if args.write_md:
        args.write_md.parent.mkdir(parents=True, exist_ok=True)
        args.write_md.write_text(render_markdown(report))
        print(f"wrote {args.write_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
