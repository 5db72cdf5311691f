"""GPU check: the training paths users run, on one GPU machine, in under 8 minutes, with nothing from a hub.

Every check is a real ``python -m modeling.train fit --config configs/train/X.yaml`` in its own process with a
timeout; only sizes and paths are overridden. Tokens/s and MFU come from the run's own throughput callback
(``train/tokens_per_sec``, ``train/mfu`` against ``modeling.peak_flops``' dense peak), as the median of the
logging windows after the first ``--warmup-windows`` (start-up, cuDNN/cuBLAS autotuning, compilation). A failed
check is recorded with the end of its log and the others still run.

    gpt2-eager     GPT-2 124M (12 x 768, block 1024, vocab 50304, no dropout) from scratch in bf16-mixed with
                   fused AdamW and clipping: gpt2-scratch.yaml at seq 1024. Target: MFU >= 45 % on H100/H200.
    lora-bf16      LoRA (lora.yaml) on a locally built ~100M Llama, bf16-mixed
    lora-fp16      the same in 16-mixed: GradScaler + fused AdamW + clipping
    qlora          qlora-mistral-7b.yaml as shipped (NF4, double quant, fp16 compute, 16-mixed, gradient
                   checkpointing, r=8 on q_proj/v_proj), the 7B base swapped for the same small Llama in 4 bits
    gpt2-fused-ce  gpt2-eager with --model.fused_cross_entropy chunked (the head and the loss in chunks, no full
                   logits): tokens/s and MFU against gpt2-eager's, the same loss curve. Its memory figure comes from
                   benchmarks/fused_cross_entropy.py --preset gpu
    gpt2-compile   gpt2-eager with --model.compile true
    gpt2-foreach   gpt2-eager with AdamW foreach instead of fused (is fused worth it?)
    ddp            GPT-2 (6 layers) on 2 GPUs with DDP; skipped, with a note, on a machine with fewer

Usage (from the repository root):
    bash benchmarks/gpu_check.sh                          # checks the imports, then runs this with defaults
    python benchmarks/gpu_check.py                        # out/gpu_check.json + docs/_sections/bench-gpu.md
    python benchmarks/gpu_check.py --only gpt2-eager,qlora --json out/gpu.json
    python benchmarks/gpu_check.py --cpu-smoke            # tiny sizes on this CPU: every check's command runs

Without a CUDA device (and without --cpu-smoke) it says so and exits with code 2.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.docs_section import section_opening  # noqa: E402

#: Modules every check needs (module name -> pip name), and the ones only some checks need.
REQUIRED = {"lightning": "lightning", "transformers": "transformers", "tokenizers": "tokenizers", "peft": "peft",
            "torchmetrics": "torchmetrics", "jsonargparse": "jsonargparse[signatures]",
            "docstring_parser": "docstring-parser", "typeshed_client": "typeshed-client", "pyarrow": "pyarrow",
            "yaml": "pyyaml", "numpy": "numpy", "safetensors": "safetensors"}
OPTIONAL = {"bitsandbytes": ("bitsandbytes", ["qlora"])}

#: Sizes per mode. "gpu": the real thing; "smoke": the same commands, tiny, on a CPU (a typo costs seconds here,
#: not a GPU lease).
SIZES: dict[str, dict[str, Any]] = {
    "gpu": {
        "docs": 8000, "tok_vocab": 8192,
        "gpt2": {"layers": 12, "width": 768, "heads": 12, "block": 1024, "batch": 16, "vocab": 50304, "steps": 80,
                 "window": 10},
        "llama": {"layers": 8, "width": 1024, "heads": 16, "kv_heads": 4, "inter": 2816},
        "lora": {"block": 512, "batch": 8, "steps": 40, "window": 5},
        "qlora": {"block": 1024, "batch": 4, "steps": 12, "window": 2},
        "ddp": {"layers": 6, "steps": 40, "window": 10},
    },
    "smoke": {
        "docs": 300, "tok_vocab": 512,
        "gpt2": {"layers": 2, "width": 64, "heads": 2, "block": 64, "batch": 4, "vocab": 576, "steps": 6,
                 "window": 2},
        "llama": {"layers": 2, "width": 64, "heads": 4, "kv_heads": 2, "inter": 128},
        "lora": {"block": 64, "batch": 4, "steps": 4, "window": 2},
        "qlora": {"block": 64, "batch": 2, "steps": 2, "window": 1},
        "ddp": {"layers": 2, "steps": 4, "window": 2},
    },
}

#: Check name -> (seconds it may take on an H100/H200, what it is). The order is the run order: the figures the
#: docs need first, the optional comparisons last (the time budget may cut them).
CHECKS: dict[str, tuple[int, str]] = {
    "gpt2-eager": (150, "GPT-2 124M from scratch, bf16-mixed, fused AdamW"),
    "lora-bf16": (90, "LoRA on a ~100M Llama, bf16-mixed"),
    "lora-fp16": (90, "LoRA on a ~100M Llama, 16-mixed (GradScaler)"),
    "qlora": (120, "QLoRA: 4-bit NF4 base (qlora-mistral-7b.yaml settings), 16-mixed"),
    "gpt2-fused-ce": (150, "GPT-2 124M, bf16-mixed, chunked fused cross-entropy"),
    "gpt2-compile": (240, "GPT-2 124M, bf16-mixed, torch.compile"),
    "gpt2-foreach": (120, "GPT-2 124M, bf16-mixed, AdamW foreach instead of fused"),
    "ddp": (180, "GPT-2 (6 layers) on 2 GPUs, DDP"),
}


@dataclass
class CheckResult:
    name: str
    what: str
    status: str = "not run"  # ok | failed | timeout | skipped | refused (expected) | not run
    seconds: float = 0.0
    tokens_per_s: float | None = None
    mfu: float | None = None
    loss_first: float | None = None
    loss_last: float | None = None
    windows: int = 0
    optimizer_line: str | None = None
    note: str = ""
    command: list[str] = field(default_factory=list)
    log_tail: str = ""


# ------------------------------------------------------------------------------------------------ commands
def common_args(name: str, work: Path, assets: dict[str, str], steps: int, window: int, smoke: bool) -> list[str]:
    """Paths, run length, logging: what every check overrides in its config."""
    root = work / "runs" / name
    args = ["--data.path", assets["shards"], "--data.cache_dir", str(work / "token-cache"),
            "--data.val_fraction", "0.01", "--trainer.max_steps", str(steps),
            "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
            "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
            "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(root),
            "--name", "csv", "--trainer.log_every_n_steps", str(window),
            "--throughput.every_n_steps", str(window),
            # the configs warm up over 30-700 steps; a short run must reach its learning rate to show the loss fall
            "--model.scheduler.init_args.warmup_steps", str(max(1, steps // 10))]
    if smoke:
        args += ["--trainer.accelerator", "cpu", "--data.num_workers", "0"]
    return args


def gpt2_args(sizes: dict[str, Any], assets: dict[str, str], layers: int | None = None) -> list[str]:
    g = sizes["gpt2"]
    return ["--config", str(REPO / "configs/train/gpt2-scratch.yaml"), "--data.tokenizer", assets["tokenizer"],
            "--model.scratch.num_layers", str(layers or g["layers"]), "--model.scratch.hidden_size", str(g["width"]),
            "--model.scratch.num_heads", str(g["heads"]), "--model.scratch.vocab_size", str(g["vocab"]),
            "--model.scratch.max_position_embeddings", str(g["block"]), "--model.scratch.dropout", "0.0",
            "--data.block_size", str(g["block"]), "--data.batch_size", str(g["batch"]),
            "--trainer.accumulate_grad_batches", "1"]


def check_command(name: str, sizes: dict[str, Any], work: Path, assets: dict[str, str],
                  smoke: bool) -> tuple[list[str], dict[str, str], str]:
    """The ``modeling.train`` arguments, extra environment and a note for check ``name``."""
    env: dict[str, str] = {}
    note = ""
    if name.startswith("gpt2"):
        g = sizes["gpt2"]
        args = gpt2_args(sizes, assets) + common_args(name, work, assets, g["steps"], g["window"], smoke)
        if name == "gpt2-compile":
            args += ["--model.compile", "true"]
            if smoke:  # a CPU compile takes minutes: the smoke run checks that the option passes, not inductor
                env["TORCH_COMPILE_DISABLE"] = "1"
                note = "CPU smoke: TORCH_COMPILE_DISABLE=1"
        if name == "gpt2-fused-ce":
            args += ["--model.fused_cross_entropy", "chunked"]
        if name == "gpt2-foreach":
            args += ["--model.optimizer.init_args.fused", "false", "--model.optimizer.init_args.foreach", "true"]
    elif name.startswith("lora"):
        lo = sizes["lora"]
        args = ["--config", str(REPO / "configs/train/lora.yaml"), "--model.pretrained", assets["llama"],
                "--data.tokenizer", assets["llama"], "--data.block_size", str(lo["block"]),
                "--data.batch_size", str(lo["batch"]),
                "--trainer.precision", "bf16-mixed" if name == "lora-bf16" else "16-mixed",
                *common_args(name, work, assets, lo["steps"], lo["window"], smoke)]
        if smoke and name == "lora-fp16":
            note = "CPU smoke: Lightning runs 16-mixed as bf16-mixed on a CPU"
    elif name == "qlora":
        q = sizes["qlora"]
        args = ["--config", str(REPO / "configs/train/qlora-mistral-7b.yaml"), "--model.pretrained", assets["llama"],
                "--data.tokenizer", assets["llama"], "--data.block_size", str(q["block"]),
                "--data.batch_size", str(q["batch"]),
                *common_args(name, work, assets, q["steps"], q["window"], smoke)]
    elif name == "ddp":
        d = sizes["ddp"]
        args = gpt2_args(sizes, assets, layers=d["layers"]) + common_args(name, work, assets, d["steps"],
                                                                          d["window"], smoke)
        args += ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
        if smoke:
            note = "CPU smoke: 2 CPU processes (gloo)"
    else:
        raise ValueError(f"unknown check {name!r}; known: {', '.join(CHECKS)}")
    return [sys.executable, "-m", "modeling.train", "fit", *args], env, note


# --------------------------------------------------------------------------------------------- results
def read_run(run_root: Path, warmup_windows: int) -> dict[str, Any]:
    """Throughput (median of the windows after warm-up), MFU and losses from a run's metrics.csv."""
    files = sorted(run_root.glob("csv/version_*/metrics.csv"))
    if not files:
        return {}
    with open(files[-1]) as fh:
        rows = list(csv.DictReader(fh))
    tps = [float(r["train/tokens_per_sec"]) for r in rows if r.get("train/tokens_per_sec")]
    mfu = [float(r["train/mfu"]) for r in rows if r.get("train/mfu")]
    losses = [float(r["train_loss_step"]) for r in rows if r.get("train_loss_step")]
    skip = min(warmup_windows, max(0, len(tps) - 1))  # keep at least one window
    out: dict[str, Any] = {"windows": len(tps) - skip}
    if tps:
        out["tokens_per_s"] = statistics.median(tps[skip:])
    if mfu:
        out["mfu"] = statistics.median(mfu[min(skip, len(mfu) - 1):])
    if losses:
        out["loss_first"], out["loss_last"] = losses[0], losses[-1]
    return out


