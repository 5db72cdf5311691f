"""Sample a trained model for error analysis: batched, seeded, several decoding settings, a confidence each.

The seed tutorial's loop (``pipeline("text-generation", model=...)`` over a list of domain prompts, printing
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
import json
import logging
import math
import sys
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from curation.paths import InputError
from modeling.corpus import iter_json_lines, open_text
from modeling.export import ModelLoadError, load_causal_lm, max_positions

log = logging.getLogger("modeling.generate")

REPO = Path(__file__).resolve().parents[1]
#: The prompts file used when ``--prompts`` is not given.
DEFAULT_PROMPTS = REPO / "configs" / "generate" / "prompts.txt"

DeviceName = Literal["auto", "cpu", "cuda"]
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]


class GenerateError(ValueError):
    """Generation cannot run with the given inputs or options. The message names the flag or file to fix."""


# ------------------------------------------------------------------------------------------ loading
def resolve_device(name: str) -> torch.device:
    """``auto`` picks the GPU when there is one; an explicit ``cuda`` without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenerateError(
            f"--device {name}: this machine has no CUDA GPU that torch can use "
            f"(torch {torch.__version__}); use --device cpu or --device auto"
        )
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise GenerateError(f"--device {name!r} is not a device: use cpu, cuda, cuda:N or auto") from err


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is float32 on CPU (bf16 is slow and lossy there), bfloat16 on GPUs that support it."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in ("float32", "bfloat16", "float16"):
        raise GenerateError(f"--dtype {name!r}: use auto, float32, bfloat16 or float16")
    return getattr(torch, name)


def load_model(
    path: str | Path, device: str = "auto", dtype: str = "auto", tokenizer: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Open any saved form (``.ckpt``, HF model dir, PEFT adapter dir) for inference on ``device``/``dtype``.

    A thin layer over :func:`modeling.export.load_causal_lm`, the loader shared with training: it adds the
    ``auto`` device/dtype names and left padding, which batched generation of a decoder-only model needs
    (right padding would put pad tokens between the prompt and the continuation).
    """
    dev = resolve_device(device)
    model, tok = load_causal_lm(path, tokenizer=tokenizer, device=dev, dtype=resolve_dtype(dtype, dev))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # padding is masked out; any id works, eos is always there
    return model, tok


def add_model_arguments(p: argparse.ArgumentParser, log_every: int) -> None:
    """The flags every command that loads a model shares: which model, where it runs, in what dtype."""
    p.add_argument(
        "--model", required=True, help="a Lightning .ckpt, a Hugging Face model dir or a PEFT adapter dir"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights dtype (default auto: float32 on CPU, bfloat16 on a GPU)",
    )
    p.add_argument("--tokenizer", help="tokenizer dir overriding the one saved with the model")
    p.add_argument(
        "--log-every", type=int, default=log_every, help=f"log progress every N batches (default {log_every})"
    )


# ------------------------------------------------------------------------------------ decoding
@dataclass(frozen=True)
class DecodingSetting:
    """One way of picking tokens. Written as ``greedy`` or ``t<temperature>[_p<top_p>][_k<top_k>]``."""

    name: str
    """The setting as written in the output, e.g. ``greedy`` or ``t0.7_p0.95_k50``."""
    do_sample: bool
    """Sample from the (truncated, tempered) distribution; False picks the most likely token (greedy)."""
    temperature: float = 1.0
    """Divides the logits before sampling: below 1 sharpens, above 1 flattens."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probabilities sum to ``top_p``."""
    top_k: int = 0
    """Keep only the ``top_k`` most likely tokens (0: no limit)."""

    @classmethod
    def sampling(cls, temperature: float, top_p: float, top_k: int) -> DecodingSetting:
        """A sampling setting, checked; temperature 0 means greedy (the limit of ever-sharper sampling)."""
        if temperature == 0:
            return cls.greedy()
        if not temperature > 0 or not math.isfinite(temperature):
            raise GenerateError(f"temperature must be > 0 (or 0 for greedy), got {temperature}")
        if not 0 < top_p <= 1:
            raise GenerateError(f"top-p must be in (0, 1], got {top_p}")
        if top_k < 0:
            raise GenerateError(f"top-k must be >= 0 (0 = no limit), got {top_k}")
        return cls(f"t{temperature:g}_p{top_p:g}_k{top_k}", True, temperature, top_p, top_k)

    @classmethod
    def greedy(cls) -> DecodingSetting:
        return cls("greedy", False)

    @classmethod
    def parse(cls, spec: str, top_p: float = 0.95, top_k: int = 50) -> DecodingSetting:
        """``greedy`` | ``t0.7`` | ``t0.7_p0.9`` | ``t1.0_k40``; missing parts come from top_p/top_k."""
        spec = spec.strip()
        if spec == "greedy":
            return cls.greedy()
        values: dict[str, str] = {}
        for part in spec.split("_"):
            if len(part) < 2 or part[0] not in "tpk" or part[0] in values:
                raise GenerateError(
                    f"--settings: cannot read {spec!r}. Write greedy, or t<temperature> optionally followed "
                    f"by _p<top_p> and _k<top_k>, e.g. greedy,t0.7,t1.0_p0.9_k40"
                )
            values[part[0]] = part[1:]
        if "t" not in values:
            raise GenerateError(f"--settings: {spec!r} has no temperature; write e.g. t0.8_p0.9")
        try:
            return cls.sampling(
                float(values["t"]), float(values.get("p", top_p)), int(values.get("k", top_k))
            )
        except ValueError as err:
            if isinstance(err, GenerateError):
                raise GenerateError(f"--settings {spec!r}: {err}") from err
            raise GenerateError(f"--settings: cannot read the numbers in {spec!r} ({err})") from err

    def generate_kwargs(self) -> dict[str, Any]:
        """``model.generate`` arguments, every knob explicit: the model's generation_config cannot add one."""
        if not self.do_sample:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}


