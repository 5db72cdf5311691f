"""Stop a training run cleanly on SIGTERM or SIGINT: save ``last.ckpt`` at the step reached, then exit non-zero.

A SIGTERM comes from ``docker stop``, a Kubernetes eviction or a scheduler, usually with a grace period of tens of
seconds before SIGKILL; a SIGINT from Ctrl-C. Either way the work since the last periodic checkpoint would be lost.
:class:`PreemptionCheckpoint` (added to every ``modeling.train fit`` run) builds on Lightning's own SIGTERM handling
rather than replacing it: Lightning's handler sets ``trainer.received_sigterm`` (and, under DDP, broadcasts it and
raises ``SIGTERMException`` on every rank at the next batch). This callback

* at the end of the step in progress, when ``received_sigterm`` (or its own SIGINT flag) is set, saves the
  checkpoint through the run's ``last.ckpt`` name (what ``--ckpt_path last`` resumes from) and raises
  :class:`TrainingPreempted`;
* when Lightning raised ``SIGTERMException`` first (a signal during validation, or under DDP, where Lightning
  stops all ranks together), saves in ``on_exception`` instead.

``python -m modeling.train`` then prints one line (where the checkpoint is, how to resume) and exits 128 + the
signal number: 143 for SIGTERM, 130 for SIGINT. SIGUSR1 (SLURM's requeue signal, which Lightning's SLURMEnvironment
handles by saving ``hpc_ckpt_N.ckpt`` and requeueing) is left alone. A second Ctrl-C stops at once, as before.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException


class TrainingPreempted(Exception):
    """A run stopped by a signal after saving a resumable checkpoint; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, step: int, checkpoint: str) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum
        super().__init__(
            f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint saved to {checkpoint}; "
            "resume by running the same command with --ckpt_path last"
        )


class PreemptionCheckpoint(Callback):
    """On SIGTERM or SIGINT during ``fit``: save ``last.ckpt`` at the step reached and stop (see the module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.preempted: TrainingPreempted | None = None
        self._sigint = False
        self._previous_sigint: Any = None

    # ------------------------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # After Lightning registered its handlers (it restores the originals, ours included, at teardown).
        # Under DDP a Ctrl-C reaches the ranks at different batches; keep Lightning's KeyboardInterrupt path there.
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # Under DDP the ranks may see the signal at different batches: Lightning broadcasts it at the next batch
        # start and raises SIGTERMException on all ranks together, and on_exception saves then.
        if trainer.world_size > 1 or not (trainer.received_sigterm or self._sigint):
            return
        raise self._save(trainer, signal.SIGTERM if trainer.received_sigterm else signal.SIGINT)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and self.preempted is None:
            self._save(trainer, signal.SIGTERM)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    # ---------------------------------------------------------------------------------- helpers
    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._sigint:  # the second Ctrl-C: the usual immediate stop, without a checkpoint
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self._sigint = True
        print("\nSIGINT: saving a checkpoint at the end of this step (Ctrl-C again to stop at once)", flush=True)

    def _save(self, trainer: Trainer, signum: int) -> TrainingPreempted:
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        self.preempted = TrainingPreempted(signum, trainer.global_step, path)
        return self.preempted


def last_checkpoint_path(trainer: Trainer) -> str:
    """Where the run's ``last.ckpt`` goes: the folder and name of the ModelCheckpoint that saves it (the periodic
    one by default), else ``<log_dir>/checkpoints/last.ckpt``."""
    savers = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.save_last]
    if savers and savers[0].dirpath:
        saver = savers[0]
        metrics = {**trainer.callback_metrics, "step": torch.tensor(trainer.global_step),
                   "epoch": torch.tensor(trainer.current_epoch)}
        return saver.format_checkpoint_name(metrics, filename=saver.CHECKPOINT_NAME_LAST)
    return str(Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / f"last{os.extsep}ckpt")
