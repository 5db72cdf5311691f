"""The three saved forms ``--model`` accepts, built small and fast for the evaluation and generation tests."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import peft
import torch
from transformers import AutoModelForCausalLM

from modeling.data import TextDataModule
from modeling.module import CausalLMModule, ScratchModelConfig


def train_checkpoint(root: Path, tokenizer_dir: Path, shards_dir: Path, block_size: int = 32,
                     document_mask: bool = False) -> Path:
    """Two optimizer steps of a 2-layer GPT-2 through the real module and data module, saved as a ``.ckpt``
    (which records ``data.tokenizer``, ``data.block_size`` and ``model.document_mask``, as a training run's
    checkpoint does)."""
    data = TextDataModule(
        tokenizer=str(tokenizer_dir),
        path=str(shards_dir),
        block_size=block_size,
        batch_size=4,
        cache_dir=str(root / "token-cache"),
    )
    module = CausalLMModule(
        scratch=ScratchModelConfig(
            arch="gpt2", hidden_size=32, num_layers=2, num_heads=2, max_position_embeddings=64
        ),
        vocab_size=data.vocab_size,
        document_mask=document_mask,
        eos_token_id=data.tokenizer.eos_token_id if document_mask else None,  # what the CLI links
    )
    trainer = pl.Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    trainer.fit(module, datamodule=data)
    path = root / ("tiny-masked.ckpt" if document_mask else "tiny.ckpt")
    trainer.save_checkpoint(path)
    return path


def save_adapter(root: Path, base_dir: Path) -> Path:
    """A LoRA adapter on ``base_dir`` with non-zero weights (a fresh adapter is the identity, which would
    hide a loader that forgot to apply it); ``adapter_config.json`` names the base by its absolute path."""
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    config = peft.LoraConfig(
        task_type=peft.TaskType.CAUSAL_LM, r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True
    )
    model = peft.get_peft_model(base, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    out = root / "adapter"
    model.save_pretrained(out)
    return out


def build_forms(root: Path, tokenizer_dir: Path, shards_dir: Path, gpt2_dir: Path) -> dict[str, Path]:
    """The three model forms every command must open: a Lightning .ckpt, an HF directory, a PEFT adapter."""
    return {
        "ckpt": train_checkpoint(root, tokenizer_dir, shards_dir),
        "hf": gpt2_dir,
        "adapter": save_adapter(root, gpt2_dir),
    }
