"""Hugging Face exports of trained models, LoRA merging, and one loader for every saved form.

Three forms leave training, and :func:`load_causal_lm` opens each of them (evaluation and generation reuse it):

- a Lightning checkpoint ``*.ckpt`` (resumable; for LoRA runs it holds only the adapter weights),
- a Hugging Face model directory (``config.json`` + weights + tokenizer), written by :func:`export_hf`,
- a PEFT adapter directory (``adapter_config.json`` + adapter weights + tokenizer), also by :func:`export_hf`.

Merge an adapter into its base for plain ``transformers`` inference::

    python -c "from modeling.export import merge_lora; merge_lora('runs/lora/hf', 'runs/lora/merged')"

What an export directory holds besides ``save_pretrained``'s files, and why:

- the tokenizer's ``model_max_length`` is the model's context (``n_positions`` / ``max_position_embeddings``),
  what ``transformers`` users expect it to mean;
- ``training.json`` records how the weights were trained: ``block_size``, the length of the blocks training
  packed (``data.block_size``), and ``document_mask`` (``--model.document_mask``); ``modeling.evaluate`` scores
  perplexity on blocks of that length, with that mask, by default;
- every directory loads with transformers 4.56 and later as well as 5.x (pyproject allows both). transformers 5
  writes a few things 4.x cannot read, which :func:`make_portable` rewrites into forms both read: the tokenizer
  class ``TokenizersBackend`` (4.x: "does not exist"; written as ``PreTrainedTokenizerFast``, which 5.x loads
  as the same class), a list-valued ``extra_special_tokens`` (4.x: a crash; written as
  ``additional_special_tokens``), and RoPE settings kept only inside ``rope_parameters`` (4.x silently falls
  back to ``rope_theta`` 10000 and no scaling: other logits, no error; the top-level ``rope_theta`` /
  ``rope_scaling`` / ``partial_rotary_factor`` of 4.x are written as well: the keys of Llama, Mistral, Qwen and
  most RoPE models in 4.x). Per-layer-type RoPE settings (Gemma 3) and 4.x names of other architectures
  (GPT-NeoX's ``rotary_emb_base``) are left as transformers 5 writes them: fine-tuning such a base, load the
  export with transformers 5.
  ``tests/modeling/test_export.py`` loads each form with transformers 4.56.0, 4.57.6 and the installed 5.x.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from common.errors import UserError
from modeling.data import HFDatasetConfig
from modeling.model_config import LoraConfig, QuantizationConfig, ScratchModelConfig
from modeling.module import CausalLMModule
from modeling.tokenizer.load import load_tokenizer

#: Classes our checkpoints' hyperparameters hold besides tensors and builtins; allowed in weights-only loading.
#: The model configs lived in ``modeling.module`` before ``modeling.model_config``: checkpoints written then
#: name them there, so that name is allowed too.
CHECKPOINT_CLASSES: list[Any] = [
    ScratchModelConfig, LoraConfig, QuantizationConfig, HFDatasetConfig,
    *((cls, f"modeling.module.{cls.__name__}") for cls in (ScratchModelConfig, LoraConfig, QuantizationConfig)),
]


#: Written beside an export's weights: how they were trained (``{"block_size": 512, "document_mask": false}``).
TRAINING_FILE = "training.json"


class ModelLoadError(UserError):
    """A model path is none of the forms this project writes. The message says what was found."""


def max_positions(model: PreTrainedModel) -> int | None:
    """Longest sequence the model can attend over, or None when its config does not say."""
    cfg = model.config
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def trained_block_size(path: str | Path) -> int | None:
    """The training block size an export directory records in ``training.json``, or None."""
    record = _training_record(path)
    value = record.get("block_size") if record is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def trained_document_mask(path: str | Path) -> bool | None:
    """Whether the run that trained an export used ``--model.document_mask``, as its ``training.json`` records.

    None: the directory has no ``training.json`` (not our export, or one from before it). False also for a
    ``training.json`` without the key: exports written before the key was recorded.
    """
    record = _training_record(path)
    if record is None:
        return None
    value = record.get("document_mask", False)
    if not isinstance(value, bool):
        raise ModelLoadError(f"{Path(path) / TRAINING_FILE} has document_mask {value!r}, not true or false: fix "
                             "or delete it, or pass --document-mask true|false to say how the model was trained")
    return value


def _training_record(path: str | Path) -> dict[str, Any] | None:
    record = Path(path).expanduser() / TRAINING_FILE
    if not record.is_file():
        return None
    try:
        value = json.loads(record.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{record} is not a JSON object with a block_size ({err}): fix or delete it") from err
    if not isinstance(value, dict):
        raise ModelLoadError(f"{record} is not a JSON object with a block_size: fix or delete it")
    return value


def apply_special_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Copy bos/eos/pad ids from the tokenizer into the model and generation configs.

    A from-scratch config knows no special tokens; without them ``generate`` never stops at eos and
    ``pipeline("text-generation")`` warns about a missing pad token.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is None:
            continue
        cfg.bos_token_id = tokenizer.bos_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.pad_token_id = pad


def export_hf(module: CausalLMModule, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path,
              block_size: int | None = None) -> Path:
    """Write ``module``'s model in Hugging Face format with its tokenizer: full weights, or the adapter alone.

    A LoRA model is written as a PEFT adapter whose ``base_model_name_or_path`` points at the absolute base
    path, so ``AutoPeftModelForCausalLM.from_pretrained(out_dir)`` finds the base from anywhere. The saved
    tokenizer's ``model_max_length`` is the model's context; ``training.json`` records the module's
    ``document_mask`` and ``block_size`` (the training block length) when given. The directory loads with transformers 4.56+ and 5.x (see the module notes).
    """
    assert module.model is not None, "the module has no model yet: call configure_model()"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = module.model
    if module.lora is not None:
        base = module.pretrained
        if base is not None and Path(base).expanduser().exists():
            base = str(Path(base).expanduser().resolve())
        model.peft_config["default"].base_model_name_or_path = base
        model.save_pretrained(out)
    else:
        apply_special_tokens(model, tokenizer)
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    make_portable(out, model_max_length=max_positions(model))
    # an older export's record must not outlive its weights: always rewritten, block_size only when known.
    # document_mask tells modeling.evaluate to score as training did (each document on its own).
    record: dict[str, Any] = {"block_size": int(block_size)} if block_size is not None else {}
    _write_json(out / TRAINING_FILE, {**record, "document_mask": bool(module.document_mask)})
    return out


def merge_lora(adapter_dir: str | Path, out_dir: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Fold a PEFT adapter into its base weights and save a plain Hugging Face model (+ tokenizer).

    The adapter's ``training.json`` (its training block size and document mask) is carried over: the merged weights are the
    same model.
    """
    from peft import AutoPeftModelForCausalLM

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise ModelLoadError(f"{adapter_dir} holds no adapter_config.json: not a PEFT adapter directory")
    model = AutoPeftModelForCausalLM.from_pretrained(adapter_dir, dtype=dtype or torch.float32)
    merged = model.merge_and_unload()
    tokenizer = load_tokenizer(adapter_dir, named="the adapter's tokenizer", error=ModelLoadError, require_eos=False)
    apply_special_tokens(merged, tokenizer)
    out = Path(out_dir)
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    make_portable(out, model_max_length=max_positions(merged))
    (out / TRAINING_FILE).unlink(missing_ok=True)
    if (adapter_dir / TRAINING_FILE).is_file():
        (out / TRAINING_FILE).write_bytes((adapter_dir / TRAINING_FILE).read_bytes())
    return out


