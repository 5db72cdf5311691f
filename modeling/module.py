"""A LightningModule around Hugging Face causal language models: from scratch, from a pretrained checkpoint,
with LoRA adapters or 4-bit QLoRA.

The module owns the model and the metrics; data, tokenizer and callbacks live elsewhere (``modeling.data``,
``modeling.train``). It is built through ``python -m modeling.train`` (see its docstring), but works alone too::

    module = CausalLMModule(scratch=ScratchModelConfig(arch="gpt2", num_layers=2), vocab_size=len(tokenizer))
    lightning.Trainer(max_steps=100).fit(module, datamodule)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType, rank_zero_info, rank_zero_warn
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from curation.paths import names_a_local_path
from modeling.loss import (
    IGNORE_INDEX,
    chunk_cross_entropy,
    head_logits,
    head_operands,
    linear_cross_entropy,
    unsupported_head,
)

Dtype = Literal["float32", "bfloat16", "float16"]
FusedCrossEntropy = Literal["off", "chunked", "liger"]

#: Model config keys whose non-default value means the logits are not ``lm_head(last hidden state)``.
_LOGIT_TRANSFORMS = {"final_logit_softcapping": None, "logit_softcapping": None, "logit_scale": None,
                     "logits_scaling": 1.0}


class ModelConfigError(ValueError):
    """The model options cannot work together. The message names the option to change, as the ``--model.*`` flag
    of ``python -m modeling.train`` (the same key under ``model:`` in a config)."""


@dataclass(frozen=True)
class ScratchModelConfig:
    """Architecture of a model trained from randomly initialised weights.

    The defaults are the seed tutorial's GPT-2 (vocab 30000, 512 positions, 768 wide, 12 layers, 12 heads).
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


