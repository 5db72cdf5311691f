"""Checks of a training run's options and inputs before anything is built, each failing with one line that names
the flag of ``python -m modeling.train`` to change (``--ckpt_path``, ``--trainer.accelerator``, ...).

``TrainCLI`` calls them where the values are known: the ``--ckpt_path`` right after parsing (before Lightning reads
the checkpoint's hyperparameters), the trainer options before the trainer is built, the block size and the
checkpoint's tokenizer once the model and data options are (before any data is tokenized). The options of the
model and the data module are checked by those classes themselves (``ModelConfigError``, ``DataConfigError``).
"""

from __future__ import annotations

import inspect
import pickle
import re
from pathlib import Path
from typing import Any

from lightning.pytorch.accelerators import AcceleratorRegistry, CUDAAccelerator, MPSAccelerator
from lightning.pytorch.strategies import StrategyRegistry
from transformers import AutoConfig

from common.files import InputError
from modeling.data import TextDataModule
from modeling.export import ModelLoadError, load_checkpoint
from modeling.module import CausalLMModule, ModelConfigError


def check_trainer_options(trainer: dict[str, Any]) -> None:
    """Trainer options that would stop Lightning with a traceback, as one line naming the flag."""
    accelerator = trainer.get("accelerator")
    if isinstance(accelerator, str):
        name, known = accelerator, AcceleratorRegistry.available_accelerators()
        if name not in {*known, "auto", "gpu"}:
            raise InputError(f"--trainer.accelerator {accelerator!r} is not an accelerator: use auto, cpu, gpu, "
                             f"{', '.join(sorted(known - {'cpu'}))}")
        usable = (CUDAAccelerator.is_available() or MPSAccelerator.is_available() if name == "gpu" else
                  name in ("auto", "cpu") or AcceleratorRegistry[name]["accelerator"].is_available())
        if not usable:
            raise InputError(f"--trainer.accelerator {accelerator}: this machine has no such device that PyTorch can "
                             "use (for a GPU: torch.cuda.is_available() is False); use --trainer.accelerator cpu, or "
                             "auto to take a GPU where there is one")
    strategy = trainer.get("strategy")
    if isinstance(strategy, str) and strategy.lower() not in {"auto", *StrategyRegistry.available_strategies()}:
        names = sorted(n for n in StrategyRegistry.available_strategies() if "find_unused" not in n)
        raise InputError(f"--trainer.strategy {strategy!r} is not a strategy: use auto or one of {names} (ddp variants "
                         "also come as <name>_find_unused_parameters_true/false)")
    accumulate = trainer.get("accumulate_grad_batches")
    if isinstance(accumulate, int) and accumulate < 1:
        raise InputError(f"--trainer.accumulate_grad_batches must be at least 1 (batches per optimizer step), got "
                         f"{accumulate}")
    root = trainer.get("default_root_dir")
    if root and Path(root).expanduser().exists() and not Path(root).expanduser().is_dir():
        raise InputError(f"--trainer.default_root_dir {root!r} is a file: give a folder for the runs (it is created "
                         "if missing)")


#: ``--ckpt_path`` values that name a checkpoint for Lightning (or ``TrainCLI``, for ``last``) to find.
_CKPT_NAMES = ("last", "best", "hpc")