def make_portable(out_dir: str | Path, model_max_length: int | None = None) -> None:
    """Rewrite what transformers 5's ``save_pretrained`` put in ``out_dir`` into forms 4.56+ reads too.

    ``tokenizer_config.json``: the class ``TokenizersBackend`` becomes ``PreTrainedTokenizerFast`` and a list of
    ``extra_special_tokens`` becomes ``additional_special_tokens`` (both majors read these); ``model_max_length``
    is set when given. ``config.json``: a flat ``rope_parameters`` is also written as 4.x's top-level
    ``rope_theta``, ``partial_rotary_factor`` and (for a scaled RoPE) ``rope_scaling``, with the same values, so
    transformers 5 reads the same model whichever it takes. Files that are absent are left alone.
    """
    out = Path(out_dir)
    tok_path = out / "tokenizer_config.json"
    if tok_path.is_file():
        tok = json.loads(tok_path.read_text(encoding="utf-8"))
        if tok.get("tokenizer_class") == "TokenizersBackend":
            tok["tokenizer_class"] = "PreTrainedTokenizerFast"
        extra = tok.get("extra_special_tokens")
        if isinstance(extra, list):
            del tok["extra_special_tokens"]
            known = list(tok.get("additional_special_tokens") or [])
            tok["additional_special_tokens"] = known + [t for t in extra if t not in known]
        if model_max_length is not None:
            tok["model_max_length"] = int(model_max_length)
        _write_json(tok_path, tok)
    cfg_path = out / "config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        _add_v4_rope_keys(cfg)
        _write_json(cfg_path, cfg)


