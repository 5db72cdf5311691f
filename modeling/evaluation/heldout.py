"""Held-out bits per byte during training: a Lightning callback, enabled from a train YAML::

    trainer:
      callbacks:
        - class_path: modeling.evaluation.heldout.HeldoutBitsPerByte
          init_args:
            data: data/heldout          # files, folders or globs (parquet, jsonl[.gz], txt)
            every_n_steps: 500
            max_docs: 200

Every ``every_n_steps`` optimizer steps it scores the held-out documents with ``modeling.evaluation.scoring``'s
:func:`score_blocks`, the function ``modeling.evaluate`` uses, over blocks packed as training packs them, and logs
``heldout/bpb``, ``heldout/ppl`` and ``heldout/acc`` beside the training curves. A module trained with
``--model.document_mask`` is scored with it (each document on its own, its first token not a target). ``val_ppl`` depends on the
tokenizer; ``heldout/bpb`` does not, so runs with different tokenizers can be compared on one chart.

Cheap by default: at most ``max_docs`` documents, tokenized and packed once and kept in memory, scored without
gradients in the trainer's precision. Under DDP only rank 0 scores (the documents are few): the other ranks go on
to their next step and wait for it in the gradient all-reduce, so nothing is all-reduced and no rank can hang in
a collective the others skip. Strategies that shard the weights (FSDP, DeepSpeed) need every rank in each forward
pass and are refused. With ``--model.compile`` the first scoring compiles the model once more for its shapes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy
from lightning.pytorch.utilities import rank_zero_info

from modeling.corpus import iter_text_batches, resolve_text_files
from modeling.evaluation.config import EvaluateError
from modeling.evaluation.scoring import score_blocks
from modeling.packing import Block, PackedBlocks
from modeling.tokenizer.load import load_tokenizer

log = logging.getLogger("modeling.train")


class HeldoutBitsPerByte(Callback):
    """Logs ``heldout/bpb``, ``heldout/ppl`` and ``heldout/acc`` on held-out documents every ``every_n_steps``."""

    def __init__(
        self,
        data: str | list[str],
        every_n_steps: int = 500,
        max_docs: int | None = 200,
        text_column: str = "text",
        batch_size: int = 4,
        block_size: int | None = None,
        tokenizer: str | None = None,
        prefix: str = "heldout",
    ) -> None:
        """
        Args:
            data: Held-out files, folders or globs (parquet, jsonl[.gz], txt): documents the run does not train on.
            every_n_steps: Score every this many optimizer steps (and never twice for one step).
            max_docs: Read at most this many documents (None: all); they are packed once and kept in memory.
            text_column: Column holding the documents.
            batch_size: Blocks per forward pass.
            block_size: Tokens per block; default the data module's ``block_size`` (training's).
            tokenizer: Tokenizer directory; default the data module's tokenizer (training's).
            prefix: Logged names are ``<prefix>/bpb``, ``<prefix>/ppl``, ``<prefix>/acc``.
        """
        super().__init__()
        if every_n_steps < 1 or batch_size < 1:
            raise EvaluateError(f"HeldoutBitsPerByte: every_n_steps and batch_size must be at least 1, got "
                                f"{every_n_steps} and {batch_size} (trainer.callbacks init_args)")
        self.data = [data] if isinstance(data, str) else list(data)
        self.every_n_steps = every_n_steps
        self.max_docs = max_docs
        self.text_column = text_column
        self.batch_size = batch_size
        self.block_size = block_size
        self.tokenizer_path = tokenizer
        self.prefix = prefix
        self._tokenizer = None
        self._files: list[Path] = []
        self._blocks: list[Block] | None = None
        self._last_step = -1

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check everything that can be checked before training starts (files, tokenizer, strategy)."""
        if stage != "fit":
            return
        strategy = trainer.strategy
        if trainer.world_size > 1 and (not isinstance(strategy, DDPStrategy) or isinstance(strategy, DeepSpeedStrategy)):
            raise EvaluateError(
                f"HeldoutBitsPerByte scores on rank 0 alone, which {type(strategy).__name__} cannot do (every rank "
                "takes part in each forward pass): use trainer.strategy ddp, or drop the callback and run "
                "python -m modeling.evaluate on the checkpoints"
            )
        self._files = resolve_text_files(self.data, self.text_column, "the callback's init_args.text_column")
        datamodule = getattr(trainer, "datamodule", None)
        if self.tokenizer_path is not None:
            self._tokenizer = load_tokenizer(self.tokenizer_path, "HeldoutBitsPerByte init_args.tokenizer",
                                             error=EvaluateError)
        else:
            self._tokenizer = getattr(datamodule, "tokenizer", None)
        self.block_size = self.block_size or getattr(datamodule, "block_size", None)
        if self._tokenizer is None or self.block_size is None:
            raise EvaluateError("HeldoutBitsPerByte needs a tokenizer and a block size: set its init_args "
                                "tokenizer and block_size, or train with modeling.data.TextDataModule")
        if not getattr(self._tokenizer, "is_fast", False):
            raise EvaluateError("HeldoutBitsPerByte needs a fast tokenizer (tokenizer.json) for byte offsets; "
                                f"{type(self._tokenizer).__name__} has none: set init_args.tokenizer to one")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: object,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps or step == self._last_step:
            return  # with gradient accumulation several batches end on one optimizer step
        self._last_step = step
        if not trainer.is_global_zero:
            return
        metrics = {f"{self.prefix}/{k}": v for k, v in self.score(trainer, pl_module).items()}
        # Straight to the loggers at this step, as the throughput monitor does: `pl_module.log` from this hook
        # would repeat the value on the next step's row.
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def score(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """bpb, ppl and acc of the module's model on the held-out blocks now (the model's mode is restored)."""
        tok = self._tokenizer
        if self._blocks is None:
            texts = iter_text_batches(self._files, self.text_column, max_docs=self.max_docs)
            packed = PackedBlocks(texts, tok, self.block_size)
            self._blocks = list(packed.blocks(with_bytes=True))
            rank_zero_info(f"held-out bpb: {packed.docs} documents, {len(self._blocks)} blocks of {self.block_size}")
            if not self._blocks:
                raise EvaluateError(f"HeldoutBitsPerByte: no documents in column {self.text_column!r} of "
                                    f"{[str(f) for f in self._files[:3]]}")
        model = pl_module.model
        was_training = model.training
        model.eval()
        try:
            with trainer.precision_plugin.forward_context():
                pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
                # the module's own --model.document_mask: held-out documents are scored as training scores them
                scores = score_blocks(model, self._blocks, pad, self.batch_size, log_every=10**9,
                                      document_mask=bool(getattr(pl_module, "document_mask", False)),
                                      eos_token_id=tok.eos_token_id)
        finally:
            model.train(was_training)
        return {"bpb": scores.bits_per_byte, "ppl": scores.perplexity, "acc": scores.next_token_accuracy}
