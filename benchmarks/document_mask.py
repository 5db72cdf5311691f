"""Step time of ``--model.document_mask true`` against plain causal attention over the same packed blocks.

Each variant trains the same from-scratch model (same weights, same batches of documents joined by eos, document
lengths drawn from a geometric distribution) through ``CausalLMModule._shared_step``, backward and a fused AdamW
step, in this one process with one torch thread; variants are interleaved over ``--repeats`` so a burst of other
work on a shared machine hits them alike. Reported: the median wall time of the timed steps, the process CPU
seconds per step, and the on/off ratio of both. On CPU the masked path is eager's additive 4D mask or SDPA's bool
mask (``modeling.document_mask``); the flash-attention path (no mask, variable-length kernel) needs a CUDA GPU.

Two shapes by default: 4 x 512 tokens at vocabulary 8,192 (the head and MLPs dominate) and 1 x 2,048 tokens at
vocabulary 2,048 (attention a larger share); ``--shapes`` to change them.

Usage (from the repository root, with the project's venv):
    python benchmarks/document_mask.py
    python benchmarks/document_mask.py --write-md docs/_sections/bench-document-mask.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.docs_section import section_opening  # noqa: E402
from modeling.module import CausalLMModule, ScratchModelConfig  # noqa: E402

EOS = 0


@dataclass(frozen=True)
class Shape:
    """One measured shape: ``BATCHxBLOCK:VOCAB:MEAN_DOC`` on the command line."""

    batch: int
    block: int
    vocab: int
    mean_doc: int

    @classmethod
    def parse(cls, text: str) -> Shape:
        size, vocab, mean_doc = text.split(":")
        batch, block = size.split("x")
        return cls(int(batch), int(block), int(vocab), int(mean_doc))


def packed_batches(n: int, batch: int, block: int, vocab: int, mean_doc: int, seed: int) -> list[torch.Tensor]:
    """Blocks of documents joined by eos, as the packer writes them; lengths ~ geometric with mean ``mean_doc``."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, batch, block), generator=gen)
    ends = torch.rand((n, batch, block), generator=gen) < 1.0 / mean_doc
    return list(ids.masked_fill(ends, EOS))


def time_steps(arch: str, attn: str, document_mask: bool, batches: list[torch.Tensor], warmup: int,
               shape: Shape, args: argparse.Namespace) -> tuple[list[float], list[float], float]:
    torch.manual_seed(0)
    module = CausalLMModule(
        scratch=ScratchModelConfig(arch=arch, max_position_embeddings=shape.block, hidden_size=args.width,
                                   num_layers=args.layers, num_heads=args.heads),
        vocab_size=shape.vocab, attn_implementation=attn, document_mask=document_mask, eos_token_id=EOS)
    module.configure_model()
    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3, fused=True)
    walls, cpus, loss = [], [], float("nan")
    for i, ids in enumerate(batches):
        w0, c0 = time.perf_counter(), time.process_time()
        loss_t = module._shared_step({"input_ids": ids}, "train")
        loss_t.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        loss = loss_t.item()
    return walls, cpus, loss


def measure(shape: Shape, args: argparse.Namespace) -> tuple[str, str]:
    """The table of one shape, and its setup sentence."""
    batches = packed_batches(args.steps, shape.batch, shape.block, shape.vocab, shape.mean_doc, seed=0)
    variants = [(arch, attn, on) for arch in ("gpt2", "llama") for attn in ("eager", "sdpa") for on in (False, True)]
    results = {v: {"wall": [], "cpu": [], "loss": []} for v in variants}
    for _ in range(args.repeats):
        for v in variants:
            walls, cpus, loss = time_steps(*v, batches, args.warmup, shape, args)
            results[v]["wall"] += walls
            results[v]["cpu"] += cpus
            results[v]["loss"].append(loss)
            print(f"{shape} {v}: {statistics.median(walls):.3f} s wall, {statistics.median(cpus):.3f} CPU s",
                  flush=True)
    docs_per_block = float((torch.stack(batches) == EOS).sum(-1).float().mean() + 1)
    lines = [
        "| model | attention | document_mask | step (s, median) | CPU s per step | on/off (CPU s) | last loss |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for arch, attn, on in variants:
        r = results[(arch, attn, on)]
        cpu = statistics.median(r["cpu"])
        off_cpu = statistics.median(results[(arch, attn, False)]["cpu"])
        ratio = f"{cpu / off_cpu:.2f}x" if on else ""
        lines.append(f"| {arch} | {attn} | {'on' if on else 'off'} | {statistics.median(r['wall']):.3f} | "
                     f"{cpu:.3f} | {ratio} | {r['loss'][-1]:.4f} |")
    setup = (f"Batch {shape.batch} x {shape.block} tokens, vocabulary {shape.vocab:,}, packed random documents of "
             f"mean length {shape.mean_doc} ({docs_per_block:.1f} documents a block):")
    return "\n".join(lines), setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", type=Shape.parse, default=[Shape(4, 512, 8192, 128),
                                                                          Shape(1, 2048, 2048, 256)],
                        help="BATCHxBLOCK:VOCAB:MEAN_DOC, e.g. 4x512:8192:128")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write-md", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    tables = [measure(shape, args) for shape in args.shapes]
    for table, setup in tables:
        print(setup, table, sep="\n")
    if args.write_md is not None:
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        command = "python benchmarks/document_mask.py " + " ".join(sys.argv[1:])
        md = [
            *section_opening("Document-aware packing: step time of the document mask", now, command),
            f"on CPU only, {os.cpu_count()} CPU cores, Python {platform.python_version()}, torch {torch.__version__}, "
            f"1 torch thread; 1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after.",
            "",
            f"Setup: from-scratch GPT-2 and Llama ({args.layers} layers x {args.width} wide, {args.heads} heads), "
            f"32-true, fused AdamW, {args.steps} steps of which the first {args.warmup} are not timed, "
            f"{args.repeats} interleaved repeat(s), medians. `on` is `--model.document_mask true`: on CPU an "
            "explicit block-diagonal causal mask (additive for eager, bool for SDPA) and restarting position ids; "
            "`off` plain causal attention over the same blocks. The losses differ by design (no token sees the "
            "previous document; a document's first token is not a target).",
            "",
        ]
        for table, setup in tables:
            md += [setup, "", table, ""]
        md += ["No GPU took part: the flash-attention path (position ids, variable-length kernel, no mask) is not "
               "measured here.", ""]
        args.write_md.parent.mkdir(parents=True, exist_ok=True)
        args.write_md.write_text("\n".join(md))


if __name__ == "__main__":
    main()