def optimizer_line(log: str) -> str | None:
    lines = [ln for ln in log.splitlines() if "optimizer: " in ln]
    return lines[-1].split("optimizer: ", 1)[1].strip() if lines else None


def judge(name: str, result: CheckResult, rc: int, log: str, smoke: bool) -> None:
    """Set ``result.status`` from the exit code, the log and the metrics."""
    if smoke and name == "qlora" and rc == 2 and "needs a CUDA GPU" in log:
        result.status = "refused (expected)"
        result.note = "no CUDA: stops with its one-line message, as it should"
        return
    if rc != 0:
        result.status = "failed"
        return
    import math

    losses = [v for v in (result.loss_first, result.loss_last) if v is not None]
    if not losses or not all(math.isfinite(v) for v in losses):
        result.status = "failed"
        result.note = (result.note + "; " if result.note else "") + "no finite training loss logged"
        return
    result.status = "ok"
    if len(losses) == 2 and losses[1] >= losses[0]:
        result.note = (result.note + "; " if result.note else "") + "the loss did not fall"


# ---------------------------------------------------------------------------------------------- running
def run_logged(cmd: list[str], env: dict[str, str], log_path: Path, timeout: float, label: str) -> tuple[int, bool]:
    """Run ``cmd`` with its output in ``log_path``; a heartbeat line every 30 s. Returns (exit code, timed out)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group: a timeout ends DDP ranks too
        next_beat = 30.0
        while True:
            try:
                return proc.wait(timeout=1.0), False
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - start
                if elapsed > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return -9, True
                if elapsed >= next_beat:
                    last = _last_line(log_path)
                    print(f"    ... {label}: {elapsed:.0f} s" + (f" | {last}" if last else ""), flush=True)
                    next_beat += 30.0


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:120] if lines else ""


def child_env(extra: dict[str, str], smoke: bool) -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
           **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    if smoke:
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_check(name: str, sizes: dict[str, Any], work: Path, assets: dict[str, str], smoke: bool, timeout: float,
              warmup_windows: int) -> CheckResult:
    cmd, extra_env, note = check_command(name, sizes, work, assets, smoke)
    result = CheckResult(name=name, what=CHECKS[name][1], note=note, command=cmd[1:])
    shutil.rmtree(work / "runs" / name, ignore_errors=True)
    log_path = work / "logs" / f"{name}.log"
    start = time.monotonic()
    rc, timed_out = run_logged(cmd, child_env(extra_env, smoke), log_path, timeout, name)
    result.seconds = round(time.monotonic() - start, 1)
    log = log_path.read_text(errors="replace")
    for key, value in read_run(work / "runs" / name, warmup_windows).items():
        setattr(result, key, value)
    result.optimizer_line = optimizer_line(log)
    if timed_out:
        result.status = "timeout"
        result.note = (result.note + "; " if result.note else "") + f"stopped after {timeout:.0f} s"
    else:
        judge(name, result, rc, log, smoke)
    if result.status not in ("ok", "refused (expected)"):
        result.log_tail = "\n".join(log.splitlines()[-40:])[-4000:]
    return result


# ----------------------------------------------------------------------------------------------- assets
def prepare_assets(work: Path, sizes: dict[str, Any]) -> dict[str, str]:
    """Corpus shards + BPE tokenizer (benchmarks/train.py's Zipf corpus) and a small Llama saved locally."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from benchmarks.train import make_corpus

    root = work / "assets"
    shutil.rmtree(root, ignore_errors=True)
    shards, tokenizer = make_corpus(root, sizes["docs"], sizes["tok_vocab"])
    tok = PreTrainedTokenizerFast.from_pretrained(tokenizer)
    s = sizes["llama"]
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=s["width"], intermediate_size=s["inter"],
                      num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                      num_key_value_heads=s["kv_heads"], max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    llama = root / "llama"
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(llama)
    tok.save_pretrained(llama)
    n_params = sum(p.numel() for p in model.parameters())
    return {"shards": str(shards), "tokenizer": str(tokenizer), "llama": str(llama), "llama_params": str(n_params)}


# ------------------------------------------------------------------------------------------- environment
def missing_modules() -> dict[str, str]:
    """Module -> pip name, for each module the checks import that is not installed."""
    found = {m: importlib.util.find_spec(m) is not None for m in [*REQUIRED, *OPTIONAL]}
    missing = {m: pip for m, pip in REQUIRED.items() if not found[m]}
    missing.update({m: pip for m, (pip, _) in OPTIONAL.items() if not found[m]})
    return missing


def describe_machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "cpus": os.cpu_count(), "host": platform.node()}
    for mod in ("transformers", "lightning", "peft", "bitsandbytes", "torchmetrics", "jsonargparse"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # a missing or broken package is reported, not fatal
            info[mod] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
                    gpu_memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}")
        from modeling.peak_flops import lookup_peak_flops, match_device

        info["gpu_table_entry"] = match_device(info["gpu"])
        peak = lookup_peak_flops(info["gpu"], "bf16")
        info["peak_bf16_tflops"] = peak / 1e12 if peak else None
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            info["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout else None
        except (OSError, subprocess.SubprocessError, IndexError):
            info["driver"] = None
    return info


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# ------------------------------------------------------------------------------------------------ report
def fmt_num(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def render_markdown(report: dict[str, Any]) -> str:
    """The docs section (docs/_sections/bench-gpu.md): command, machine, date, one row per check."""
    m = report["machine"]
    gpu = (f"{m.get('gpus', 0)} x {m.get('gpu')} ({m.get('gpu_memory_gib')} GiB, compute capability "
           f"{m.get('capability')}, driver {m.get('driver')})" if m.get("gpu") else "no GPU (CPU smoke run)")
    versions = ", ".join(f"{k} {m.get(k)}" for k in ("torch", "transformers", "lightning", "peft", "bitsandbytes")
                         if m.get(k))
    peak = (f"MFU is against the dense bf16 peak of `modeling.peak_flops` for this device "
            f"({m['peak_bf16_tflops']:.1f} TFLOP/s, entry \"{m.get('gpu_table_entry')}\")"
            if m.get("peak_bf16_tflops") else "no dense peak known for this device, so no MFU")
    lines = [
        *section_opening("GPU check: training on the paths users run"
                         + (" (CPU smoke run)" if report["mode"] != "gpu" else ""), report["date"], report["command"]),
        f"on {gpu}; {m.get('cpus')} CPU cores, Python {m.get('python')}, CUDA {m.get('cuda')}, {versions}"
        + (f"; commit {report['commit']}" if report.get("commit") else "") + ".",
        "",
        "Each check is `python -m modeling.train fit --config configs/train/<config>.yaml` in a fresh process, with"
        " only sizes and paths overridden; everything (tokenizer, corpus, models) is built locally. Tokens/s and MFU"
        " are the run's own `train/tokens_per_sec` and `train/mfu`, the median of the logging windows after the"
        f" first {report['warmup_windows']} (start-up, autotuning, compilation); {peak}.",
        "",
        "| check | what | status | tokens/s | MFU | loss first -> last | time (s) | notes |",
        "|---|---|---|---:|---:|---|---:|---|",
    ]
    for r in report["checks"].values():
        loss = (f"{r['loss_first']:.2f} -> {r['loss_last']:.2f}" if r.get("loss_first") is not None
                and r.get("loss_last") is not None else "")
        # QLoRA's FLOP estimate counts packed 4-bit weights and no recomputation: not an MFU worth printing
        mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") is not None and r["name"] != "qlora" else ""
        notes = "; ".join(x for x in (r.get("note"), r.get("optimizer_line")) if x)
        lines.append(f"| {r['name']} | {r['what']} | {r['status']} | {fmt_num(r.get('tokens_per_s'), ',.0f')} | "
                     f"{mfu} | {loss} | {r['seconds']:.0f} | {notes.replace('|', '/')} |")
    mfus = [(r["mfu"], r["name"]) for r in report["checks"].values() if r["name"].startswith("gpt2") and r.get("mfu")]
    if mfus:
        best, name = max(mfus)
        lines += ["", f"Target: GPT-2 124M at >= 45 % MFU on an H100/H200: best {100 * best:.1f} % ({name}), "
                  + ("met." if best >= 0.45 else "not met.")]
    lines += ["", f"Total wall time {report['total_seconds']:.0f} s. Raw figures: `{report['json']}`."]
    if report.get("missing"):
        lines += ["", "Missing packages on that machine: " + ", ".join(sorted(report["missing"].values())) + "."]
    return "\n".join(lines) + "\n"


def write_outputs(report: dict[str, Any], json_path: Path, md_path: Path | None) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, default=str))
    if md_path is not None:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(render_markdown(report))


