"""A LightningModule around Hugging Face causal language models: from scratch, from a pretrained checkpoint,
with LoRA adapters or 4-bit QLoRA.

The module owns the model and the metrics; data, tokenizer and callbacks live elsewhere (``modeling.data``,
``modeling.train``), and so do its parts: the options (``modeling.model_config``), building the Hugging Face model
from them (``modeling.model_build``), the loss (``modeling.loss``, ``modeling.fused_loss``) and the optimization
pieces (``modeling.optim``). It is built through ``python -m modeling.train`` (see its docstring), but works alone too::

    module = CausalLMModule(scratch=ScratchModelConfig(arch="gpt2", num_layers=2), vocab_size=len(tokenizer))
    lightning.Trainer(max_steps=100).fit(module, datamodule)
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric
from transformers import PretrainedConfig, PreTrainedModel

from modeling.document_mask import document_eos, mask_document_starts, model_document_inputs
from modeling.fused_loss import body_and_head, check_fused_matches_model, check_fused_supported, fused_loss
from modeling.loss import (
    IGNORE_INDEX,
    TokenPerplexity,
    chunk_cross_entropy,
    next_token_targets,
    token_cross_entropy,
)
from modeling.model_build import add_lora, check_model_options, hf_config, link_vocab, load_base_model
from modeling.model_config import (
    Dtype,
    FusedCrossEntropy,
    LoraConfig,
    ModelConfigError,
    QuantizationConfig,
    ScratchModelConfig,
)
from modeling.optim import (
    WarmupCosineLR,
    clip_fused_unscaling,
    default_optimizer,
    describe_optimization,
    weight_decay_groups,
)

#: What ``from modeling.module import ...`` has always offered (configs, scripts and older checkpoints name the
#: classes here; ``modeling.module.WarmupCosineLR`` as a scheduler class_path keeps working).
__all__ = ["IGNORE_INDEX", "CausalLMModule", "Dtype", "FusedCrossEntropy", "LoraConfig", "ModelConfigError",
           "QuantizationConfig", "ScratchModelConfig", "TokenPerplexity", "WarmupCosineLR", "token_cross_entropy"]


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
        document_mask: bool = False,
        eos_token_id: int | None = None,
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
            document_mask: Each document of a packed block attends only to itself and its position ids restart
                at 0 after every eos (``modeling.document_mask``; docs/training.md, "Document-aware packing");
                the first token of each document is then not a target. Boundaries come from the eos tokens in
                the blocks, so the token cache is the same. Flash attention gets the packed sequence as position
                ids (variable-length kernel, no mask); eager and SDPA an explicit block-diagonal causal mask.
                Applies to training, validation, test and ``forward``.
            eos_token_id: The tokenizer's eos, which separates packed documents (set by the CLI from
                ``data.tokenizer``); None takes the model config's (a pretrained model). Used by
                ``document_mask`` only.
            optimizer: Optimizer factory; default AdamW(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True).
            scheduler: LR scheduler factory, stepped every optimizer step; default
                WarmupCosineLR(warmup_steps=2% of the run).
        """
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        check_model_options(pretrained, scratch, lora, quantization)
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
        self.document_mask = document_mask
        self.eos_token_id = eos_token_id
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
        model = load_base_model(self.pretrained, self.scratch, self.vocab_size, dtype=self.dtype_name,
                                attn_implementation=self.attn_implementation, quantization=self.quantization,
                                gradient_checkpointing=self.gradient_checkpointing)
        link_vocab(model, self.vocab_size, self.pretrained, self.quantization, self.lora)
        if self.gradient_checkpointing and self.quantization is None:
            # Non-reentrant checkpointing works with frozen inputs (LoRA) without enable_input_require_grads.
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.lora is not None:
            model = add_lora(model, self.lora)
        if self.fused_cross_entropy != "off":
            check_fused_supported(model, self.fused_cross_entropy)
        # from_pretrained returns a model in eval mode, and Lightning keeps each submodule's mode as it finds it:
        # without this, fine-tuning would run with dropout off. Follow the LightningModule's own mode instead.
        model.train(self.training)
        self.model = model
        if self.document_mask:
            self.eos_token_id = document_eos(model, self.eos_token_id)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        self.trainable_params = trainable
        rank_zero_info(f"model: {total:,} parameters, {trainable:,} trainable ({100 * trainable / total:.3f}%)")

    def hf_config(self) -> PretrainedConfig:
        """The transformers config of the model this module builds, without building it (what a checkpoint's
        run identity records; ``modeling.runs``)."""
        return hf_config(self.pretrained, self.scratch, self.vocab_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits, shape (batch, time, vocab); with ``document_mask``, each document's alone."""
        assert self.model is not None, "call configure_model() first"
        logits = self.model(**self._model_inputs(input_ids, attention_mask), use_cache=False).logits
        return logits.reshape(*input_ids.shape, logits.shape[-1])  # flash attention's packing flattens the batch

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
        if self.document_mask:
            labels = mask_document_starts(labels, input_ids, self._eos())
        targets = next_token_targets(labels).reshape(-1)
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
            assert self.model is not None, "call configure_model() first"
            self._check_fused_once()  # on_fit_start checks before compiling; validate/test and direct use here
            loss, correct = fused_loss(self.model, self.fused_cross_entropy,
                                       self._model_inputs(input_ids, batch.get("attention_mask")),
                                       targets, with_accuracy, chunk_fn=self._chunk_fn)
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

    # ----------------------------------------------------------------------------- optimization
    def configure_optimizers(self) -> dict[str, Any]:
        assert self.model is not None
        groups = weight_decay_groups(self.model)
        optimizer = (self.optimizer_factory or default_optimizer)(groups)
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
            rank_zero_info(describe_optimization(optimizer, self.trainer))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip as Lightning does, and also for optimizers that fuse the gradient unscaling into their step under
        mixed precision, which Lightning refuses to clip (``modeling.optim.clip_fused_unscaling`` says why)."""
        if not clip_fused_unscaling(self.trainer, optimizer, gradient_clip_val, gradient_clip_algorithm):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

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
        if self.fused_cross_entropy != "off":
            self._check_fused_once()  # before compiling: its extra forward would compile too
        if self.use_compile and not self._compiled:
            # Here, not in configure_model: a model loaded from a checkpoint for evaluation or generation (varying
            # shapes, a recompile each) stays uncompiled. nn.Module.compile keeps the state_dict keys unchanged.
            self._compiled = True
            if self.fused_cross_entropy == "off":
                self.model.compile()
                self._loss_fn = torch.compile(token_cross_entropy)
                rank_zero_info("torch.compile: model and loss compile on the first training step")
            else:  # the fused path calls the body, not the whole model; Liger's kernel is compiled already
                body_and_head(self.model)[0].compile()
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
    def _model_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The model's keyword arguments: as given, or with ``document_mask`` the documents packed apart."""
        if not self.document_mask:
            return {"input_ids": input_ids, "attention_mask": attention_mask}
        assert self.model is not None
        return model_document_inputs(self.model, input_ids, self._eos(), attention_mask)

    def _eos(self) -> int:
        if self.eos_token_id is None:
            assert self.model is not None, "call configure_model() first"
            self.eos_token_id = document_eos(self.model, None)
        return self.eos_token_id

    def _check_fused_once(self) -> None:
        """``check_fused_matches_model``, the first time the fused loss is about to run."""
        if not self._fused_checked:
            assert self.model is not None
            check_fused_matches_model(self.model, self.fused_cross_entropy)
            self._fused_checked = True

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
