"""Optimization pieces of the module: the learning-rate schedule, and how clipping meets mixed precision.

``model.scheduler`` names :class:`WarmupCosineLR` as ``modeling.optim.WarmupCosineLR`` (older configs say
``modeling.module.WarmupCosineLR``, which still works).
"""

from __future__ import annotations

import math

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch.optim.lr_scheduler import LRScheduler


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



def weight_decay_groups(model: torch.nn.Module) -> list[dict]:
    """The trainable parameters in two optimizer groups: matrices decay, biases and norms (1-d tensors) do not;
    decaying those only hurts (the GPT-2 / nanoGPT recipe)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2]},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def default_optimizer(groups: list[dict]) -> torch.optim.Optimizer:
    """AdamW(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True), when the config names no optimizer."""
    return torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)


def unscales_in_step(optimizer: torch.optim.Optimizer) -> bool:
    """True for optimizers whose step unscales the gradients itself (PyTorch's fused Adam, AdamW, SGD)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def clip_fused_unscaling(trainer: Trainer, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None,
                         gradient_clip_algorithm: str | None) -> bool:
    """Clip the gradients of an optimizer that fuses their unscaling into its step, under mixed precision; returns
    False (nothing done) in every other case, which Lightning's own clipping handles.

    Under mixed precision Lightning refuses to clip for such optimizers (fused AdamW: "does not allow for
    gradient clipping because it performs unscaling of gradients internally") and, under 16-mixed, leaves
    their gradients scaled until the step. That refusal predates PyTorch's fused kernels learning to read the
    GradScaler's state: after an explicit ``GradScaler.unscale_`` the scaler hands the fused step only its
    inf/NaN flag, so the gradients are unscaled exactly once and an overflowed step is still skipped. So:
    unscale here (16-mixed only; bf16 has no scaler), then clip the true gradients.
    """
    plugin = trainer.precision_plugin
    if not (gradient_clip_val and isinstance(plugin, MixedPrecision) and unscales_in_step(optimizer)):
        return False
    if plugin.scaler is not None:
        plugin.scaler.unscale_(optimizer)
    algorithm = GradClipAlgorithmType(gradient_clip_algorithm or trainer.gradient_clip_algorithm or "norm")
    Precision.clip_gradients(plugin, optimizer, gradient_clip_val, algorithm)  # the base class: no refusal
    return True


def describe_optimization(optimizer: torch.optim.Optimizer, trainer: Trainer) -> str:
    """One log line: the optimizer's kernel, the precision and how clipping meets the gradient scaler."""
    defaults = optimizer.defaults
    kernel = ("fused=True" if defaults.get("fused") else
              f"fused=False foreach={defaults.get('foreach')}" if "fused" in defaults else "")
    line = f"optimizer: {type(optimizer).__name__} {kernel}".rstrip() + f", precision {trainer.precision}"
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    clip, algorithm = trainer.gradient_clip_val, trainer.gradient_clip_algorithm or "norm"
    if not clip:
        return line + (", GradScaler" if scaler is not None else "") + ", no gradient clipping"
    if scaler is not None:
        line += f", GradScaler unscales the gradients, then they are clipped to {algorithm} {clip}"
        return line + ("; the fused step reads only the scaler's inf/NaN flag" if unscales_in_step(optimizer)
                       else "")
    line += f", gradients clipped to {algorithm} {clip}"
    return line + (" (bf16: no GradScaler, nothing to unscale)" if "bf16" in str(trainer.precision) else "")
