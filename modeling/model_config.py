"""The model options of ``python -m modeling.train`` (``model:`` in a config, ``--model.*`` flags): which weights,
which architecture, LoRA adapters, 4-bit quantization. The dataclasses' field docstrings are the ``--help`` text.

Checkpoints pickle these classes in their hyperparameters; they lived in ``modeling.module`` before, a name
``modeling.export.load_checkpoint`` still accepts (and ``modeling.module`` still exports) for older checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from transformers import AutoConfig, PretrainedConfig

from common.errors import UserError

Dtype = Literal["float32", "bfloat16", "float16"]
FusedCrossEntropy = Literal["off", "chunked", "liger"]


class ModelConfigError(UserError):
    """The model options cannot work together. The message names the option to change, as the ``--model.*`` flag
    of ``python -m modeling.train`` (the same key under ``model:`` in a config)."""


@dataclass(frozen=True)
class ScratchModelConfig:
    """Architecture of a model trained from randomly initialised weights.

    The defaults are the classic small GPT-2 recipe (vocab 30000, 512 positions, 768 wide, 12 layers, 12 heads).
    """

    arch: Literal["gpt2", "llama"] = "gpt2"
    """Model family: ``gpt2`` (learned positions, GELU MLP) or ``llama`` (RoPE, RMSNorm, SwiGLU, optional GQA)."""
    vocab_size: int | None = None
    """Embedding rows. None takes the tokenizer's size (linked by the CLI); a larger value pads the
    embedding (e.g. to a multiple of 64 for speed); a smaller one is an error."""
    max_position_embeddings: int = 512
    """Longest sequence the model can see; must be >= ``data.block_size``."""
    hidden_size: int = 768
    """Width of the residual stream."""
    num_layers: int = 12
    """Number of transformer blocks."""
    num_heads: int = 12
    """Attention heads; ``hidden_size`` must be divisible by it."""
    num_kv_heads: int | None = None
    """Llama only: key/value heads for grouped-query attention (None: same as ``num_heads``)."""
    intermediate_size: int | None = None
    """MLP width. None: 4x hidden for GPT-2, about 8/3x hidden (rounded up to 256) for Llama."""
    dropout: float = 0.0
    """Dropout on embeddings, attention and residuals (GPT-2's own default is 0.1)."""
    tie_word_embeddings: bool = True
    """Share the input embedding with the output head (fewer parameters, the GPT-2 choice)."""
    rope_theta: float = 10000.0
    """Llama only: RoPE base frequency."""

    def to_hf_config(self, vocab_size: int) -> PretrainedConfig:
        """Build the transformers config for ``vocab_size`` embedding rows."""
        if self.hidden_size % self.num_heads:
            raise ModelConfigError(
                f"--model.scratch.hidden_size {self.hidden_size} is not divisible by --model.scratch.num_heads "
                f"{self.num_heads}; change one of them."
            )
        if self.arch == "gpt2":
            return AutoConfig.for_model(
                "gpt2", vocab_size=vocab_size, n_positions=self.max_position_embeddings,
                n_embd=self.hidden_size, n_layer=self.num_layers, n_head=self.num_heads,
                n_inner=self.intermediate_size, resid_pdrop=self.dropout, embd_pdrop=self.dropout,
                attn_pdrop=self.dropout, tie_word_embeddings=self.tie_word_embeddings, use_cache=True,
                # GPT2Config defaults to GPT-2's own ids (50256); ours come from the tokenizer at export
                bos_token_id=None, eos_token_id=None,
            )
        inter = self.intermediate_size or 256 * math.ceil(8 * self.hidden_size / 3 / 256)
        return AutoConfig.for_model(
            "llama", vocab_size=vocab_size, max_position_embeddings=self.max_position_embeddings,
            hidden_size=self.hidden_size, intermediate_size=inter, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads or self.num_heads,
            attention_dropout=self.dropout, tie_word_embeddings=self.tie_word_embeddings,
            rope_theta=self.rope_theta, use_cache=True,
        )


@dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters (peft): the base model is frozen and only small matrices next to it are trained."""

    r: int = 8
    """Rank of the adapter matrices."""
    alpha: int = 32
    """Scaling numerator: adapter output is multiplied by ``alpha / r``."""
    dropout: float = 0.1
    """Dropout on the adapter input."""
    target_modules: tuple[str, ...] | None = None
    """Names of the linear layers to adapt. None: peft's default for the architecture
    (``c_attn`` for GPT-2, ``q_proj``/``v_proj`` for Llama and Mistral)."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases to train as well."""
    modules_to_save: tuple[str, ...] | None = None
    """Extra modules trained in full and saved with the adapter, e.g. ``(lm_head, embed_tokens)`` when new
    tokens were added to the tokenizer."""


@dataclass(frozen=True)
class QuantizationConfig:
    """4-bit loading of a pretrained base model with bitsandbytes, for QLoRA. Needs CUDA and LoRA."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type: NF4 (normal float, the QLoRA paper's) or plain FP4."""
    double_quant: bool = True
    """Also quantize the quantization constants (saves ~0.4 bit per weight)."""
    compute_dtype: Dtype = "float16"
    """Dtype the 4-bit weights are dequantized to for matmuls."""
