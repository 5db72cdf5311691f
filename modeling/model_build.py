"""From the model options to a Hugging Face model: the checks at construction, the base model (from scratch, or
pretrained and possibly 4-bit for QLoRA), its vocabulary against the tokenizer's, and LoRA adapters.

``CausalLMModule`` calls these in ``__init__`` (the checks: a misconfigured job fails before any data work) and
``configure_model`` (the building); they take the options one by one so each can be tested alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from common.files import names_a_local_path
from modeling.model_config import Dtype, LoraConfig, ModelConfigError, QuantizationConfig, ScratchModelConfig


def check_model_options(pretrained: str | None, scratch: ScratchModelConfig | None, lora: LoraConfig | None,
                        quantization: QuantizationConfig | None) -> None:
    """The options that cannot work together, or name no model, fail here, each naming the flag to change."""
    if (pretrained is None) == (scratch is None):
        raise ModelConfigError(
            "give exactly one of --model.pretrained (a model directory to fine-tune) and --model.scratch "
            f"(an architecture to train from scratch); got pretrained={pretrained!r}, scratch={scratch!r}"
        )
    if pretrained is not None:
        check_pretrained_path(pretrained)
    if lora is not None and lora.r < 1:
        raise ModelConfigError(f"--model.lora.r must be at least 1 (the adapters' rank), got {lora.r}")
    if quantization is not None:
        check_qlora_possible(pretrained, lora)
    if lora is not None and pretrained is None:
        # The adapter would name no base (base_model_name_or_path: null) and the random base is never saved.
        raise ModelConfigError(
            "--model.lora needs --model.pretrained: LoRA adapts a pretrained model; for a model trained from "
            "scratch, drop --model.lora"
        )


def check_qlora_possible(pretrained: str | None, lora: LoraConfig | None) -> None:
    """QLoRA prerequisites, checked at construction so a misconfigured job fails before any work."""
    if pretrained is None or lora is None:
        raise ModelConfigError(
            "--model.quantization (QLoRA) quantizes a pretrained base and trains LoRA adapters on it: set "
            "--model.pretrained and --model.lora too, or remove --model.quantization"
        )
    if not torch.cuda.is_available():
        raise ModelConfigError(
            "--model.quantization (4-bit QLoRA) needs a CUDA GPU: bitsandbytes' 4-bit kernels do not run on this "
            "machine's CPU. Run on a GPU node, or remove --model.quantization to train plain LoRA (fp32/bf16) here."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise ModelConfigError(
            "--model.quantization needs bitsandbytes: pip install -e '.[qlora]' (or pip install bitsandbytes)"
        ) from err


def check_pretrained_path(pretrained: str) -> None:
    """A ``--model.pretrained`` that is plainly not a model directory fails at construction, before any data work.

    Names that may be hub ids (``gpt2``, ``org/name``) and do not exist locally are left to ``from_pretrained``.
    """
    fix = "Give a directory written by save_pretrained (config.json + weights) or a hub model name"
    if not pretrained.strip():
        raise ModelConfigError(f"--model.pretrained is empty. {fix}")
    local = Path(pretrained).expanduser()
    if local.is_file():
        hint = "; a Lightning checkpoint resumes with --ckpt_path" if local.suffix == ".ckpt" else ""
        raise ModelConfigError(f"--model.pretrained {pretrained!r} is a file, not a model directory{hint}. {fix}")
    if local.is_dir() and not (local / "config.json").is_file():
        seen = sorted(x.name for x in local.iterdir())[:10]
        adapter = (" (a LoRA adapter: give its base model, in adapter_config.json, here)"
                   if (local / "adapter_config.json").is_file() else "")
        raise ModelConfigError(f"--model.pretrained {pretrained!r} has no config.json{adapter}; it holds {seen}. {fix}")
    if not local.exists() and names_a_local_path(pretrained):
        raise ModelConfigError(f"--model.pretrained {pretrained!r}: no such directory. {fix}")


def hf_config(pretrained: str | None, scratch: ScratchModelConfig | None, vocab_size: int | None) -> PretrainedConfig:
    """The transformers config of the model :func:`load_base_model` builds, without building it: a pretrained
    embedding smaller than the tokenizer counts as resized, as :func:`link_vocab` resizes it."""
    if scratch is not None:
        rows = scratch.vocab_size or vocab_size
        if rows is None:
            raise ModelConfigError("model.scratch.vocab_size is unknown: set data.tokenizer (the CLI links "
                                   "its size) or model.scratch.vocab_size")
        return scratch.to_hf_config(rows)
    assert pretrained is not None
    try:
        config = AutoConfig.from_pretrained(pretrained)
    except (OSError, ValueError) as err:
        raise _pretrained_error(pretrained, err) from err
    if vocab_size is not None and vocab_size > getattr(config, "vocab_size", 0):
        config.vocab_size = vocab_size
    return config


def load_base_model(pretrained: str | None, scratch: ScratchModelConfig | None, vocab_size: int | None, *,
                    dtype: Dtype = "float32", attn_implementation: str | None = None,
                    quantization: QuantizationConfig | None = None,
                    gradient_checkpointing: bool = False) -> PreTrainedModel:
    """A randomly initialised ``scratch`` model, or the ``pretrained`` one (in 4 bits with ``quantization``)."""
    kwargs: dict[str, Any] = {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if scratch is not None:
        rows = scratch.vocab_size or vocab_size
        if rows is None:
            raise ModelConfigError("--model.scratch.vocab_size is unknown: set --data.tokenizer (the CLI links "
                                   "its size) or --model.scratch.vocab_size")
        if vocab_size is not None and rows < vocab_size:
            raise ModelConfigError(
                f"vocab mismatch: the tokenizer has {vocab_size} tokens but --model.scratch.vocab_size is "
                f"{rows}, so the highest token ids have no embedding row. Remove --model.scratch.vocab_size "
                f"(it then follows the tokenizer) or set it to at least {vocab_size}."
            )
        return AutoModelForCausalLM.from_config(scratch.to_hf_config(rows), **kwargs)
    assert pretrained is not None
    kwargs["dtype"] = getattr(torch, dtype)
    if quantization is not None:
        kwargs.update(_bnb_kwargs(quantization))
    try:
        model = AutoModelForCausalLM.from_pretrained(pretrained, **kwargs)
    except (OSError, ValueError) as err:  # missing or partial files, a config.json of no known model type
        raise _pretrained_error(pretrained, err) from err
    if quantization is not None:
        import peft

        model = peft.prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    return model


def link_vocab(model: PreTrainedModel, vocab_size: int | None, pretrained: str | None,
               quantization: QuantizationConfig | None, lora: LoraConfig | None) -> None:
    """`assert vocab_size == embedding rows`, as a fix-it error; grows a pretrained embedding."""
    rows = model.get_input_embeddings().weight.shape[0]
    if vocab_size is None or vocab_size <= rows:
        return
    if pretrained is not None and quantization is None:
        rank_zero_info(f"tokenizer has {vocab_size} tokens, {pretrained} has {rows} embedding rows: "
                       f"resizing the embeddings (new rows start at the mean of the old ones)")
        model.resize_token_embeddings(vocab_size)
        if lora is not None and not lora.modules_to_save:
            rank_zero_warn("new token embeddings stay untrained under LoRA; set --model.lora.modules_to_save "
                           "(e.g. [lm_head, embed_tokens]) to train them")
        return
    raise ModelConfigError(
        f"vocab mismatch: the tokenizer has {vocab_size} tokens but the model's embedding has {rows} rows. "
        "Use the tokenizer the model was trained with (--data.tokenizer), or a model with a larger vocabulary."
    )


def add_lora(model: PreTrainedModel, lora: LoraConfig) -> PreTrainedModel:
    """``model`` wrapped by peft with ``lora``'s adapters (peft's default targets for known architectures)."""
    import peft
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULT_TARGETS

    targets = lora.target_modules
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                     if isinstance(m, (torch.nn.Linear, Conv1D))})
    if targets is None:
        model_type = model.config.model_type
        if model_type not in DEFAULT_TARGETS:
            raise ModelConfigError(f"no default LoRA target modules for model type {model_type!r}; set "
                                   f"--model.lora.target_modules to some of its linear layers: {linear}")
        targets = tuple(DEFAULT_TARGETS[model_type])
    names = [n for n, _ in model.named_modules()]
    unknown = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if unknown:
        raise ModelConfigError(f"--model.lora.target_modules {list(unknown)}: no such module in "
                               f"{model.config.model_type!r}; its linear layers are {linear}")
    # GPT-2 keeps its linear weights transposed (Conv1D); peft must know, or it warns and guesses.
    fan_in_fan_out = any(isinstance(m, Conv1D) and n.rsplit(".", 1)[-1] in targets
                         for n, m in model.named_modules())
    config = peft.LoraConfig(
        task_type=peft.TaskType.CAUSAL_LM, r=lora.r, lora_alpha=lora.alpha,
        lora_dropout=lora.dropout, target_modules=list(targets), bias=lora.bias,
        fan_in_fan_out=fan_in_fan_out,
        modules_to_save=list(lora.modules_to_save) if lora.modules_to_save else None,
    )
    model = peft.get_peft_model(model, config)
    # Trainable weights stay fp32 whatever the base dtype: GradScaler under 16-mixed refuses fp16 gradients
    # ("Attempting to unscale FP16 gradients"), and bf16 updates lose small steps.
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    rank_zero_info(f"LoRA on {list(targets)}, r={lora.r}, alpha={lora.alpha}")
    return model


def _pretrained_error(pretrained: str, err: OSError | ValueError) -> ModelConfigError:
    return ModelConfigError(
        f"cannot load --model.pretrained {pretrained!r}: {err}. Give a directory written by save_pretrained "
        "(config.json + weights) or a hub name reachable from this machine."
    )


def _bnb_kwargs(cfg: QuantizationConfig) -> dict[str, Any]:
    from transformers import BitsAndBytesConfig

    bnb = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=cfg.quant_type, bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, cfg.compute_dtype),
    )
    # 4-bit weights cannot be moved after loading: put them on this process's GPU right away (one per DDP rank).
    return {"quantization_config": bnb, "device_map": {"": torch.cuda.current_device()}}
