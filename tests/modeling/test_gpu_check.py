"""benchmarks/gpu_check.py on a CPU: its arguments, the exact training commands it will run on a GPU (parsed by
the real CLI), its JSON and markdown, the 'no CUDA device' exit, and a tiny end-to-end --cpu-smoke run.

GPU time is short and comes once: a typo in a flag must fail here, not there.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling.train import main as train_main

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
sys.modules["gpu_check"] = gpu_check  # its dataclasses look their module up while being defined
_spec.loader.exec_module(gpu_check)


def test_arguments_defaults_and_unknown_checks(capsys):
    args = gpu_check.parse_args([])
    assert args.checks == list(gpu_check.CHECKS) and args.md == REPO / "docs/_sections/bench-gpu.md"
    args = gpu_check.parse_args(["--cpu-smoke", "--json", "/tmp/x/g.json", "--only", "qlora,gpt2-eager"])
    assert args.checks == ["qlora", "gpt2-eager"] and args.md == Path("/tmp/x/bench-gpu-smoke.md")
    assert gpu_check.parse_args(["--skip", "ddp", "--md", "none"]).md is None
    assert "ddp" not in gpu_check.parse_args(["--skip", "ddp"]).checks
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--only", "gpt2-eagre"])
    assert "unknown check" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["gpu", "smoke"])
@pytest.mark.parametrize("name", list(gpu_check.CHECKS))
def test_every_check_command_parses_with_the_real_cli(name, mode, tmp_path, capsys):
    """The GPU run's exact arguments (GPU sizes too), checked by the training CLI itself via --print_config."""
    assets = {"shards": str(tmp_path / "shards"), "tokenizer": str(tmp_path / "tok"), "llama": str(tmp_path / "l")}
    cmd, _, _ = gpu_check.check_command(name, gpu_check.SIZES[mode], tmp_path, assets, smoke=mode == "smoke")
    assert cmd[:4] == [sys.executable, "-m", "modeling.train", "fit"]
    with pytest.raises(SystemExit) as exit_info:
        train_main([*cmd[3:], "--print_config"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err[-2000:]
    printed = capsys.readouterr().out
    assert "max_steps:" in printed
    if name == "gpt2-compile":
        assert "compile: true" in printed
    if name == "lora-fp16":
        assert "precision: 16-mixed" in printed
    if name == "gpt2-foreach":
        assert "fused: false" in printed and "foreach: true" in printed
    if name == "gpt2-fused-ce":
        assert "fused_cross_entropy: chunked" in printed


def test_read_run_takes_the_median_after_warm_up(tmp_path):
    run = tmp_path / "csv" / "version_0"
    run.mkdir(parents=True)
    rows = [{"step": 10 * (i + 1), "train/tokens_per_sec": tps, "train/mfu": tps / 1e6, "train_loss_step": loss}
            for i, (tps, loss) in enumerate([(100.0, 9.0), (900.0, 8.0), (1000.0, 7.0), (1100.0, 6.0), (5.0, 5.0)])]
    with open(run / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = gpu_check.read_run(tmp_path, warmup_windows=2)
    assert out["tokens_per_s"] == 1000.0 and out["mfu"] == pytest.approx(1000.0 / 1e6) and out["windows"] == 3
    assert (out["loss_first"], out["loss_last"]) == (9.0, 5.0)
    assert gpu_check.read_run(tmp_path / "nothing", 2) == {}


def test_json_and_markdown(tmp_path):
    ok = gpu_check.CheckResult("gpt2-eager", "GPT-2 124M", status="ok", seconds=61.0, tokens_per_s=512000.0,
                               mfu=0.471, loss_first=10.9, loss_last=6.2, optimizer_line="AdamW fused=True, ...")
    bad = gpu_check.CheckResult("qlora", "QLoRA", status="failed", seconds=5.0, log_tail="Traceback ...")
    report = {"mode": "gpu", "command": "python benchmarks/gpu_check.py", "date": "2026-11-29 20:00 UTC",
              "commit": "abc1234", "warmup_windows": 2, "json": "out/gpu_check.json", "total_seconds": 300.0,
              "missing": {"bitsandbytes": "bitsandbytes"},
              "machine": {"gpu": "NVIDIA H200", "gpus": 1, "gpu_memory_gib": 139.8, "capability": "9.0",
                          "driver": "580", "cpus": 16, "python": "3.12.3", "torch": "2.11.0", "cuda": "13.0",
                          "transformers": "5.17.0", "peak_bf16_tflops": 989.4, "gpu_table_entry": "H200 SXM"},
              "checks": {r.name: gpu_check.asdict(r) for r in (ok, bad)}}
    gpu_check.write_outputs(report, tmp_path / "o" / "g.json", tmp_path / "d" / "bench-gpu.md")
    assert json.loads((tmp_path / "o" / "g.json").read_text())["checks"]["gpt2-eager"]["mfu"] == 0.471
    md = (tmp_path / "d" / "bench-gpu.md").read_text()
    assert md.startswith("### GPU check") and "python benchmarks/gpu_check.py" in md and "2026-11-29" in md
    assert "1 x NVIDIA H200" in md and "989.4 TFLOP/s" in md and "| gpt2-eager | GPT-2 124M | ok | 512,000 | 47.1 %" in md
    assert "| qlora | QLoRA | failed |" in md and "best 47.1 % (gpt2-eager), met." in md
    assert "Missing packages on that machine: bitsandbytes." in md


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_without_cuda_it_says_so_and_exits_2():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_check.py")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr and "--cpu-smoke" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cpu_smoke_runs_every_check_command(tmp_path):
    """The GPU checks' commands at tiny sizes on this CPU (DDP and the foreach variant are covered above and in
    test_train; the QLoRA check must stop with its CUDA message)."""
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu_check.sh"), "--cpu-smoke", "--skip", "ddp,gpt2-foreach",
         "--json", str(out), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    report = json.loads(out.read_text())
    status = {name: r["status"] for name, r in report["checks"].items()}
    assert status == {"gpt2-eager": "ok", "lora-bf16": "ok", "lora-fp16": "ok", "gpt2-fused-ce": "ok",
                      "gpt2-compile": "ok", "qlora": "refused (expected)" if not torch.cuda.is_available() else "ok"}
    for name in ("gpt2-eager", "lora-bf16", "gpt2-fused-ce"):
        r = report["checks"][name]
        assert r["tokens_per_s"] > 0 and r["loss_last"] < r["loss_first"], r
        assert r["optimizer_line"].startswith("AdamW fused=True, precision bf16-mixed")
    assert "[gpu_check" in proc.stdout and "done in" in proc.stdout  # progress as it goes
    assert (tmp_path / "bench-gpu-smoke.md").read_text().startswith("### GPU check")