class WarmupCosineLR(LRScheduler):
    """Linear warmup to the base learning rate, then cosine decay to ``min_lr_ratio`` of it.

    ``total_steps`` left as None is filled in by :class:`CausalLMModule` from the trainer
    (``max_steps``, or epochs x batches), so a config need not repeat the run length; a run resumed with another
    ``max_steps`` then refits the decay to the new length (see ``CausalLMModule.on_train_start``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 0, total_steps: int | None = None,
                 min_lr_ratio: float = 0.1, last_epoch: int = -1) -> None:
        if warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"WarmupCosineLR: need warmup_steps >= 0 and 0 <= min_lr_ratio <= 1, got "
                             f"{warmup_steps} and {min_lr_ratio}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio
        self.follows_trainer = False  # True when total_steps came from the trainer (saved in the state_dict)
        super().__init__(optimizer, last_epoch)

    def refit(self, total_steps: int) -> tuple[float, float]:
        """End the decay at ``total_steps`` from now on; the learning rates of the next step move to the new
        curve at once. Returns the first group's LR (before, after)."""
        before = self.optimizer.param_groups[0]["lr"]
        self.total_steps = total_steps
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        return before, self.optimizer.param_groups[0]["lr"]

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        total = self.total_steps if self.total_steps is not None else step + 1
        progress = min(1.0, (step - self.warmup_steps) / max(1, total - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [base * self.lr_factor(self.last_epoch) for base in self.base_lrs]


class TokenPerplexity(MeanMetric):
    """exp of the token-weighted mean loss. Averaging losses (not perplexities) keeps it exact across batches
    of different sizes and across DDP ranks."""

    def compute(self) -> torch.Tensor:
        return torch.exp(super().compute())


class CausalLMModule(LightningModule):
    """Trains a ``transformers`` causal LM: full training from scratch or from pretrained weights, or LoRA/QLoRA.

    Exactly one of ``pretrained`` and ``scratch`` says where the weights come from. ``vocab_size`` is the
    tokenizer's size, linked from the data module by the CLI; the model's embedding is checked against it.
    """

    def __init__(
        self,
        pretrained: str | None = None,
        scratch: ScratchModelConfig | None = None,
        vocab_size: int | None = None,
        lora: LoraConfig | None = None,
        quantization: QuantizationConfig | None = None,
        dtype: Dtype = "float32",
        attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = None,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        fused_cross_entropy: FusedCrossEntropy = "off",
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        """
        Args:
            pretrained: Local directory (or hub name) to load with ``AutoModelForCausalLM.from_pretrained``.
            scratch: Architecture for a randomly initialised model.
            vocab_size: Tokenizer size (set by the CLI from ``data.tokenizer``); the embedding must cover it.
            lora: Train LoRA adapters instead of all weights.
            quantization: Load the pretrained base in 4 bits (QLoRA); needs ``lora`` and a CUDA GPU.
            dtype: Dtype of the loaded weights. Keep float32 for full training with mixed precision (the
                optimizer needs fp32 master weights); bfloat16/float16 halves memory for a frozen LoRA base.
            attn_implementation: Attention kernel; None lets transformers pick (SDPA where available).
            gradient_checkpointing: Recompute activations in the backward pass (non-reentrant): less memory,
                about a third more compute.
            compile: ``torch.compile`` the model and the loss when training starts: faster steps on a GPU (the
                loss then never holds an fp32 copy of the logits) after a compile of a minute or so; each new
                input shape compiles again. Checkpoints and exports are the same as without.
            fused_cross_entropy: Compute the output head and the loss together, a chunk of tokens at a time,
                instead of materialising the (batch, time, vocab) logits: ``chunked`` (pure PyTorch: each chunk's
                gradients are computed in the same pass, so nothing is recomputed; softmax and accumulation in
                fp32 under bf16/fp16 autocast) or ``liger`` (Liger-Kernel's Triton kernel: needs ``pip install
                liger-kernel`` and a CUDA GPU; no LoRA adapters on the output head). Use it when vocabulary x
                tokens per step is large: at a 50k vocabulary and 16 x 1024 tokens the fp32 logits alone are
                3.3 GB, with as much again for the log-softmax and for their gradient, where ``chunked`` holds
                the logits of 256 tokens at a time (2**24 logits, 64 MB) and saves their memory traffic. Loss,
                perplexity and accuracy mean the same (validation and test too); ``forward`` and exports are
                unchanged. Needs a model whose logits are its output head applied to the last hidden state
                (checked when training starts).
            optimizer: Optimizer factory; default AdamW(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True).
            scheduler: LR scheduler factory, stepped every optimizer step; default
                WarmupCosineLR(warmup_steps=2% of the run).
        """
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        if (pretrained is None) == (scratch is None):
            raise ModelConfigError(
                "give exactly one of --model.pretrained (a model directory to fine-tune) and --model.scratch "
                f"(an architecture to train from scratch); got pretrained={pretrained!r}, scratch={scratch!r}"
            )
        if pretrained is not None:
            _check_pretrained_path(pretrained)
        if lora is not None and lora.r < 1:
            raise ModelConfigError(f"--model.lora.r must be at least 1 (the adapters' rank), got {lora.r}")
        if quantization is not None:
            _check_qlora_possible(pretrained, lora)
        if lora is not None and pretrained is None:
            # The adapter would name no base (base_model_name_or_path: null) and the random base is never saved.
            raise ModelConfigError(
                "--model.lora needs --model.pretrained: LoRA adapts a pretrained model; for a model trained from "
                "scratch, drop --model.lora"
            )
        self.pretrained = pretrained
        self.scratch = scratch
        self.vocab_size = vocab_size
        self.lora = lora
        self.quantization = quantization
        self.dtype_name = dtype
        self.attn_implementation = attn_implementation
        self.gradient_checkpointing = gradient_checkpointing
        self.use_compile = compile  # not `self.compile`: that would hide nn.Module.compile()
        self.fused_cross_entropy = fused_cross_entropy
        self._loss_fn = token_cross_entropy
        self._chunk_fn = chunk_cross_entropy
        self._compiled = False
        self._fused_checked = False
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.model: PreTrainedModel | None = None
        self.flops_per_batch: int | None = None  # read by Lightning's ThroughputMonitor for MFU
        self.trainable_params = 0
        self._n_matmul_params: int | None = None
        self._base_seed = 0
        self.metrics = torch.nn.ModuleDict({
            # keys get a suffix: a ModuleDict key "train" would shadow nn.Module.train()
            f"{stage}_metrics": torch.nn.ModuleDict(
                {"loss": MeanMetric(), "ppl": TokenPerplexity(), "acc": MeanMetric()})
            for stage in ("train", "val", "test")
        })
        if lora is not None:
            # LoRA checkpoints hold only the trained weights; the frozen base comes from `pretrained` again.
            self.strict_loading = False

    # ----------------------------------------------------------------------------------------- model
    def configure_model(self) -> None:
        """Build (or load) the Hugging Face model once; Lightning calls this inside the strategy's init context."""
        if self.model is not None:
            return
        model = self._load_base_model()
        self._check_and_link_vocab(model)
        if self.gradient_checkpointing and self.quantization is None:
            # Non-reentrant checkpointing works with frozen inputs (LoRA) without enable_input_require_grads.
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.lora is not None:
            model = self._add_lora(model)
        if self.fused_cross_entropy != "off":
            self._check_fused_supported(model)
        # from_pretrained returns a model in eval mode, and Lightning keeps each submodule's mode as it finds it:
        # without this, fine-tuning would run with dropout off. Follow the LightningModule's own mode instead.
        model.train(self.training)
        self.model = model
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        self.trainable_params = trainable
        rank_zero_info(f"model: {total:,} parameters, {trainable:,} trainable ({100 * trainable / total:.3f}%)")

    def hf_config(self) -> PretrainedConfig:
        """The transformers config of the model this module builds, without building it (what a checkpoint's
        run identity records; ``modeling.runs``): a pretrained embedding smaller than the tokenizer counts as
        resized, as ``configure_model`` resizes it."""
        if self.scratch is not None:
            rows = self.scratch.vocab_size or self.vocab_size
            if rows is None:
                raise ModelConfigError("model.scratch.vocab_size is unknown: set data.tokenizer (the CLI links "
                                       "its size) or model.scratch.vocab_size")
            return self.scratch.to_hf_config(rows)
        assert self.pretrained is not None
        try:
            config = AutoConfig.from_pretrained(self.pretrained)
        except (OSError, ValueError) as err:
            raise _pretrained_error(self.pretrained, err) from err
        if self.vocab_size is not None and self.vocab_size > getattr(config, "vocab_size", 0):
            config.vocab_size = self.vocab_size
        return config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits, shape (batch, time, vocab)."""
        assert self.model is not None, "call configure_model() first"
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    # -------------------------------------------------------------------------------------- steps
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        """Loss, perplexity and next-token accuracy over the tokens whose label is not IGNORE_INDEX."""
        input_ids = batch["input_ids"]
        labels = batch.get("labels", input_ids)
        # Shift the labels, not the logits: a view of (B, T-1, V) logits would be copied by the flatten.
        targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:].reshape(-1)
        logging = self._trainer is not None  # also usable outside a Trainer (evaluation scripts, tests)
        # The accuracy's argmax reads all (batch x time x vocab) logits again, ~1% of a training step: during
        # training it is computed on the steps that are logged (a sample), in evaluation on every batch.
        with_accuracy = (stage != "train" or not logging
                         or (self.global_step + 1) % self.trainer.log_every_n_steps == 0)
        if self.fused_cross_entropy == "off":
            logits = self(input_ids, batch.get("attention_mask"))
            flat = logits.reshape(-1, logits.shape[-1])
            loss = self._loss_fn(flat, targets)
            # an ignored target (-100) never equals an argmax: only labelled tokens count
            correct = (flat.detach().argmax(-1) == targets).sum() if with_accuracy else None
        else:
            loss, correct = self._fused_loss(input_ids, batch.get("attention_mask"), targets, with_accuracy)
        with torch.no_grad():
            n_tokens = (targets != IGNORE_INDEX).sum()
            metrics = self.metrics[f"{stage}_metrics"]
            on_step = stage == "train"
            metrics["loss"](loss.detach(), n_tokens)
            metrics["ppl"](loss.detach(), n_tokens)
            if logging:
                self.log(f"{stage}_loss", metrics["loss"], on_step=on_step, on_epoch=True, prog_bar=True)
                self.log(f"{stage}_ppl", metrics["ppl"], on_step=on_step, on_epoch=True)
            if correct is not None:  # the token-weighted mean of per-token hits
                metrics["acc"](correct / n_tokens.clamp(min=1), n_tokens)
                if logging:
                    self.log(f"{stage}_acc", metrics["acc"], on_step=on_step, on_epoch=True)
        return loss

    def _fused_loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, targets: torch.Tensor,
                    with_accuracy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``model.fused_cross_entropy``: the transformer body, then the head and the loss chunk by chunk
        (``modeling.loss``), never the full logits. Returns the mean loss and the correct-prediction count."""
        assert self.model is not None, "call configure_model() first"
        if not self._fused_checked:  # on_fit_start checks before compiling; validate/test and direct use here
            self._check_fused_matches_model()
        body, head = _body_and_head(self.model)
        hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        hidden = hidden.reshape(-1, hidden.shape[-1])
        weight, bias, extra = head_operands(head, hidden)
        if self.fused_cross_entropy == "liger":
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

            loss = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX)(weight, hidden, targets, bias)
            correct = None
            if with_accuracy:  # Liger returns no logits: one more head pass, chunked and without gradients
                with torch.no_grad():
                    _, correct = linear_cross_entropy(hidden, weight, targets, bias, with_accuracy=True)
            return loss, correct
        return linear_cross_entropy(hidden, weight, targets, bias, extra, with_accuracy=with_accuracy,
                                    chunk_fn=self._chunk_fn)

    # ----------------------------------------------------------------------------- optimization
    def configure_optimizers(self) -> dict[str, Any]:
        assert self.model is not None
        # No weight decay on biases and norms (1-d tensors): decaying them only hurts (GPT-2/nanoGPT recipe).
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2]},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
        if self.optimizer_factory is not None:
            optimizer = self.optimizer_factory(groups)
        else:
            optimizer = torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
        total = self._total_steps()
        if self.scheduler_factory is not None:
            scheduler = self.scheduler_factory(optimizer)
        else:
            scheduler = WarmupCosineLR(optimizer, warmup_steps=max(1, int(0.02 * (total or 0))))
        if isinstance(scheduler, WarmupCosineLR) and scheduler.total_steps is None:
            if total is None:
                raise ModelConfigError(
                    "the cosine schedule needs the run length: set --trainer.max_steps (or --trainer.max_epochs), "
                    "or --model.scheduler.init_args.total_steps"
                )
            scheduler.total_steps = total
            scheduler.follows_trainer = True
        if self._trainer is not None:
            rank_zero_info(self._describe_optimization(optimizer))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip as Lightning does, and also for optimizers that fuse the gradient unscaling into their step.

        Under mixed precision Lightning refuses to clip for such optimizers (fused AdamW: "does not allow for
        gradient clipping because it performs unscaling of gradients internally") and, under 16-mixed, leaves
        their gradients scaled until the step. That refusal predates PyTorch's fused kernels learning to read the
        GradScaler's state: after an explicit ``GradScaler.unscale_`` the scaler hands the fused step only its
        inf/NaN flag, so the gradients are unscaled exactly once and an overflowed step is still skipped. So:
        unscale here (16-mixed only; bf16 has no scaler), then clip the true gradients.
        """
        plugin = self.trainer.precision_plugin
        if not (gradient_clip_val and isinstance(plugin, MixedPrecision) and _unscales_in_step(optimizer)):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        if plugin.scaler is not None:
            plugin.scaler.unscale_(optimizer)
        algorithm = GradClipAlgorithmType(gradient_clip_algorithm or self.trainer.gradient_clip_algorithm or "norm")
        Precision.clip_gradients(plugin, optimizer, gradient_clip_val, algorithm)  # the base class: no refusal

    # -------------------------------------------------------------------------------------- hooks
    def on_fit_start(self) -> None:
        assert self.model is not None
        block = getattr(self.trainer.datamodule, "block_size", None)
        limit = next((v for k in ("n_positions", "max_position_embeddings")
                      if isinstance(v := getattr(self.model.config, k, None), int)), None)
        if block is not None and limit is not None and block > limit:
            raise ModelConfigError(
                f"--data.block_size {block} is longer than the model's {limit} positions: lower --data.block_size, "
                "or raise --model.scratch.max_position_embeddings (from-scratch models only)"
            )
        self._base_seed = torch.initial_seed()
        if self.fused_cross_entropy != "off" and not self._fused_checked:
            self._check_fused_matches_model()  # before compiling: its extra forward would compile too
        if self.use_compile and not self._compiled:
            # Here, not in configure_model: a model loaded from a checkpoint for evaluation or generation (varying
            # shapes, a recompile each) stays uncompiled. nn.Module.compile keeps the state_dict keys unchanged.
            self._compiled = True
            if self.fused_cross_entropy == "off":
                self.model.compile()
                self._loss_fn = torch.compile(token_cross_entropy)
                rank_zero_info("torch.compile: model and loss compile on the first training step")
            else:  # the fused path calls the body, not the whole model; Liger's kernel is compiled already
                _body_and_head(self.model)[0].compile()
                if self.fused_cross_entropy == "chunked":
                    self._chunk_fn = torch.compile(chunk_cross_entropy)
                rank_zero_info("torch.compile: transformer body and chunked loss compile on the first training step")
        if self.lora is not None:
            for logger in self.loggers:
                logger.log_metrics({"trainable_params": float(self.trainable_params)}, step=0)

    def on_train_start(self) -> None:
        # After a resume the scheduler's state is the checkpoint's, including the run length it was fitted to.
        total = self._total_steps()
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if (isinstance(scheduler, WarmupCosineLR) and scheduler.follows_trainer and total is not None
                    and scheduler.total_steps != total):
                old = scheduler.total_steps
                before, after = scheduler.refit(total)
                rank_zero_info(
                    f"schedule: the run is {total} steps now, {old} when the checkpoint was saved: the cosine decay "
                    f"is refitted to end at step {total} (learning rate at step {self.global_step}: {before:.3g} -> "
                    f"{after:.3g}). A fixed model.scheduler.init_args.total_steps keeps a schedule as it is."
                )

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Seed dropout from (run seed, step, rank): the random stream then depends on the step alone, so a run
        # resumed from a checkpoint draws exactly the masks the uninterrupted run would have drawn.
        seed = np.random.SeedSequence([self._base_seed, self.global_step, self.global_rank]).generate_state(1)[0]
        torch.manual_seed(int(seed))
        self.flops_per_batch = self._estimate_flops(batch["input_ids"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.lora is not None:
            # Keep only what is trained (adapters, modules_to_save); the frozen base is reloaded from `pretrained`.
            trainable = self._trainable_state_keys()
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.model is not None:
            _check_checkpoint_shapes(checkpoint["state_dict"], self.state_dict())
        if self.lora is not None and self.model is not None:
            missing = sorted(self._trainable_state_keys() - set(checkpoint["state_dict"]))
            if missing:
                raise ModelConfigError(
                    f"the checkpoint lacks {len(missing)} trained LoRA weights (e.g. {missing[:3]}): it was "
                    "saved with other --model.lora settings; use the same r/target_modules as the run that wrote it"
                )

    # ---------------------------------------------------------------------------------- helpers
    def _check_fused_supported(self, model: PreTrainedModel) -> None:
        """``model.fused_cross_entropy`` needs logits == lm_head(last hidden state), with a head it can decompose."""
        flag = f"model.fused_cross_entropy={self.fused_cross_entropy}"
        _, head = _body_and_head(model)
        reason = unsupported_head(head, allow_lora=self.fused_cross_entropy != "liger")
        if reason is not None:
            lora_hint = (" (remove the head from model.lora.target_modules, or use chunked)" if "LoRA" in reason
                         else "")
            raise ModelConfigError(f"{flag} does not support {reason}{lora_hint}; set model.fused_cross_entropy "
                                   "off")
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        for key, neutral in _LOGIT_TRANSFORMS.items():
            value = getattr(config, key, None)
            if value is not None and value != neutral:
                raise ModelConfigError(
                    f"{flag}: this {config.model_type} model transforms its logits ({key}={value}), which the "
                    "fused loss does not apply; set model.fused_cross_entropy off"
                )

    @torch.no_grad()
    def _check_fused_matches_model(self) -> None:
        """Once, when training (or validation) starts: Liger is usable if asked for, and the model's own logits on a few tokens equal the fused loss's head applied to the body's output.
        Catches a forward that does more than ``lm_head(hidden)`` (scaling, soft-capping) in a model we do not
        know, before it trains a different model than the one that gets exported."""
        assert self.model is not None
        if self.fused_cross_entropy == "liger":
            # here, not at construction: a checkpoint trained with Liger must still load for evaluation anywhere
            _check_liger_possible()
        flag = f"model.fused_cross_entropy={self.fused_cross_entropy}"
        body, head = _body_and_head(self.model)
        emb = self.model.get_input_embeddings().weight
        limit = next((v for k in ("n_positions", "max_position_embeddings")
                      if isinstance(v := getattr(self.model.config, k, None), int)), 8)
        ids = ((torch.arange(min(8, limit), device=emb.device) * 7919 + 3) % emb.shape[0]).unsqueeze(0)
        was_training = self.model.training
        self.model.eval()  # no dropout: both passes must see the same activations
        try:
            with torch.autocast(emb.device.type, enabled=False):
                reference = self.model(input_ids=ids, use_cache=False).logits[0].float()
                hidden = body(input_ids=ids, use_cache=False).last_hidden_state[0]
                operands = head_operands(head, hidden)
                if operands[0].numel() == 0:
                    raise ModelConfigError(
                        f"{flag}: the output head's weight is partitioned outside its forward (DeepSpeed ZeRO-3?) "
                        "and the fused loss reads it directly: use DDP or FSDP, or set model.fused_cross_entropy off")
                ours = head_logits(operands, hidden)
        finally:
            self.model.train(was_training)
        exact = emb.dtype == torch.float32 and ours.shape == reference.shape
        tolerance = (1e-4 if exact else 2e-2) * max(1.0, reference.abs().max().item())
        diff = (ours - reference).abs().max().item() if ours.shape == reference.shape else float("inf")
        if not diff <= tolerance:
            raise ModelConfigError(
                f"{flag}: {type(self.model).__name__}'s logits are not its output head applied to the last hidden "
                f"state (max difference {diff:.3g} on a test input): its forward does more, which the fused loss "
                "would leave out. Set model.fused_cross_entropy off"
            )
        self._fused_checked = True

    def _describe_optimization(self, optimizer: torch.optim.Optimizer) -> str:
        """One log line: the optimizer's kernel, the precision and how clipping meets the gradient scaler."""
        defaults = optimizer.defaults
        kernel = ("fused=True" if defaults.get("fused") else
                  f"fused=False foreach={defaults.get('foreach')}" if "fused" in defaults else "")
        line = f"optimizer: {type(optimizer).__name__} {kernel}".rstrip() + f", precision {self.trainer.precision}"
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        clip, algorithm = self.trainer.gradient_clip_val, self.trainer.gradient_clip_algorithm or "norm"
        if not clip:
            return line + (", GradScaler" if scaler is not None else "") + ", no gradient clipping"
        if scaler is not None:
            line += f", GradScaler unscales the gradients, then they are clipped to {algorithm} {clip}"
            return line + ("; the fused step reads only the scaler's inf/NaN flag" if _unscales_in_step(optimizer)
                           else "")
        line += f", gradients clipped to {algorithm} {clip}"
        return line + (" (bf16: no GradScaler, nothing to unscale)" if "bf16" in str(self.trainer.precision) else "")

    def _load_base_model(self) -> PreTrainedModel:
        kwargs: dict[str, Any] = {}
        if self.attn_implementation is not None:
            kwargs["attn_implementation"] = self.attn_implementation
        if self.scratch is not None:
            rows = self.scratch.vocab_size or self.vocab_size
            if rows is None:
                raise ModelConfigError("--model.scratch.vocab_size is unknown: set --data.tokenizer (the CLI links "
                                       "its size) or --model.scratch.vocab_size")
            if self.vocab_size is not None and rows < self.vocab_size:
                raise ModelConfigError(
                    f"vocab mismatch: the tokenizer has {self.vocab_size} tokens but --model.scratch.vocab_size is "
                    f"{rows}, so the highest token ids have no embedding row. Remove --model.scratch.vocab_size "
                    f"(it then follows the tokenizer) or set it to at least {self.vocab_size}."
                )
            return AutoModelForCausalLM.from_config(self.scratch.to_hf_config(rows), **kwargs)
        assert self.pretrained is not None
        kwargs["dtype"] = getattr(torch, self.dtype_name)
        if self.quantization is not None:
            kwargs.update(_bnb_kwargs(self.quantization))
        try:
            model = AutoModelForCausalLM.from_pretrained(self.pretrained, **kwargs)
        except (OSError, ValueError) as err:  # missing or partial files, a config.json of no known model type
            raise _pretrained_error(self.pretrained, err) from err
        if self.quantization is not None:
            import peft

            model = peft.prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=self.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
        return model

    def _check_and_link_vocab(self, model: PreTrainedModel) -> None:
        """The seed's `assert vocab_size == embedding rows`, as a fix-it error; grows a pretrained embedding."""
        rows = model.get_input_embeddings().weight.shape[0]
        if self.vocab_size is None or self.vocab_size <= rows:
            return
        if self.pretrained is not None and self.quantization is None:
            rank_zero_info(f"tokenizer has {self.vocab_size} tokens, {self.pretrained} has {rows} embedding rows: "
                           f"resizing the embeddings (new rows start at the mean of the old ones)")
            model.resize_token_embeddings(self.vocab_size)
            if self.lora is not None and not self.lora.modules_to_save:
                rank_zero_warn("new token embeddings stay untrained under LoRA; set --model.lora.modules_to_save "
                               "(e.g. [lm_head, embed_tokens]) to train them")
            return
        raise ModelConfigError(
            f"vocab mismatch: the tokenizer has {self.vocab_size} tokens but the model's embedding has {rows} rows. "
            "Use the tokenizer the model was trained with (--data.tokenizer), or a model with a larger vocabulary."
        )

    def _add_lora(self, model: PreTrainedModel) -> PreTrainedModel:
        import peft
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULT_TARGETS

        assert self.lora is not None
        targets = self.lora.target_modules
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
            task_type=peft.TaskType.CAUSAL_LM, r=self.lora.r, lora_alpha=self.lora.alpha,
            lora_dropout=self.lora.dropout, target_modules=list(targets), bias=self.lora.bias,
            fan_in_fan_out=fan_in_fan_out,
            modules_to_save=list(self.lora.modules_to_save) if self.lora.modules_to_save else None,
        )
        model = peft.get_peft_model(model, config)
        # Trainable weights stay fp32 whatever the base dtype: GradScaler under 16-mixed refuses fp16 gradients
        # ("Attempting to unscale FP16 gradients"), and bf16 updates lose small steps.
        for param in model.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()
        rank_zero_info(f"LoRA on {list(targets)}, r={self.lora.r}, alpha={self.lora.alpha}")
        return model

    def _trainable_state_keys(self) -> set[str]:
        return {f"model.{name}" for name, p in self.model.named_parameters() if p.requires_grad} if self.model else set()

    def _total_steps(self) -> int | None:
        if self._trainer is None:
            return None
        total = self.trainer.estimated_stepping_batches
        return None if total is None or math.isinf(total) else int(total)

    def _estimate_flops(self, input_ids: torch.Tensor) -> int:
        """Training FLOPs of one batch (PaLM appendix B): 6 N per token for weights, plus attention scores.

        LoRA skips weight gradients of the frozen base, so it costs about 4 N per token instead of 6 N.
        """
        assert self.model is not None
        cfg = self.model.config
        n_params = self._n_matmul_params
        if n_params is None:
            emb = self.model.get_input_embeddings().weight.numel()
            n_params = sum(p.numel() for p in self.model.parameters()) - emb
            if getattr(cfg, "tie_word_embeddings", False):
                n_params += emb  # the tied output head is a matmul
            self._n_matmul_params = n_params
        batch, seq = input_ids.shape
        per_token = (4 if self.lora is not None else 6) * n_params
        layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 0)
        width = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 0)
        attention = 12 * layers * width * seq
        return int((per_token + attention) * batch * seq)


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of (tokens, vocab) logits against targets, skipping IGNORE_INDEX, computed in fp32."""
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)


def _pretrained_error(pretrained: str, err: OSError) -> ModelConfigError:
    return ModelConfigError(
        f"cannot load --model.pretrained {pretrained!r}: {err}. Give a directory written by save_pretrained "
        "(config.json + weights) or a hub name reachable from this machine."
    )


def _body_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer body (``model.transformer`` for GPT-2, ``model.model`` for Llama: what returns the last
    hidden state) and the output head, also through a peft wrapper (whose adapters live inside both)."""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(hf, "base_model", hf)
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    if body is hf or head is None:
        raise ModelConfigError(
            f"model.fused_cross_entropy needs a model with a transformer body and a separate output head "
            f"(model.transformer or model.model, and lm_head); {type(hf).__name__} has "
            + ("no body" if body is hf else "no output head") + ". Set model.fused_cross_entropy off"
        )
    return body, head


