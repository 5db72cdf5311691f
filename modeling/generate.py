"""Sample a trained model for error analysis: batched, seeded, several decoding settings, a confidence each.

The usual loop (``pipeline("text-generation", model=...)`` over a list of domain prompts, printing
each output) done so that a person can review it: every prompt is run under every decoding setting, each
sample records how many tokens the model wrote and their mean log-probability, and the report lists the least
confident samples first, which is where the errors are.

Usage::

    # the shipped domain prompts, one sampling setting (temperature 0.8, top-p 0.95, top-k 50)
    python -m modeling.generate --model runs/tiny-cpu/version_0/hf --prompts configs/generate/prompts.txt
    # the shipped config: greedy and two temperatures, three samples each
    python -m modeling.generate --config configs/generate/review.yaml --model runs/tiny-cpu/version_0/hf
    # from a Lightning checkpoint, on a GPU in bfloat16
    python -m modeling.generate --model runs/tiny-cpu/version_0/checkpoints/last.ckpt \\
        --settings greedy,t0.7,t1.0_p0.9 --num_return_sequences 3 --device cuda --dtype bfloat16 \\
        --output out/samples.jsonl
    # a LoRA adapter directory (its base model is found through adapter_config.json)
    python -m modeling.generate --model runs/lora/version_0/hf --prompts prompts.jsonl

Every key of the YAML config is a flag; ``--print_config`` prints the resolved config. Writes ``--output``
(JSONL, one row per sample) and, next to it, a Markdown report (``samples.md`` for ``samples.jsonl``). The same model, prompts, seed, batch size and device give the same samples.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

# The command alone lives here (the docstring above is its --help): the inference it shares with modeling.evaluate
# is modeling.inference, its files (prompts in, samples and report out) modeling.samples.
from common.cli import Command, run_command
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


@dataclass(frozen=True)
class GenerateConfig:
    """Everything one ``python -m modeling.generate`` run needs: the YAML keys and the flags."""

    model: str
    """A Lightning ``.ckpt``, a Hugging Face model directory or a PEFT adapter directory."""
    prompts: str = str(DEFAULT_PROMPTS)
    """``.txt`` file (one prompt per line) or ``.jsonl`` (the ``prompt_field`` of each row)."""
    prompt_field: str = "prompt"
    """Field holding the prompt in a ``.jsonl`` prompts file."""
    settings: tuple[str, ...] = ()
    """Decoding settings, each applied to every prompt: ``greedy`` or ``t<temp>[_p<top_p>][_k<top_k>]``, e.g.
    ``[greedy, t0.7, t1.0_p0.9]``. Empty: one sampling setting from ``temperature``, ``top_p``, ``top_k``."""
    temperature: float = 0.8
    """Sampling temperature of the default setting (0 = greedy)."""
    top_p: float = 0.95
    """Nucleus sampling mass: of the default setting, and of ``settings`` entries that give none."""
    top_k: int = 50
    """Sample among the k most likely tokens (0 = all): of the default setting, and of ``settings`` entries
    that give none."""
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

    def decoding_settings(self) -> tuple[DecodingSetting, ...]:
        """The settings as :class:`DecodingSetting` objects (a typo is a :class:`GenerateError` naming it)."""
        if self.settings:
            return tuple(DecodingSetting.parse(s, self.top_p, self.top_k) for s in self.settings)
        try:
            return (DecodingSetting.sampling(self.temperature, self.top_p, self.top_k),)
        except GenerateError as err:
            raise GenerateError(f"--temperature/--top_p/--top_k: {err}") from err


COMMAND = Command(prog="python -m modeling.generate", description=__doc__, config=GenerateConfig)
"""Every field of :class:`GenerateConfig` is a flag and a YAML key."""


def generate(cfg: GenerateConfig) -> list[Sample]:
    """Load, generate, write the JSONL and the Markdown report; returns the samples."""
    settings = cfg.decoding_settings()  # a typo fails before the model loads
    prompts = read_prompts(cfg.prompts, cfg.prompt_field)
    model, tokenizer = load_model(cfg.model, cfg.device, cfg.dtype, cfg.tokenizer)
    device = next(model.parameters()).device
    log.info("%d prompts x %d settings on %s (%s)", len(prompts), len(settings), device, model.dtype)
    samples = run_generation(
        model,
        tokenizer,
        prompts,
        settings,
        cfg.max_new_tokens,
        cfg.num_return_sequences,
        cfg.batch_size,
        cfg.seed,
        cfg.log_every,
    )
    out = write_jsonl(samples, cfg.output)
    names = ", ".join(s.name for s in settings)
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

    def run(cfg: GenerateConfig, _: object) -> None:
        generate(cfg)

    return run_command(COMMAND, argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
