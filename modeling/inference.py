"""Inference on a trained model, for every command that runs one (``modeling.evaluate``, ``modeling.generate``):
opening any saved form on a device in a dtype, decoding settings, generating a batch with each sample's
confidence, and the batching and seeding that make runs repeatable.

Model loading is :func:`modeling.export.load_causal_lm` (the loader shared with training) plus what inference
needs on top: the ``auto`` device and dtype, and left padding for batched generation.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from common.errors import UserError
from modeling.export import load_causal_lm, max_positions

DeviceName = Literal["auto", "cpu", "cuda"]
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]


class GenerateError(UserError):
    """Inference or generation cannot run with the given inputs or options (the name is the generate command's,
    whose error it was first). The message names the flag or file to fix."""


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