# ----------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=REPO / "out/gpu_check.json", help="where the figures go")
    parser.add_argument("--md", type=Path, default=None,
                        help="the docs section; default docs/_sections/bench-gpu.md (a --cpu-smoke run: next to "
                             "--json). 'none' writes none")
    parser.add_argument("--work", type=Path, default=REPO / "out/gpu_check", help="assets, runs and logs")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(CHECKS)}")
    parser.add_argument("--skip", default="", help="comma-separated checks to leave out")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="total seconds for all checks; a check that would not fit is skipped")
    parser.add_argument("--warmup-windows", type=int, default=2, help="logging windows left out of the timing")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny sizes on the CPU: runs every check's command (no figures worth keeping)")
    parser.add_argument("--_prepare", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_sizes", default="gpu", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n.strip() for n in (args.only or ",".join(CHECKS)).split(",") if n.strip()]
    skip = {n.strip() for n in args.skip.split(",") if n.strip()}
    unknown = sorted(set(names) - set(CHECKS)) + sorted(skip - set(CHECKS))
    if unknown:
        parser.error(f"unknown check(s) {unknown}; known: {', '.join(CHECKS)}")
    args.checks = [n for n in names if n not in skip]
    if args.md is None:
        args.md = (args.json.parent / "bench-gpu-smoke.md" if args.cpu_smoke
                   else REPO / "docs/_sections/bench-gpu.md")
    elif str(args.md).lower() == "none":
        args.md = None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._prepare:  # child process: build the assets, print their paths as JSON
        print("ASSETS " + json.dumps(prepare_assets(args._prepare, SIZES[args._sizes])))
        return 0

    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"[gpu_check {time.monotonic() - t0:5.0f} s] {msg}", flush=True)

    try:
        import torch
    except ImportError as err:
        print(f"gpu_check: cannot import torch ({err}); install a CUDA build of torch first", file=sys.stderr)
        return 2
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print(f"gpu_check: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}): nothing to "
              "measure here. Run it on a GPU machine, or add --cpu-smoke to run every check tiny on this CPU.",
              file=sys.stderr)
        return 2

    mode = "smoke" if args.cpu_smoke else "gpu"
    sizes = SIZES[mode]
    missing = missing_modules()
    if missing:
        say("MISSING packages: " + ", ".join(f"{m} (pip install {p})" for m, p in missing.items()))
        for m, (_, needed_by) in OPTIONAL.items():
            if m in missing:
                say(f"  without {m}: {', '.join(needed_by)} is skipped")
    machine = describe_machine()
    say(f"machine: {machine.get('gpu', 'CPU')} x{machine.get('gpus', 0)}, torch {machine['torch']}, "
        f"transformers {machine.get('transformers')}, lightning {machine.get('lightning')}, "
        f"peft {machine.get('peft')}, bitsandbytes {machine.get('bitsandbytes')}")
    if machine.get("gpu"):
        say(f"dense bf16 peak for MFU: {machine.get('peak_bf16_tflops')} TFLOP/s "
            f"(table entry {machine.get('gpu_table_entry')!r})")

    command = "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report: dict[str, Any] = {
        "mode": "gpu" if mode == "gpu" else "cpu-smoke", "command": command.strip(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": git_commit(),
        "machine": machine, "missing": missing, "warmup_windows": args.warmup_windows, "json": str(args.json),
        "sizes": sizes, "checks": {},
    }
    results: dict[str, CheckResult] = {}
    blocked = [m for m in REQUIRED if m in missing]
    work = args.work.resolve()
    assets: dict[str, str] | None = None
    if not blocked:
        say(f"building the corpus, tokenizer and a small Llama under {work}/assets ...")
        log = work / "logs" / "prepare.log"
        rc, _ = run_logged([sys.executable, str(Path(__file__).resolve()), "--_prepare", str(work), "--_sizes", mode],
                           child_env({}, args.cpu_smoke), log, 240, "prepare")
        text = log.read_text(errors="replace")
        found = [ln for ln in text.splitlines() if ln.startswith("ASSETS ")]
        if rc == 0 and found:
            assets = json.loads(found[-1][len("ASSETS "):])
            report["assets"] = assets
            say(f"assets ready (Llama {int(assets['llama_params']):,} parameters)")
        else:
            say("building the assets FAILED:\n" + "\n".join(text.splitlines()[-30:]))

    for i, name in enumerate(args.checks, 1):
        expected, what = CHECKS[name]
        result = CheckResult(name=name, what=what)
        remaining = args.budget_s - (time.monotonic() - t0)
        if blocked or assets is None:
            result.status, result.note = "skipped", ("missing " + ", ".join(blocked) if blocked
                                                     else "the assets could not be built")
        elif name == "qlora" and "bitsandbytes" in missing and not args.cpu_smoke:
            result.status, result.note = "skipped", "bitsandbytes is not installed"
        elif name == "ddp" and not args.cpu_smoke and torch.cuda.device_count() < 2:
            result.status, result.note = "skipped", f"{torch.cuda.device_count()} GPU: DDP needs 2"
        elif not args.cpu_smoke and remaining < min(expected, 60):
            result.status, result.note = "skipped", f"time budget: {remaining:.0f} s left of {args.budget_s:.0f}"
        else:
            timeout = min(expected * (4 if args.cpu_smoke else 1), max(remaining, 60))
            say(f"[{i}/{len(args.checks)}] {name}: {what} (timeout {timeout:.0f} s) ...")
            result = run_check(name, sizes, work, assets, args.cpu_smoke, timeout, args.warmup_windows)
        results[name] = result
        figures = ", ".join(x for x in (
            f"{result.tokens_per_s:,.0f} tokens/s" if result.tokens_per_s else "",
            f"MFU {100 * result.mfu:.1f} %" if result.mfu is not None else "",
            f"loss {result.loss_first:.2f} -> {result.loss_last:.2f}" if result.loss_last is not None else "",
            result.note) if x)
        say(f"[{i}/{len(args.checks)}] {name}: {result.status.upper()} in {result.seconds:.0f} s"
            + (f" | {figures}" if figures else ""))
        if result.optimizer_line:
            say(f"    optimizer: {result.optimizer_line}")
        if result.log_tail:
            print("    --- end of its log ---\n    " + "\n    ".join(result.log_tail.splitlines()[-25:]), flush=True)
        report["checks"][name] = asdict(result)
        report["total_seconds"] = round(time.monotonic() - t0, 1)
        write_outputs(report, args.json, args.md)  # after every check: a later crash or kill loses nothing

    report["total_seconds"] = round(time.monotonic() - t0, 1)
    write_outputs(report, args.json, args.md)
    bad = [n for n, r in results.items() if r.status in ("failed", "timeout")]
    say(f"done in {report['total_seconds']:.0f} s: " + ", ".join(f"{n} {r.status}" for n, r in results.items()))
    say(f"wrote {args.json}" + (f" and {args.md}" if args.md else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