def _check_liger_possible() -> None:
    """``fused_cross_entropy=liger`` prerequisites, checked at construction."""
    if not torch.cuda.is_available():
        raise ModelConfigError(
            "model.fused_cross_entropy=liger needs a CUDA GPU (Liger-Kernel is written in Triton); use "
            "model.fused_cross_entropy=chunked on this machine"
        )
    try:
        import liger_kernel.transformers  # noqa: F401
    except ImportError as err:
        raise ModelConfigError(
            "model.fused_cross_entropy=liger needs Liger-Kernel: pip install liger-kernel (or use "
            "model.fused_cross_entropy=chunked, which needs nothing)"
        ) from err


def _unscales_in_step(optimizer: torch.optim.Optimizer) -> bool:
    """True for optimizers whose step unscales the gradients itself (PyTorch's fused Adam, AdamW, SGD)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def _check_qlora_possible(pretrained: str | None, lora: LoraConfig | None) -> None:
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


def _check_pretrained_path(pretrained: str) -> None:
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


def _check_checkpoint_shapes(saved: dict[str, Any], own: dict[str, torch.Tensor]) -> None:
    """A checkpoint whose tensors do not fit this model (another tokenizer or architecture) fails naming one."""
    wrong = [(k, list(v.shape), list(own[k].shape)) for k, v in saved.items()
             if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape]
    if wrong:
        key, theirs, ours = wrong[0]
        raise ModelConfigError(
            f"the checkpoint does not fit this model: {key} is {theirs} in the checkpoint but {ours} here "
            f"({len(wrong)} tensors differ). An embedding of another size means another tokenizer: give the "
            "--data.tokenizer (and model options) of the run that wrote the checkpoint"
        )


def _bnb_kwargs(cfg: QuantizationConfig) -> dict[str, Any]:
    from transformers import BitsAndBytesConfig

    bnb = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=cfg.quant_type, bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, cfg.compute_dtype),
    )
    # 4-bit weights cannot be moved after loading: put them on this process's GPU right away (one per DDP rank).
    return {"quantization_config": bnb, "device_map": {"": torch.cuda.current_device()}}
