"""Train, validate or test a causal LM: ``python -m modeling.train fit|validate|test --config FILE``.

Usage::

    # a 2-layer GPT-2 on CPU in well under a minute (the demo, and what the tests run)
    python -m modeling.train fit --config configs/train/tiny-cpu.yaml \
        --data.path data/curated --data.tokenizer out/tokenizer
    # resume the newest checkpoint of this experiment exactly (step, optimizer, schedule, data position)
    python -m modeling.train fit --config configs/train/tiny-cpu.yaml --ckpt_path last
    # a separate experiment: its own folder, its own --ckpt_path last
    python -m modeling.train fit --config configs/train/tiny-cpu.yaml --name tiny-bs32 --data.block_size 32
    # several GPUs / nodes; any YAML key can be overridden on the command line
    python -m modeling.train fit --config configs/train/gpt2-scratch.yaml --trainer.devices 8 --trainer.strategy ddp
    python -m modeling.train validate --config configs/train/tiny-cpu.yaml --ckpt_path best
    # held-out documents, never the validation split: heldout/ of a curation output, or --data.test_path
    python -m modeling.train test --config configs/train/tiny-cpu.yaml --ckpt_path best --data.test_path data/heldout
    python -m modeling.train fit --config configs/train/tiny-cpu.yaml --print_config   # resolved config
    # torch.compile the model and loss; MFU against a given peak for a GPU modeling/peak_flops.py does not know
    python -m modeling.train fit --config configs/train/gpt2-scratch.yaml --model.compile true \
        --throughput.peak_flops 989e12

Each run is ``<trainer.default_root_dir>/<name>/version_N/`` (``--name``: the experiment, by default the config
file's name), whatever the logger: ``config.yaml``, ``checkpoints/`` (best-k by ``val_loss``, the latest step
checkpoints, ``last.ckpt``), ``hf/`` (the best model in Hugging Face format, or the LoRA adapter) and the loggers'
files. ``--ckpt_path last`` resumes the newest checkpoint of the experiment in its own folder, and refuses one
whose data, tokenizer, block size or model differ (``modeling.runs``).

SIGTERM (``docker stop``, an eviction, a scheduler) or Ctrl-C during ``fit`` saves ``last.ckpt`` at the step reached
and exits 143 or 130 with one line naming the checkpoint; ``--ckpt_path last`` continues from it
(``modeling.preemption``). SLURM's SIGUSR1 stays Lightning's (``hpc_ckpt_N.ckpt`` in the run folder and a requeue).
"""

from __future__ import annotations

import csv
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    ProgressBar,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter as CSVExperimentWriter
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from common.errors import run_main
from common.files import InputError
from modeling import preflight
from modeling.data import TextDataModule
from modeling.export import HFExportCallback
from modeling.module import CausalLMModule, ModelConfigError
from modeling.peak_flops import device_peak_flops, matmul_precision
from modeling.preemption import PreemptionCheckpoint, TrainingPreempted
from modeling.runs import (
    DEFAULT_NAME,
    RunConfigSaver,
    RunDir,
    RunIdentity,
    best_checkpoint,
    check_name,
    latest_resume_checkpoint,
    new_run,
    run_of_checkpoint,
    versions,
)


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


class StepProgressBar(RichProgressBar if _RICH_AVAILABLE else TQDMProgressBar):  # type: ignore[misc]
    """Lightning's progress bar, showing the optimizer step against ``max_steps``; a step-bounded run has
    ``max_epochs=-1``, which the stock bar prints as "Epoch 0/-2"."""

    def _get_train_description(self, current_epoch: int) -> str:
        epochs = self.trainer.max_epochs
        return f"Epoch {current_epoch}" + (f"/{epochs - 1}" if epochs is not None and epochs > 0 else "")

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        if trainer.max_steps and trainer.max_steps > 0:
            metrics = {"step": f"{trainer.global_step}/{trainer.max_steps}", **metrics}
        metrics.pop("v_num", None)  # the run folder is printed at the start: "run: .../version_N"
        return metrics


