"""Training throughput: our LightningModule + data module against a plain Hugging Face ``Trainer``.

The question: what does our training stack (Lightning loop, torchmetrics on every step, the step-seeded RNG for
exact resume, the default callbacks: checkpointing, early stopping, LR monitor, throughput, HF export) cost
against the reference loop most users know? Both sides train the same from-scratch GPT-2 (same config, same
initial weights, fp32 on CPU), on the same packed token blocks (our token cache, built once before timing),
with the same batch size, AdamW settings, cosine schedule, gradient clipping and number of steps, each in a
fresh process. Tokens/s is measured over the steps after ``--warmup`` (first-step allocations and lazy inits
excluded on both sides) from per-step timestamps taken in a callback: tokens per step / the median step time
(robust to other jobs briefly taking the CPU), and tokens per second of process CPU time (what the work costs,
whatever else runs). Pairs run interleaved (ours first, then HF first, ...); medians are reported.
Target on CPU: ours >= 0.95x.

With a CUDA GPU the script also times a GPT-2 124M (12 x 768, block 1024) in bf16-mixed on both sides and
reports model FLOPs utilization: (6 N + 12 L d T) FLOPs per token x tokens/s / the GPU's peak bf16 FLOP/s
(dense, ``modeling.peak_flops``; N excludes the embedding, the tied head counts as a matmul).

Usage (from the repository root; on a machine shared with others prefer the median of several repeats):
    .venv/bin/python benchmarks/train.py                       # CPU: tiny GPT-2, 3 interleaved repeats
    .venv/bin/python benchmarks/train.py --repeats 1 --steps 30
    .venv/bin/python benchmarks/train.py --json out/bench-train.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: Model / data shapes per mode. "cpu" is tiny on purpose (2 cores); "gpu" is GPT-2 small (124M).
SHAPES: dict[str, dict[str, Any]] = {
    "cpu": {"layers": 4, "width": 256, "heads": 4, "block": 128, "batch": 8, "vocab": 4096, "docs": 6000,
            "precision": "32-true"},
    "gpu": {"layers": 12, "width": 768, "heads": 12, "block": 1024, "batch": 16, "vocab": 50304, "docs": 20000,
            "precision": "bf16-mixed"},
}
LR, WARMUP_STEPS = 6e-4, 5


def make_corpus(root: Path, n_docs: int, vocab: int) -> tuple[Path, Path]:
    """Zipf-distributed pseudo-words as parquet shards, and a byte-level BPE tokenizer trained on them."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    syllables = ["ka", "lo", "mi", "ner", "to", "sa", "vi", "den", "ur", "pe", "qua", "sto", "li", "ma", "ren"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(20000)]
    weights = [1 / (i + 1) for i in range(len(words))]
    docs = [" ".join(rng.choices(words, weights, k=rng.randint(50, 400))) + "." for _ in range(n_docs)]
    shards = root / "shards"
    shards.mkdir(parents=True)
    for s in range(4):
        pq.write_table(pa.table({"text": docs[s::4]}), shards / f"part-{s}.parquet")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    tok.train_from_iterator(docs[:2000], trainers.BpeTrainer(
        vocab_size=min(vocab, 8192), special_tokens=list(special.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, **special).save_pretrained(root / "tokenizer")
    return shards, root / "tokenizer"


def cli_args(shape: dict[str, Any], shards: Path, tokenizer: Path, out: Path, cache: Path, steps: int,
             device: str) -> list[str]:
    return [
        "fit", "--config", str(REPO / "configs/train/tiny-cpu.yaml"),
        "--data.path", str(shards), "--data.tokenizer", str(tokenizer), "--data.cache_dir", str(cache),
        "--data.block_size", str(shape["block"]), "--data.batch_size", str(shape["batch"]),
        "--data.val_fraction", "0.01",
        "--model.scratch.num_layers", str(shape["layers"]), "--model.scratch.hidden_size", str(shape["width"]),
        "--model.scratch.num_heads", str(shape["heads"]), "--model.scratch.vocab_size", str(shape["vocab"]),
        "--model.scratch.max_position_embeddings", str(shape["block"]),
        "--model.optimizer.lr", str(LR), "--model.scheduler.warmup_steps", str(WARMUP_STEPS),
        "--model.scheduler.min_lr_ratio", "0.0",
        "--trainer.accelerator", device, "--trainer.precision", shape["precision"],
        "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0", "--trainer.val_check_interval",
        str(steps), "--trainer.default_root_dir", str(out / "runs"), "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(out / "runs"),
    ]


def worker(side: str, mode: str, shards: Path, tokenizer: Path, out: Path, cache: Path, steps: int,
           threads: int) -> dict:
    """Train ``steps`` steps on one side and return per-step timestamps (runs in its own process)."""
    import torch

    torch.set_num_threads(threads)
    device = "gpu" if mode == "gpu" else "cpu"
    shape = SHAPES[mode]
    stamps: list[tuple[float, float]] = []

    def stamp() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        stamps.append((time.perf_counter(), time.process_time()))

    from modeling.train import main

    cli = main(cli_args(shape, shards, tokenizer, out, cache, steps, device)[1:], run=False)  # no subcommand
    dm = cli.datamodule
    if side == "ours":
        import lightning.pytorch as pl

        class Stamp(pl.Callback):
            def on_train_batch_end(self, *args: Any) -> None:
                stamp()

        cli.trainer.callbacks.append(Stamp())
        cli.trainer.fit(cli.model, dm)
        flops = cli.model._estimate_flops(torch.zeros(shape["batch"], shape["block"], dtype=torch.long))
    else:
        from transformers import Trainer, TrainerCallback, TrainingArguments

        dm.prepare_data()
        dm.setup("fit")
        torch.manual_seed(0)
        module = cli.model
        module.configure_model()  # the same config and initial weights as our side (seeded identically)
        model = module.model

        class HFStamp(TrainerCallback):
            def on_step_end(self, *args: Any, **kwargs: Any) -> None:
                stamp()

        args = TrainingArguments(
            output_dir=str(out / "hf"), per_device_train_batch_size=shape["batch"], max_steps=steps,
            learning_rate=LR, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, lr_scheduler_type="cosine",
            warmup_steps=WARMUP_STEPS, max_grad_norm=1.0, logging_steps=50, save_strategy="no",
            eval_strategy="no", report_to="none", dataloader_num_workers=0, use_cpu=device == "cpu",
            bf16=mode == "gpu", seed=0, disable_tqdm=True, remove_unused_columns=False,
        )
        Trainer(model=model, args=args, train_dataset=dm.train_set, callbacks=[HFStamp()]).train()
        flops = module._estimate_flops(torch.zeros(shape["batch"], shape["block"], dtype=torch.long))
    return {"stamps": stamps, "tokens_per_step": shape["batch"] * shape["block"], "flops_per_step": flops}


def run_side(side: str, mode: str, shards: Path, tokenizer: Path, root: Path, steps: int, warmup: int,
             threads: int) -> dict:
    out = Path(tempfile.mkdtemp(dir=root, prefix=f"{side}-"))
    result_file = out / "result.json"
    cmd = [sys.executable, __file__, "--_worker", side, "--mode", mode, "--_shards", str(shards),
           "--_tokenizer", str(tokenizer), "--_out", str(out), "--steps", str(steps), "--threads", str(threads),
           "--_cache", str(root / "cache")]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not result_file.exists():
        raise RuntimeError(f"{side} run failed:\n{proc.stderr[-4000:]}")
    res = json.loads(result_file.read_text())
    wall = [w for w, _ in res["stamps"]][warmup:]
    cpu = [c for _, c in res["stamps"]][warmup:]
    steps = [b - a for a, b in itertools.pairwise(wall)]
    tokens = res["tokens_per_step"]
    return {
        # median step: robust to other jobs on a shared machine stealing the CPU for a few steps
        "tokens_per_s": tokens / statistics.median(steps),
        "tokens_per_s_mean": len(steps) * tokens / (wall[-1] - wall[0]),
        # process CPU time: what the work costs, whatever else runs on the machine (1 thread: ~= wall)
        "tokens_per_cpu_s": len(steps) * tokens / (cpu[-1] - cpu[0]),
        "flops_per_step": res["flops_per_step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out of the timing")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved ours/HF pairs; the median is reported")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU (same for both)")
    parser.add_argument("--mode", choices=["auto", "cpu", "gpu"], default="auto",
                        help="auto: cpu, and gpu too when CUDA is available")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    for hidden in ("--_worker", "--_shards", "--_tokenizer", "--_out", "--_cache"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._worker:
        out = Path(args._out)
        # the first run builds our token cache (before any timing); every later run of both sides reads it
        res = worker(args._worker, args.mode, Path(args._shards), Path(args._tokenizer), out, Path(args._cache),
                     args.steps, args.threads)
        (out / "result.json").write_text(json.dumps(res))
        return

    import torch

    modes = ["cpu", "gpu"] if args.mode == "auto" and torch.cuda.is_available() else (
        ["cpu"] if args.mode == "auto" else [args.mode])
    report: dict[str, Any] = {"steps": args.steps, "warmup": args.warmup, "threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp)
        for mode in modes:
            shape = SHAPES[mode]
            shards, tokenizer = make_corpus(root / mode, shape["docs"], shape["vocab"])
            pairs = []
            for r in range(args.repeats):
                order = ["ours", "hf"] if r % 2 == 0 else ["hf", "ours"]
                res = {side: run_side(side, mode, shards, tokenizer, root / mode, args.steps, args.warmup,
                                      args.threads) for side in order}
                pairs.append(res)
                print(f"[{mode} {r + 1}/{args.repeats}] ours {res['ours']['tokens_per_s']:,.0f} tok/s, "
                      f"HF Trainer {res['hf']['tokens_per_s']:,.0f} tok/s, "
                      f"ratio {res['ours']['tokens_per_s'] / res['hf']['tokens_per_s']:.3f} (per CPU second: "
                      f"{res['ours']['tokens_per_cpu_s'] / res['hf']['tokens_per_cpu_s']:.3f})", flush=True)
            ours = statistics.median(p["ours"]["tokens_per_s"] for p in pairs)
            hf = statistics.median(p["hf"]["tokens_per_s"] for p in pairs)
            ratio = statistics.median(p["ours"]["tokens_per_s"] / p["hf"]["tokens_per_s"] for p in pairs)
            cpu_ratio = statistics.median(p["ours"]["tokens_per_cpu_s"] / p["hf"]["tokens_per_cpu_s"]
                                          for p in pairs)
            entry: dict[str, Any] = {"shape": shape, "ours_tokens_per_s": ours, "hf_tokens_per_s": hf,
                                     "ratio_median": ratio, "cpu_time_ratio_median": cpu_ratio, "runs": pairs}
            if mode == "gpu":
                from modeling.peak_flops import lookup_peak_flops

                peak = lookup_peak_flops(torch.cuda.get_device_name(), "bf16")
                flops_per_token = pairs[0]["ours"]["flops_per_step"] / (shape["batch"] * shape["block"])
                if peak:
                    entry["mfu_ours"] = ours * flops_per_token / peak
                    entry["mfu_hf"] = hf * flops_per_token / peak
                entry["gpu"] = torch.cuda.get_device_name()
            report[mode] = entry
            print(f"{mode}: ours {ours:,.0f} tok/s vs HF Trainer {hf:,.0f} tok/s -> {ratio:.3f}x (median); "
                  f"per CPU second {cpu_ratio:.3f}x"
                  + (f", MFU ours {entry['mfu_ours']:.1%} / HF {entry['mfu_hf']:.1%}" if "mfu_ours" in entry else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
