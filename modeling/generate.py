"""Sample a trained model for error analysis: batched, seeded, several decoding settings, a confidence each.

The usual loop (``pipeline("text-generation", model=...)`` over a list of domain prompts, printing
each output) done so that a person can review it: every prompt is run under every decoding setting, each
sample records how many tokens the model wrote and their mean log-probability, and the report lists the least
confident samples first, which is where the errors are.

Usage::

    # the shipped domain prompts, one sampling setting (temperature 0.8, top-p 0.95, top-k 50)
    python -m modeling.generate --model runs/tiny-cpu/version_0/hf --prompts configs/generate/prompts.txt
    # greedy and two temperatures in one run, from a Lightning checkpoint, on a GPU in bfloat16
    python -m modeling.generate --model runs/tiny-cpu/version_0/checkpoints/last.ckpt \
        --prompts configs/generate/prompts.txt --settings greedy,t0.7,t1.0_p0.9 --num-return-sequences 3 \
        --device cuda --dtype bfloat16 --output out/samples.jsonl
    # a LoRA adapter directory (its base model is found through adapter_config.json)
    python -m modeling.generate --model runs/lora/version_0/hf --prompts prompts.jsonl

Writes ``--output`` (JSONL, one row per sample) and, next to it, a Markdown report (``samples.md`` for
``samples.jsonl``). The same model, prompts, seed, batch size and device give the same samples.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

# The command alone lives here (the docstring above is its --help): the inference it shares with modeling.evaluate
# is modeling.inference, its files (prompts in, samples and report out) modeling.samples.
from common.errors import run_main
from modeling.cli_args import add_model_arguments
from modeling.inference import (
    DecodingSetting,
    GenerateError,
    Sample,
    derive_seed,
    generate_batch,
    iter_batches,
    load_model,
)
from modeling.samples import DEFAULT_PROMPTS, read_prompts, render_report, write_jsonl

log = logging.getLogger("modeling.generate")


def run_generation(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    settings: Sequence[DecodingSetting],
    max_new_tokens: int = 50,
    num_return_sequences: int = 1,
    batch_size: int = 8,
    seed: int = 0,
    log_every: int = 10,
) -> list[Sample]:
    """Every prompt under every setting, in batches; torch's RNG is re-seeded per (seed, setting, batch)."""
    if batch_size < 1 or max_new_tokens < 1 or num_return_sequences < 1:
        raise GenerateError(
            "--batch-size, --max-new-tokens and --num-return-sequences must be at least 1; got "
            f"{batch_size}, {max_new_tokens} and {num_return_sequences}"
        )
    samples: list[Sample] = []
    batches = list(iter_batches(prompts, batch_size))
    for setting in settings:
        start, tokens = time.perf_counter(), 0
        for b, batch in enumerate(batches):
            torch.manual_seed(derive_seed(seed, setting.name, b))
            out = generate_batch(model, tokenizer, batch, setting, max_new_tokens, num_return_sequences)
            samples.extend(out)
            tokens += sum(s.num_tokens for s in out)
            if (b + 1) % log_every == 0 or b + 1 == len(batches):
                rate = tokens / max(time.perf_counter() - start, 1e-9)
                log.info(
                    "%s: %d/%d batches, %d tokens, %.1f tokens/s",
                    setting.name,
                    b + 1,
                    len(batches),
                    tokens,
                    rate,
                )
    return samples


