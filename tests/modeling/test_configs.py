"""Every config in configs/train/ runs as shipped: through ``python -m modeling.train fit --config X`` in a fresh
process, with the config's own precision, optimizer, clipping and accumulation. Only the model's size, the data
paths and the run length shrink. A new config joins by existing; one that needs CUDA must stop with its message.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "train").glob("*.yaml"))
STEPS = 2


def shrink_args(cfg: dict, root: Path, shards: Path, tokenizer_dir: Path, pretrained: dict[str, Path]) -> list[str]:
    """Overrides that make ``cfg`` tiny: model size, data paths and size, run length, logger location."""
    model, trainer = cfg["model"], cfg["trainer"]
    args = ["--data.path", str(shards), "--data.cache_dir", str(root / "token-cache"), "--data.block_size", "32",
            "--data.batch_size", "4", "--data.max_docs", "120"]
    if "scratch" in model:
        args += ["--data.tokenizer", str(tokenizer_dir), "--model.scratch.hidden_size", "32",
                 "--model.scratch.num_layers", "2", "--model.scratch.num_heads", "2"]
        if model["scratch"].get("num_kv_heads"):
            args += ["--model.scratch.num_kv_heads", "1"]  # still grouped-query attention
    else:  # fine-tuning: the tiny saved model of the config's architecture, with its own tokenizer
        arch = "llama" if "quantization" in model or "mistral" in str(model.get("pretrained")) else "gpt2"
        args += ["--model.pretrained", str(pretrained[arch]), "--data.tokenizer", str(pretrained[arch])]
    # validate, checkpoint and export once, at the end (val_check_interval counts batches, not optimizer steps)
    batches = STEPS * int(trainer.get("accumulate_grad_batches") or 1)
    args += ["--trainer.max_steps", str(STEPS), "--trainer.val_check_interval", str(batches),
             "--trainer.limit_val_batches", "2", "--periodic_checkpoint.every_n_train_steps", str(STEPS),
             "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
             "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(root),
             "--name", "csv", "--trainer.log_every_n_steps", "1"]
    return args


def needs_cuda(cfg: dict) -> bool:
    return "quantization" in cfg["model"] or cfg["trainer"].get("accelerator") in ("gpu", "cuda")


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_config_runs_as_shipped(config, tmp_path, shards_dir, tokenizer_dir, gpt2_dir, llama_dir):
    cfg = yaml.safe_load(config.read_text())
    args = ["fit", "--config", str(config),
            *shrink_args(cfg, tmp_path, shards_dir, tokenizer_dir, {"gpt2": gpt2_dir, "llama": llama_dir})]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "modeling.train", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr

    if needs_cuda(cfg) and not torch.cuda.is_available():
        assert proc.returncode == 2, output[-3000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: --model.quantization (4-bit QLoRA) needs a CUDA GPU"), output[-3000:]
        assert "Traceback" not in proc.stderr  # one line, not a stack trace
        return

    assert proc.returncode == 0, output[-5000:]
    run_dir = next((tmp_path / "csv").iterdir())
    # what ran is what the config ships: precision, clipping, optimizer (fused AdamW), accumulation
    ran = yaml.safe_load((run_dir / "config.yaml").read_text())
    for key in ("precision", "gradient_clip_val", "accumulate_grad_batches"):  # where the config sets them
        assert ran["trainer"][key] == cfg["trainer"].get(key, ran["trainer"][key]), key
    opt = cfg["model"]["optimizer"]
    assert ran["model"]["optimizer"]["class_path"] == opt["class_path"]
    assert {k: ran["model"]["optimizer"]["init_args"][k] for k in opt["init_args"]} == opt["init_args"]
    expected = (f"optimizer: {opt['class_path'].rsplit('.', 1)[-1]} fused={bool(opt['init_args'].get('fused'))}, "
                f"precision {cfg['trainer']['precision']}")
    assert expected in output
    assert "module(s) in eval mode" not in output  # fine-tuning starts in train mode (dropout on)
    with open(run_dir / "metrics.csv") as fh:
        losses = [float(r["train_loss_step"]) for r in csv.DictReader(fh) if r.get("train_loss_step")]
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses)
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "hf" / ("adapter_config.json" if "lora" in cfg["model"] else "config.json")).exists()