@dataclass(frozen=True)
class Sample:
    """One generated continuation and how sure the model was of it."""

    prompt: str
    setting: str
    sample: int
    """Index among the ``num_return_sequences`` samples of this prompt and setting."""
    output: str
    """The continuation alone (prompt not repeated), special tokens removed."""
    num_tokens: int
    """Tokens the model generated, the final eos included."""
    mean_logprob: float
    """Mean natural-log probability of the generated tokens under the model's own distribution (before
    temperature, top-p and top-k), so samples from different settings compare."""
    finish: Literal["eos", "length"]
    """``eos``: the model ended the text; ``length``: it hit ``max_new_tokens``."""


def generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    setting: DecodingSetting,
    max_new_tokens: int,
    num_return_sequences: int = 1,
) -> list[Sample]:
    """Generate for a batch of prompts (left padded); returns ``len(prompts) * n`` samples, prompt-major.

    Greedy decoding is deterministic, so it gives one sample per prompt whatever ``num_return_sequences``.
    """
    n = num_return_sequences if setting.do_sample else 1
    device = next(model.parameters()).device
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True).to(device)
    _check_lengths(model, tokenizer, prompts, enc["attention_mask"].sum(1).tolist(), max_new_tokens)
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            return_dict_in_generate=True,
            output_logits=True,
            pad_token_id=tokenizer.pad_token_id,
            **setting.generate_kwargs(),
        )
        # Raw logits (not the warped scores), in float32: the model's own log-probs, whatever the setting.
        logprobs = model.compute_transition_scores(
            out.sequences, tuple(x.float() for x in out.logits), normalize_logits=True
        )
    width = enc["input_ids"].shape[1]
    new = out.sequences[:, width:].tolist()
    prompt_ids = [
        ids[mask.bool()].tolist()
        for ids, mask in zip(enc["input_ids"].cpu(), enc["attention_mask"].cpu(), strict=True)
    ]
    logprobs = logprobs.cpu().tolist()
    samples = []
    for row, (ids, lps) in enumerate(zip(new, logprobs, strict=True)):
        # Rows that finished early are padded to the longest; count up to and including the first eos.
        stop = next((i for i, t in enumerate(ids) if t in eos_ids), None)
        length = len(ids) if stop is None else stop + 1
        scored = lps[:length]
        samples.append(
            Sample(
                prompt=prompts[row // n],
                setting=setting.name,
                sample=row % n,
                output=continuation_text(tokenizer, prompt_ids[row // n], ids[:length]),
                num_tokens=length,
                mean_logprob=sum(scored) / len(scored) if scored else 0.0,
                finish="eos" if stop is not None else "length",
            )
        )
    return samples


def continuation_text(tokenizer: PreTrainedTokenizerBase, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The text the new tokens add to the prompt, as ``pipeline("text-generation")`` computes it.

    Decoding the new tokens alone loses the space before the first word for SentencePiece-style decoders,
    which strip a leading space; decoding prompt + continuation and removing the decoded prompt keeps it.
    """
    prefix = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    full = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    if full.startswith(prefix):
        return full[len(prefix) :]
    return tokenizer.decode(new_ids, skip_special_tokens=True)  # a normalizing decoder rewrote the prompt


def _check_lengths(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    lengths: list[int],
    max_new_tokens: int,
) -> None:
    for prompt, length in zip(prompts, lengths, strict=True):
        if length == 0:
            raise GenerateError(f"prompt {prompt!r} is empty after tokenization: give it some text")
    limit = max_positions(model)
    longest = max(lengths)
    if limit is not None and longest + max_new_tokens > limit:
        worst = prompts[lengths.index(longest)]
        raise GenerateError(
            f"prompt {worst[:60]!r}... has {longest} tokens; with --max-new-tokens {max_new_tokens} that is "
            f"{longest + max_new_tokens} positions, more than the model's {limit}. Lower --max-new-tokens or "
            "shorten the prompt."
        )


def derive_seed(seed: int, *parts: object) -> int:
    """A stable seed per (setting, batch): adding or dropping a setting leaves the others' samples alone."""
    return zlib.crc32(json.dumps([seed, *map(str, parts)]).encode())


def iter_batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive groups of at most ``size`` items; an iterator is consumed lazily, never materialised."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


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


# ------------------------------------------------------------------------------------------ files
def read_prompts(path: str | Path, field: str = "prompt") -> list[str]:
    """Prompts from ``.txt`` (one a line, blank lines skipped) or ``.jsonl`` (``field`` of each row)."""
    p = Path(path)
    if not p.is_file():
        raise GenerateError(
            f"--prompts {str(path)!r}: no such file. Give a .txt file (one prompt per line) or a "
            f".jsonl file with a {field!r} field; {DEFAULT_PROMPTS.relative_to(REPO)} is an example"
        )
    name = p.name.lower().removesuffix(".gz")
    prompts: list[str] = []
    if name.endswith(".txt"):
        with open_text(p) as fh:
            prompts = [line.rstrip("\r\n") for line in fh if line.strip()]
    elif name.endswith((".jsonl", ".json")):
        for n, row in iter_json_lines(p, GenerateError):
            value = row.get(field) if isinstance(row, dict) else None
            if not isinstance(value, str) or not value:
                keys = list(row) if isinstance(row, dict) else type(row).__name__
                raise GenerateError(
                    f"{p}:{n}: no non-empty string field {field!r} (the row has {keys}); "
                    "pass the right one with --prompt-field"
                )
            prompts.append(value)
    else:
        raise GenerateError(f"--prompts {p}: unknown file type; use .txt (one prompt per line) or .jsonl")
    if not prompts:
        raise GenerateError(f"--prompts {p} holds no prompts")
    return prompts


def write_jsonl(samples: Sequence[Sample], path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for s in samples:
            fh.write(json.dumps(asdict(s), ensure_ascii=False) + "\n")
    return out


def _fence(text: str) -> str:
    """A code fence longer than any backtick run in ``text``, so model output cannot break out of it."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def render_report(samples: Sequence[Sample], title: str, header: Sequence[str] = ()) -> str:
    """Markdown for a person to skim: a per-setting summary, then every sample, least confident first."""
    lines = [
        f"# Samples: {title}",
        "",
        *header,
        "",
        "Sorted by the mean log-probability of the generated tokens, lowest first: the samples the model was "
        "least sure of, where errors cluster, come first. Log-probabilities are the model's own (before "
        "temperature, top-p and top-k), so settings compare.",
        "",
        "| setting | samples | mean log-prob | mean tokens | ended with eos |",
        "|---|---:|---:|---:|---:|",
    ]
    by_setting: dict[str, list[Sample]] = {}
    for s in samples:
        by_setting.setdefault(s.setting, []).append(s)
    for name, group in by_setting.items():
        lines.append(
            f"| {name} | {len(group)} | {sum(s.mean_logprob for s in group) / len(group):.3f} | "
            f"{sum(s.num_tokens for s in group) / len(group):.1f} | "
            f"{sum(s.finish == 'eos' for s in group)}/{len(group)} |"
        )
    ranked = sorted(samples, key=lambda s: (s.mean_logprob, s.setting, s.prompt, s.sample))
    for rank, s in enumerate(ranked, 1):
        fence = _fence(s.output)
        lines += [
            "",
            f"## {rank}. {s.mean_logprob:.3f} · {s.setting} #{s.sample} · {s.num_tokens} tokens · "
            f"ended by {s.finish}",
            "",
            *(f"> {line}" for line in s.prompt.splitlines()),
            "",
            fence + "text",
            s.output,
            fence,
        ]
    return "\n".join(lines) + "\n"


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
    try:
        generate(config_from_args(args))
    except (GenerateError, ModelLoadError, InputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