# ---------------------------------------------------------------------------------------------- CLI
@dataclass(frozen=True)
class GenerateConfig:
    """Everything one ``python -m modeling.generate`` run needs; the flags map one to one."""

    model: str
    """A Lightning ``.ckpt``, a Hugging Face model directory or a PEFT adapter directory."""
    prompts: str = str(DEFAULT_PROMPTS)
    """``.txt`` file (one prompt per line) or ``.jsonl`` (the ``prompt_field`` of each row)."""
    prompt_field: str = "prompt"
    """Field holding the prompt in a ``.jsonl`` prompts file."""
    settings: tuple[DecodingSetting, ...] = field(
        default_factory=lambda: (DecodingSetting.sampling(0.8, 0.95, 50),)
    )
    """Decoding settings, each applied to every prompt."""
    max_new_tokens: int = 50
    """Most tokens generated per sample."""
    num_return_sequences: int = 1
    """Samples per prompt and sampling setting (greedy always gives one)."""
    seed: int = 0
    """Seed of the sampling; with the same prompts, batch size and device the samples repeat exactly."""
    batch_size: int = 8
    """Prompts per ``generate`` call."""
    output: str = "samples.jsonl"
    """JSONL with one row per sample; the Markdown report goes next to it with the ``.md`` suffix."""
    device: str = "auto"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (the GPU when there is one)."""
    dtype: str = "auto"
    """Weights dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (float32 on CPU, bf16 on a GPU)."""
    tokenizer: str | None = None
    """Tokenizer directory overriding the one saved with the model (or recorded in the checkpoint)."""
    log_every: int = 10
    """Log progress every this many batches."""


def parser() -> argparse.ArgumentParser:
    d = GenerateConfig(model="")
    p = argparse.ArgumentParser(
        prog="python -m modeling.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--prompts", default=d.prompts, help=".txt (one prompt per line) or .jsonl (default: %(default)s)"
    )
    p.add_argument(
        "--prompt-field", default=d.prompt_field, help="prompt field of a .jsonl file (default: prompt)"
    )
    p.add_argument(
        "--settings",
        help="comma-separated decoding settings: greedy, t<temp>[_p<top_p>][_k<top_k>], "
        "e.g. greedy,t0.7,t1.0_p0.9 (default: one from --temperature/--top-p/--top-k)",
    )
    p.add_argument(
        "--temperature", type=float, default=0.8, help="sampling temperature; 0 = greedy (default 0.8)"
    )
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95)")
    p.add_argument(
        "--top-k", type=int, default=50, help="sample among the k most likely tokens; 0 = all (default 50)"
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=d.max_new_tokens, help="tokens per sample (default 50)"
    )
    p.add_argument(
        "--num-return-sequences",
        type=int,
        default=d.num_return_sequences,
        help="samples per prompt and sampling setting (default 1)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="sampling seed (default 0)")
    p.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="prompts per generate call (default 8)"
    )
    p.add_argument("--output", default=d.output, help="JSONL output; the report is written next to it as .md")
    add_model_arguments(p, d.log_every)
    return p


def config_from_args(a: argparse.Namespace) -> GenerateConfig:
    if a.settings:
        settings = tuple(
            DecodingSetting.parse(s, a.top_p, a.top_k) for s in a.settings.split(",") if s.strip()
        )
    else:
        try:
            settings = (DecodingSetting.sampling(a.temperature, a.top_p, a.top_k),)
        except GenerateError as err:
            raise GenerateError(f"--temperature/--top-p/--top-k: {err}") from err
    return GenerateConfig(
        model=a.model,
        prompts=a.prompts,
        prompt_field=a.prompt_field,
        settings=settings,
        max_new_tokens=a.max_new_tokens,
        num_return_sequences=a.num_return_sequences,
        seed=a.seed,
        batch_size=a.batch_size,
        output=a.output,
        device=a.device,
        dtype=a.dtype,
        tokenizer=a.tokenizer,
        log_every=a.log_every,
    )


def generate(cfg: GenerateConfig) -> list[Sample]:
    """Load, generate, write the JSONL and the Markdown report; returns the samples."""
    prompts = read_prompts(cfg.prompts, cfg.prompt_field)
    model, tokenizer = load_model(cfg.model, cfg.device, cfg.dtype, cfg.tokenizer)
    device = next(model.parameters()).device
    log.info("%d prompts x %d settings on %s (%s)", len(prompts), len(cfg.settings), device, model.dtype)
    samples = run_generation(
        model,
        tokenizer,
        prompts,
        cfg.settings,
        cfg.max_new_tokens,
        cfg.num_return_sequences,
        cfg.batch_size,
        cfg.seed,
        cfg.log_every,
    )
    out = write_jsonl(samples, cfg.output)
    names = ", ".join(s.name for s in cfg.settings)
    header = [
        f"{len(samples)} samples of {len(prompts)} prompts · settings {names}"
        f" · seed {cfg.seed} · at most {cfg.max_new_tokens} new tokens · {device.type}, "
        f"{str(model.dtype).removeprefix('torch.')}"
    ]
    report = out.with_suffix(".md")
    report.write_text(render_report(samples, str(cfg.model), header), encoding="utf-8")
    log.info("wrote %s and %s", out, report)
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a usage error, with the message on stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parser().parse_args(argv)

    def run() -> None:
        generate(config_from_args(args))

    return run_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