class TrainCLI(LightningCLI):
    """Adds the run layout (``modeling.runs``), the default callbacks and the ``tokenizer -> model`` links
    (vocab size, eos)."""

    run: RunDir | None = None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--name", type=str | None, default=None,
            help="Experiment name: runs go to <trainer.default_root_dir>/<name>/version_N/ whatever the logger, "
                 "and --ckpt_path last|best look in this experiment only (default: the --config file's name, "
                 f"else {DEFAULT_NAME!r})")
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.eos_token_id", "model.eos_token_id", apply_on="instantiate")
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
            # as HF's EarlyStoppingCallback(early_stopping_patience=3), counted in validation runs
            "early_stopping.monitor": "val_loss", "early_stopping.mode": "min", "early_stopping.patience": 3,
            "lr_monitor.logging_interval": "step",
        })

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then refuse a ``--ckpt_path`` that is no checkpoint of this trainer before anything is built (and
        before Lightning reads the checkpoint's hyperparameters into the model options)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand, self.config) if subcommand else self.config
        self.config_ckpt_given = config.get("ckpt_path")
        self._checkpoint_hparams = preflight.check_ckpt_path(self.config_ckpt_given)

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        self.run = self._place_run(config)
        loggers = config.get("trainer", {}).get("logger")
        names = [str(getattr(lg, "class_path", lg)) for lg in (loggers if isinstance(loggers, list) else [loggers])]
        if any("Wandb" in n for n in names) and not _wandb_key_configured():
            # W&B without credentials would stop the run to ask for a key; record locally instead (`wandb sync`).
            os.environ.setdefault("WANDB_MODE", "offline")
            rank_zero_info("W&B: no API key configured, logging offline (upload later with `wandb sync`)")

    def _place_run(self, config: Any) -> RunDir:
        """Resolve ``--ckpt_path last|best``, pick the run folder and point checkpoints, export, config and
        loggers at it (see ``modeling.runs``)."""
        trainer = config["trainer"]
        # the root before the run folder is made in it; the other trainer options after the model's and the data's
        # (whose messages say more: QLoRA on a CPU names the QLoRA config, not the accelerator)
        preflight.check_trainer_options({"default_root_dir": trainer.get("default_root_dir")})
        root = Path(trainer.get("default_root_dir") or "runs").expanduser()
        name = check_name(config.get("name") or _config_stem(config) or DEFAULT_NAME)
        config["name"] = name
        ckpt = config.get("ckpt_path")
        if ckpt == "last":
            found = latest_resume_checkpoint(root, name)
            rank_zero_info(f"--ckpt_path last: resuming {found}" if found else
                           f"--ckpt_path last: experiment {name!r} has no checkpoint under {root / name}/ yet, "
                           "starting from scratch")
            ckpt = config["ckpt_path"] = str(found) if found else None
        elif ckpt == "best" and self.subcommand != "fit":
            ckpt = config["ckpt_path"] = str(best_checkpoint(root, name, config["checkpoint"]["monitor"]))
            rank_zero_info(f"--ckpt_path best: {ckpt}")
        if config.get("ckpt_path") != self.config_ckpt_given:  # resolved from last/best: check it as a given file
            self._checkpoint_hparams = preflight.check_ckpt_path(ckpt)
        if self.subcommand in ("validate", "test") and not ckpt:
            model = config["model"]
            if model.get("pretrained") is None:
                raise ModelConfigError(
                    f"{self.subcommand} without --ckpt_path would score a randomly initialised model "
                    f"(--model.scratch): pass --ckpt_path best or last (of experiment {name!r}) or a .ckpt file")
            rank_zero_info(f"{self.subcommand}: no --ckpt_path, scoring --model.pretrained {model['pretrained']} "
                           "as it is")

        resumed = run_of_checkpoint(root, name, ckpt) if self.subcommand == "fit" and ckpt else None
        if resumed is not None:
            run = resumed
            # Lightning warns that the checkpoint folder is not empty: it is the run's own, being continued.
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        else:
            # Only the first process makes the folder. The others (DDP ranks) may compute another version number
            # if they start after it, but never write there: Lightning broadcasts rank 0's checkpoint and log
            # folders, and only rank 0 writes the config, the export and the logs.
            run = new_run(root, name, create=_is_first_process())
        if _is_first_process():
            earlier = [v for v in versions(root, name) if v != run.version]
            rank_zero_info(f"run: {run.path}" + (" (continuing it)" if resumed else "")
                           + (f"; experiment {name!r} also has version_{earlier[0]}..{earlier[-1]}"
                              if earlier and not ckpt and self.subcommand == "fit" else ""))

        trainer["default_root_dir"] = str(run.path)  # Lightning's own fallbacks (SLURM hpc_ckpt_N.ckpt) land here
        for key in ("checkpoint", "periodic_checkpoint"):
            if config[key].get("dirpath") is None:
                config[key]["dirpath"] = str(run.checkpoints)
        if config["export"].get("dirpath") is None:
            config["export"]["dirpath"] = str(run.path / "hf")
        trainer["logger"] = _loggers_in(trainer.get("logger"), run)
        self.save_config_kwargs = {**self.save_config_kwargs, "run_dir": run.path}
        return run

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, after the model and data options passed their checks (theirs say more: QLoRA on a CPU),
        with the step progress bar unless the config has a progress bar of its own or none."""
        trainer_config = self._get(self.config_init, "trainer", default={})
        preflight.check_trainer_options({**trainer_config, **kwargs})
        callbacks = trainer_config.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        if trainer_config.get("enable_progress_bar") is not False and not any(
                isinstance(cb, ProgressBar) for cb in callbacks):
            kwargs.setdefault("callbacks", [*callbacks, StepProgressBar()])
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
        config = self.config_init[self.subcommand]
        # first: a refused resume must stop before any other callback writes into the run folder
        self.trainer.callbacks.insert(0, RunIdentity(resume_from=config.get("ckpt_path")))
        self.trainer.callbacks.append(PreemptionCheckpoint())
        for logger in self.trainer.loggers if self.trainer.is_global_zero else []:  # the others log nothing
            if isinstance(logger, CSVLogger) and logger._experiment is None:
                logger._experiment = _AppendingCSVWriter(logger.log_dir)

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


class _AppendingCSVWriter(CSVExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv`` in its folder; a resumed run appends to it."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as fh:
                self.metrics_keys = next(csv.reader(fh), [])


def _loggers_in(value: Any, run: RunDir) -> Any:
    """The configured loggers, writing into ``run``: TensorBoard and CSV as ``<root>/<name>/version_N``, W&B
    with its files in the run folder; ``True`` (Lightning's default) is a TensorBoard logger there."""
    if value is False:
        return value
    if value is None or value is True:
        value = Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger", init_args=Namespace())
    for logger in value if isinstance(value, list) else [value]:
        args = getattr(logger, "init_args", None)
        class_path = str(getattr(logger, "class_path", ""))
        if args is None:
            continue
        if class_path.endswith(("TensorBoardLogger", "CSVLogger")):
            args["save_dir"], args["name"], args["version"] = str(run.root), run.name, f"version_{run.version}"
        elif class_path.endswith("WandbLogger"):
            args["save_dir"] = str(run.path)
            if args.get("name") is None:
                args["name"] = f"{run.name}/version_{run.version}"
    return value


def _config_stem(config: Any) -> str | None:
    """The name of the (last) ``--config`` file: configs/train/gpt2-scratch.yaml runs as experiment gpt2-scratch."""
    files = config.get("config") or []
    path = files[-1] if files else None
    return Path(str(getattr(path, "relative", path))).stem if path else None


def _is_first_process() -> bool:
    """Rank 0 of a launcher (torchrun, SLURM, Lightning's own DDP launcher, which starts the other ranks as
    children with LOCAL_RANK set), or a plain process: the one that creates the run folder."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


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
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"default_root_dir": "runs"},
        parser_kwargs={"prog": "python -m modeling.train"},  # in usage and hints, not "train.py"
        auto_configure_optimizers=False,
    )


def run_command(args: list[str] | None = None) -> int:
    """``python -m modeling.train``: a configuration or input the run cannot use is one line on stderr, exit 2; a run
    stopped by SIGTERM or SIGINT after saving its checkpoint is one line too, exit 143 or 130."""
    def run() -> None:
        main(args)

    try:
        return run_main(run)  # one line, even where the message quotes a library's multi-line error
    except TrainingPreempted as stop:
        print(stop, file=sys.stderr)
        return stop.exit_code


if __name__ == "__main__":
    raise SystemExit(run_command())