def check_ckpt_path(ckpt_path: str | None) -> dict[str, Any] | None:
    """Refuse a ``--ckpt_path`` that is not a checkpoint of this trainer's model; return its model hyperparameters.

    The file is opened memory-mapped, so the check reads little more than its hyperparameters.
    """
    if ckpt_path is None or ckpt_path in _CKPT_NAMES or str(ckpt_path).startswith("registry"):
        return None
    fix = ("give a .ckpt file that `python -m modeling.train fit` wrote (<run dir>/checkpoints/), or --ckpt_path "
           "last or best for the newest or best checkpoint of the experiment (--name)")
    path = Path(ckpt_path).expanduser()
    if not path.exists():
        raise ModelLoadError(f"--ckpt_path {ckpt_path!r}: no such file; {fix}")
    if path.is_dir():
        if any((path / marker).exists() for marker in ("meta.pt", ".metadata", "latest")):
            return None  # a sharded (FSDP, DeepSpeed) checkpoint is a folder: Lightning reads it
        found = sorted(str(f) for f in path.rglob("*.ckpt"))
        inside = f"one of the {len(found)} in it, e.g. {found[-3:]}" if found else "none is in it"
        raise ModelLoadError(f"--ckpt_path {ckpt_path!r} is a folder: give one checkpoint file ({inside}); {fix}")
    try:
        try:
            checkpoint = load_checkpoint(path, mmap=True)
        except RuntimeError as err:  # mmap needs torch.save's zip format: try an old-format file the plain way
            if "mmap" not in str(err):
                raise
            checkpoint = load_checkpoint(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ModelLoadError(f"--ckpt_path {ckpt_path!r} does not load as a checkpoint ({_load_failure(err)}); "
                             f"{fix}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ModelLoadError(f"--ckpt_path {ckpt_path!r} is not a Lightning checkpoint (no state_dict; a plain "
                             "state dict of weights?). To start from Hugging Face weights use --model.pretrained "
                             f"DIR instead; to resume, {fix}")
    hparams = checkpoint.get("hyper_parameters") or {}
    ours = set(inspect.signature(CausalLMModule.__init__).parameters) | {"_instantiator"}
    foreign = sorted(set(hparams) - ours)
    if foreign:
        raise ModelLoadError(f"--ckpt_path {ckpt_path!r} is a checkpoint of another model: its hyperparameters "
                             f"{foreign[:5]} are no options of this trainer's model; {fix}")
    tokenizer = (checkpoint.get("datamodule_hyper_parameters") or {}).get("tokenizer")
    return {**hparams, "ckpt_path": ckpt_path, "tokenizer": tokenizer}


def _load_failure(err: Exception) -> str:
    """The gist of a failed ``torch.load``, without its advice to load untrusted pickles."""
    text = str(err)
    if isinstance(err, EOFError):
        return "the file is empty or cut short"
    if isinstance(err, pickle.UnpicklingError):
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        return ("not a file torch.save wrote, or one holding objects that weights-only loading refuses"
                + (f": {detail.group(1).strip()}" if detail else ""))
    return text.split(". ")[0].strip()  # e.g. "PytorchStreamReader failed reading zip archive: ..."


def check_checkpoint_tokenizer(hparams: dict[str, Any] | None, data: TextDataModule) -> None:
    """A checkpoint trained with a tokenizer of another size cannot load: say so before the data is tokenized."""
    trained = (hparams or {}).get("vocab_size")
    if isinstance(trained, int) and trained != data.vocab_size:
        assert hparams is not None
        which = f" ({hparams['tokenizer']!r})" if hparams.get("tokenizer") else ""
        raise ModelLoadError(
            f"--ckpt_path {hparams['ckpt_path']!r} was trained with a tokenizer of {trained} tokens{which}, but "
            f"--data.tokenizer {data.tokenizer_path!r} has {data.vocab_size}: give the --data.tokenizer the "
            "checkpoint was trained with"
        )


def check_block_fits(model: CausalLMModule, data: TextDataModule) -> None:
    """``--data.block_size`` within the model's positions, known from the options (or the pretrained config.json)
    before any model is built; ``CausalLMModule.on_fit_start`` checks the built model again."""
    if model.scratch is not None:
        limit: int | None = model.scratch.max_position_embeddings
    else:
        try:
            config = AutoConfig.from_pretrained(model.pretrained)
        except (OSError, ValueError):
            return  # not readable here: loading the model reports it
        limit = next((v for k in ("n_positions", "max_position_embeddings")
                      if isinstance(v := getattr(config, k, None), int)), None)
    if limit is not None and data.block_size > limit:
        fix = ("raise --model.scratch.max_position_embeddings" if model.scratch is not None else
               "use a model with more positions")
        raise ModelConfigError(f"--data.block_size {data.block_size} is longer than the model's {limit} positions: "
                               f"lower --data.block_size, or {fix}")