def _add_v4_rope_keys(cfg: dict[str, Any]) -> None:
    rope = cfg.get("rope_parameters")
    if not isinstance(rope, dict) or not isinstance(rope.get("rope_theta"), int | float):
        return  # no RoPE, or one dict per layer type (no single 4.x spelling)
    cfg.setdefault("rope_theta", rope["rope_theta"])
    if "partial_rotary_factor" in rope:
        cfg.setdefault("partial_rotary_factor", rope["partial_rotary_factor"])
    if rope.get("rope_type", "default") != "default" and not cfg.get("rope_scaling"):
        cfg["rope_scaling"] = {k: v for k, v in rope.items() if k not in ("rope_theta", "partial_rotary_factor")}


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def load_causal_lm(path: str | Path, tokenizer: str | None = None, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Open a ``.ckpt``, a Hugging Face model directory or a PEFT adapter directory, in eval mode.

    ``tokenizer`` overrides the tokenizer found next to the model (for a checkpoint: the run's ``data.tokenizer``).
    The one loader behind export, evaluation and generation, so "what is a model path" means the same everywhere.
    """
    try:
        model, tok = _load_causal_lm(Path(path).expanduser(), tokenizer, dtype)
    except OSError as err:  # a tokenizer or base model that moved since training, a truncated weights file
        raise ModelLoadError(
            f"{str(path)!r}: {err}. If the tokenizer or the adapter's base model lives elsewhere now, pass the "
            "tokenizer directory explicitly (--tokenizer DIR); an adapter's base path is in adapter_config.json"
        ) from err
    apply_special_tokens(model, tok)
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    return model.eval(), tok


def _load_causal_lm(p: Path, tokenizer: str | None,
                    dtype: torch.dtype | None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if p.is_file() and p.suffix == ".ckpt":
        with checkpoint_classes():
            module = CausalLMModule.load_from_checkpoint(p, map_location="cpu", weights_only=True)
        model = module.model
        tok_path, named = tokenizer or _tokenizer_of_checkpoint(p), "the checkpoint's data.tokenizer"
    elif (p / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(p, dtype=dtype or torch.float32)
        tok_path = tokenizer or _first_with_tokenizer(p, json.loads((p / "adapter_config.json").read_text())
                                                      .get("base_model_name_or_path"))
        named = "the adapter's tokenizer"
    elif (p / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(p, dtype=dtype or torch.float32)
        tok_path, named = tokenizer or str(p), "the model's tokenizer"
    else:
        seen = sorted(x.name for x in p.iterdir())[:20] if p.is_dir() else []
        raise ModelLoadError(
            f"{str(p)!r} is not a model: expected a Lightning .ckpt file, a Hugging Face model directory "
            f"(config.json) or a PEFT adapter directory (adapter_config.json)"
            + (f"; it holds {seen}" if p.is_dir() else "; no such file" if not p.exists() else "")
        )
    # the same loader as training's, without the eos requirement: generation needs none (evaluation checks it)
    return model, load_tokenizer(tok_path, named=None if tokenizer else named, error=ModelLoadError,
                                 require_eos=False)


@contextmanager
def checkpoint_classes() -> Iterator[None]:
    """Inside, weights-only ``torch.load`` accepts the classes our checkpoints hold (:data:`CHECKPOINT_CLASSES`)."""
    with torch.serialization.safe_globals(CHECKPOINT_CLASSES):
        yield


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """``torch.load`` of one of our checkpoints in weights-only mode (no arbitrary code from the pickle): the one
    checkpoint reader (training's checks, ``modeling.runs``, evaluation's block size, the HF export).
    ``mmap=True`` reads only what is used, e.g. the hyperparameters without the weights."""
    with checkpoint_classes():
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def _tokenizer_of_checkpoint(ckpt: Path) -> str:
    state = load_checkpoint(ckpt, mmap=True)  # only the hyperparameters are needed: do not read the weights
    tok = (state.get("datamodule_hyper_parameters") or {}).get("tokenizer")
    if tok is None:
        raise ModelLoadError(f"{ckpt} does not record its tokenizer (no data module hyperparameters): pass "
                             "the tokenizer directory explicitly")
    return str(tok)


def _first_with_tokenizer(*dirs: Any) -> str:
    for d in dirs:
        if d and (Path(d) / "tokenizer_config.json").exists():
            return str(d)
    raise ModelLoadError(f"no tokenizer next to the adapter or its base ({dirs}): pass the tokenizer directory")


class HFExportCallback(pl.Callback):
    """At the end of ``fit``, write the best checkpoint (lowest ``val_loss``) in Hugging Face format.

    The Lightning counterpart of HF ``Trainer``'s ``load_best_model_at_end``: the best weights are also loaded into the
    module, so a following ``test`` in the same process sees them. LoRA runs export the adapter only.
    """

    def __init__(self, dirpath: str | None = None, use_best: bool = True) -> None:
        """
        Args:
            dirpath: Output directory; default ``<run log dir>/hf``.
            use_best: Export the best checkpoint of the first ModelCheckpoint; False exports the final weights.
        """
        super().__init__()
        self.dirpath = dirpath
        self.use_best = use_best
        self.exported_to: Path | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, CausalLMModule), "HFExportCallback exports CausalLMModule models"
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if self.use_best and best:
            state = load_checkpoint(best, map_location=pl_module.device)["state_dict"]
            pl_module.load_state_dict(state, strict=pl_module.strict_loading)
            rank_zero_info(f"export: loaded best checkpoint {best}")
        out = Path(self.dirpath) if self.dirpath else Path(trainer.log_dir or trainer.default_root_dir) / "hf"
        self.exported_to = out
        self._write(trainer, pl_module, out)
        trainer.strategy.barrier("hf_export")

    @rank_zero_only
    def _write(self, trainer: pl.Trainer, pl_module: CausalLMModule, out: Path) -> None:
        tokenizer = getattr(trainer.datamodule, "tokenizer", None)
        if tokenizer is None:
            raise ModelLoadError("HFExportCallback needs the data module's tokenizer (trainer.datamodule.tokenizer)")
        block_size = getattr(trainer.datamodule, "block_size", None)
        # training.json keeps the block size for evaluation; the tokenizer's model_max_length is the model's context
        export_hf(pl_module, tokenizer, out, block_size=block_size if isinstance(block_size, int) else None)
        rank_zero_info(f"export: Hugging Face {'adapter' if pl_module.lora else 'model'} written to {out}")
