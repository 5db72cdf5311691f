"""Train, validate or test a causal LM: ``python -m modeling.train fit|validate|test --config FILE``.

Usage::

    # a 2-layer GPT-2 on CPU in well under a minute (the demo, and what the tests run)
    python -m modeling.train fit --config configs/train/tiny-cpu.yaml \
        --data.path data/curated --data.tokenizer out/tokenizer
    # resume exactly where the last checkpoint left off (step, optimizer, schedule, data position)
    python -m modeling.train fit --config configs/train/tiny-cpu.yaml --ckpt_path last
    # several GPUs / nodes; any YAML key can be overridden on the command line
    python -m modeling.train fit --config configs/train/gpt2-scratch.yaml --trainer.devices 8 --trainer.strategy ddp
    python -m modeling.train validate --config configs/train/tiny-cpu.yaml --ckpt_path runs/tiny/.../best.ckpt
    python -m modeling.train fit --config configs/train/tiny-cpu.yaml --print_config   # resolved config
    # torch.compile the model and loss; MFU against a given peak for a GPU modeling/peak_flops.py does not know
    python -m modeling.train fit --config configs/train/gpt2-scratch.yaml --model.compile true \
        --throughput.peak_flops 989e12

Each run directory (``<trainer.default_root_dir>/<logger name>/version_N``) keeps ``config.yaml`` (the config it
ran with), ``checkpoints/`` (best-k by ``val_loss``, the latest step checkpoints, ``last.ckpt``) and ``hf/`` (the
best model in Hugging Face format, or the LoRA adapter).

SIGTERM (``docker stop``, an eviction, a scheduler) or Ctrl-C during ``fit`` saves ``last.ckpt`` at the step reached
and exits 143 or 130 with one line naming the checkpoint; ``--ckpt_path last`` continues from it
(``modeling.preemption``). SLURM's SIGUSR1 stays Lightning's (``hpc_ckpt_N.ckpt`` and a requeue).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from curation.paths import InputError
from modeling import preflight
from modeling.data import DataConfigError, TextDataModule
from modeling.export import HFExportCallback, ModelLoadError
from modeling.module import CausalLMModule, ModelConfigError
from modeling.peak_flops import device_peak_flops, matmul_precision
from modeling.preemption import PreemptionCheckpoint, TrainingPreempted


class TokenThroughputMonitor(Callback):
    """Training tokens/s and model FLOPs utilization, measured over windows of ``log_every_n_steps`` steps.

    Lightning's ThroughputMonitor synchronizes the GPU after every batch, which stops the CPU from queueing the
    next step while the GPU works (a loss of up to ~10-20% for mid-sized models); this one synchronizes only at
    the edges of each logging window. Logged: ``train/tokens_per_sec`` (all devices),
    ``train/tokens_per_sec_per_device``, ``train/tokens`` (seen so far) and ``train/mfu`` (the module's
    ``flops_per_batch`` against one device's dense peak FLOP/s: ``modeling.peak_flops``'s table, or ``peak_flops``).
    """

    def __init__(self, every_n_steps: int | None = None, peak_flops: float | None = None) -> None:
        """
        Args:
            every_n_steps: Window length in optimizer steps; default ``trainer.log_every_n_steps``.
            peak_flops: Peak FLOP/s of one device for MFU, e.g. 989e12; default: the dense figure of
                ``modeling.peak_flops`` for the device and the trainer's precision (set it for a device the table
                does not know, or to measure against a measured peak).
        """
        super().__init__()
        self.every_n_steps = every_n_steps
        self.peak_flops = peak_flops
        self._peak_flops: float | None = None
        self._t0 = 0.0
        self._tokens = self._window_tokens = 0
        self._window_flops = 0.0
        self._window_start_step = 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        device = trainer.strategy.root_device
        self._peak_flops = self.peak_flops or device_peak_flops(device, str(trainer.precision))
        if self._peak_flops:
            source = "--throughput.peak_flops" if self.peak_flops else (
                f"{torch.cuda.get_device_name(device)}, dense {matmul_precision(str(trainer.precision))}")
            rank_zero_info(f"throughput: MFU against {self._peak_flops / 1e12:,.1f} TFLOP/s per device ({source})")
        elif device.type == "cuda":
            rank_zero_info(f"throughput: no peak FLOP/s known for {torch.cuda.get_device_name(device)} at "
                           f"{trainer.precision}, so no train/mfu; set --throughput.peak_flops to get it")
        self._restart_window(trainer)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        tokens = int(batch["input_ids"].numel())
        self._window_tokens += tokens
        self._tokens += tokens * trainer.world_size
        self._window_flops += float(getattr(pl_module, "flops_per_batch", None) or 0)
        steps = trainer.global_step - self._window_start_step
        if steps < (self.every_n_steps or trainer.log_every_n_steps) or trainer.fit_loop._should_accumulate():
            return
        _synchronize(trainer)
        seconds = time.perf_counter() - self._t0
        per_device = self._window_tokens / seconds
        metrics = {"train/tokens_per_sec_per_device": per_device,
                   "train/tokens_per_sec": per_device * trainer.world_size, "train/tokens": float(self._tokens)}
        if self._peak_flops and self._window_flops:
            metrics["train/mfu"] = self._window_flops / seconds / self._peak_flops
        if trainer.is_global_zero:  # straight to the loggers: the window need not line up with log_every_n_steps
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
        self._restart_window(trainer)

    def _restart_window(self, trainer: Trainer) -> None:
        _synchronize(trainer)
        self._t0 = time.perf_counter()
        self._window_tokens, self._window_flops = 0, 0.0
        self._window_start_step = trainer.global_step


def _synchronize(trainer: Trainer) -> None:
    if trainer.strategy.root_device.type == "cuda":
        torch.cuda.synchronize(trainer.strategy.root_device)


class TrainCLI(LightningCLI):
    """Links the tokenizer's size into the model config and adds the default callbacks; nothing else."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "periodic_checkpoint")
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(TokenThroughputMonitor, "throughput")
        parser.add_lightning_class_args(HFExportCallback, "export")
        parser.set_defaults({
            # best-k by validation loss; `trainer.checkpoint_callback` (and ckpt_path=best) is this one
            "checkpoint.monitor": "val_loss", "checkpoint.mode": "min", "checkpoint.save_top_k": 2,
            "checkpoint.filename": "best-{step}-{val_loss:.4f}", "checkpoint.auto_insert_metric_name": False,
            # every N optimizer steps: last.ckpt (for --ckpt_path last) and the latest k step checkpoints
            "periodic_checkpoint.every_n_train_steps": 500, "periodic_checkpoint.save_last": True,
            "periodic_checkpoint.monitor": "step", "periodic_checkpoint.mode": "max",
            "periodic_checkpoint.save_top_k": 2, "periodic_checkpoint.filename": "step-{step}",
            "periodic_checkpoint.auto_insert_metric_name": False,
            # the seed's EarlyStoppingCallback(early_stopping_patience=3), counted in validation runs
            "early_stopping.monitor": "val_loss", "early_stopping.mode": "min", "early_stopping.patience": 3,
            "lr_monitor.logging_interval": "step",
        })

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then refuse a ``--ckpt_path`` that is no checkpoint of this trainer before anything is built (and
        before Lightning reads the checkpoint's hyperparameters into the model options)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand, self.config) if subcommand else self.config
        self._checkpoint_hparams = preflight.check_ckpt_path(config.get("ckpt_path"))

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        if config.get("ckpt_path") == "last":
            config["ckpt_path"] = _latest_last_checkpoint(Path(config["trainer"]["default_root_dir"] or "."))
        loggers = config.get("trainer", {}).get("logger")
        names = [str(getattr(lg, "class_path", lg)) for lg in (loggers if isinstance(loggers, list) else [loggers])]
        if any("Wandb" in n for n in names) and not _wandb_key_configured():
            # W&B without credentials would stop the run to ask for a key; record locally instead (`wandb sync`).
            os.environ.setdefault("WANDB_MODE", "offline")
            rank_zero_info("W&B: no API key configured, logging offline (upload later with `wandb sync`)")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, after the model and data options passed their checks (theirs say more: QLoRA on a CPU)."""
        preflight.check_trainer_options({**self._get(self.config_init, "trainer", default={}), **kwargs})
        try:
            return super().instantiate_trainer(**kwargs)
        except MisconfigurationException as err:  # Lightning's word for trainer arguments that cannot work here
            raise InputError(f"--trainer: {err}") from err

    def after_instantiate_classes(self) -> None:
        """Checks that need the tokenizer and the model options, before the data is tokenized or a model built."""
        if isinstance(self.model, CausalLMModule) and isinstance(self.datamodule, TextDataModule):
            preflight.check_block_fits(self.model, self.datamodule)
            preflight.check_checkpoint_tokenizer(self._checkpoint_hparams, self.datamodule)

    def before_fit(self) -> None:
        if not self.trainer.loggers:
            # `--trainer.logger false` (benchmarks, quick checks): the LR monitor would refuse to start
            self.trainer.callbacks = [c for c in self.trainer.callbacks if not isinstance(c, LearningRateMonitor)]
        self.trainer.callbacks.append(PreemptionCheckpoint())

    def fit(self, **kwargs: Any) -> None:
        """``trainer.fit``; a run stopped by SIGTERM/SIGINT after saving its checkpoint raises TrainingPreempted."""
        try:
            self.trainer.fit(**kwargs)
        except SIGTERMException as err:  # Lightning stopped first (validation, DDP); the callback saved on the way
            preempted = next((cb.preempted for cb in self.trainer.callbacks
                              if isinstance(cb, PreemptionCheckpoint) and cb.preempted), None)
            if preempted is None:
                raise
            raise preempted from err


def _latest_last_checkpoint(root: Path) -> str | None:
    """``--ckpt_path last``: the newest ``last.ckpt`` (or SLURM ``hpc_ckpt_N.ckpt``) under ``trainer.default_root_dir``.

    Lightning alone looks only in the new run's own (empty) version folder; a restarted job wants the previous
    run's. None (a fresh start, with a notice) when there is none yet, as for a first launch of a requeued job.
    """
    # hpc_ckpt_N.ckpt: what Lightning saves when SLURM preempts a job (SIGUSR1); newer than last.ckpt then
    candidates = [*root.rglob("last*.ckpt"), *root.rglob("hpc_ckpt_*.ckpt")] if root.is_dir() else []
    found = sorted(candidates, key=lambda p: p.stat().st_mtime)
    if not found:
        rank_zero_info(f"--ckpt_path last: no last.ckpt under {root}/ yet, starting from scratch")
        return None
    rank_zero_info(f"--ckpt_path last: resuming from {found[-1]}")
    return str(found[-1])


def _wandb_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="replace")


def main(args: list[str] | None = None, run: bool = True) -> TrainCLI:
    """Build the CLI (and run its subcommand); ``args`` replaces ``sys.argv[1:]`` (tests and notebooks call this
    directly, and get the exceptions)."""
    return TrainCLI(
        CausalLMModule,
        TextDataModule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"default_root_dir": "runs"},
        parser_kwargs={"prog": "python -m modeling.train"},  # in usage and hints, not "train.py"
        auto_configure_optimizers=False,
    )


def run_command(args: list[str] | None = None) -> int:
    """``python -m modeling.train``: a configuration or input the run cannot use is one line on stderr, exit 2; a run
    stopped by SIGTERM or SIGINT after saving its checkpoint is one line too, exit 143 or 130."""
    try:
        main(args)
    except (ModelConfigError, DataConfigError, ModelLoadError, InputError) as err:
        # one line, even where the message quotes a library's multi-line error
        print("error: " + re.sub(r"\s*\n\s*", " ", str(err).strip()), file=sys.stderr)
        return 2
    except TrainingPreempted as stop:
        print(stop, file=sys.stderr)
        return stop.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command())
