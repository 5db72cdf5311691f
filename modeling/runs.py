"""Where a training run lives, what ``--ckpt_path last`` and ``best`` mean, and whether a checkpoint may be resumed.

Every ``python -m modeling.train`` invocation is one run of an experiment, named by ``--name``::

    <trainer.default_root_dir>/<name>/version_N/
        config.yaml      the configuration it ran with (a resumed run keeps each earlier one as config.K.yaml)
        checkpoints/     best-k by val_loss, the latest step checkpoints, last.ckpt
        hf/              the best model in Hugging Face format (or the LoRA adapter)
        ...              the loggers' files: TensorBoard events, metrics.csv, wandb/

The folder is decided here, whatever the logger: TensorBoard and CSV loggers are pointed at it, W&B keeps its
files in it, and checkpoints, the export and the config go there even for loggers that keep nothing locally.
So two experiments never share a folder, a W&B run never overwrites another's ``hf/``, and ``--ckpt_path last``
looks in its own experiment only. A resumed ``fit`` continues in the folder of the checkpoint it resumes (its
best-k bookkeeping, early stopping and logs go on where they were); any other invocation gets the next version.

Each checkpoint also records the run's identity (:func:`run_identity`): the token data, the tokenizer, the block
size and the model. ``fit --ckpt_path X`` refuses a checkpoint whose identity differs from the new run's and names
each difference, so a resume can no longer silently continue another experiment's weights on other data.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info

from modeling.module import ModelConfigError

#: Checkpoint key holding :func:`run_identity`.
IDENTITY_KEY = "run_identity"
DEFAULT_NAME = "default"

_VERSION = re.compile(r"version_(\d+)")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Resume points: last.ckpt (periodic and preemption saves; last-vN.ckpt if Lightning had to version it) and
# hpc_ckpt_N.ckpt, which Lightning writes into trainer.default_root_dir (the run folder) when SLURM preempts a job.
_RESUME_GLOBS = ("version_*/checkpoints/last*.ckpt", "version_*/hpc_ckpt_*.ckpt")


class ResumeMismatchError(ModelConfigError):
    """``--ckpt_path`` names a checkpoint of a different run (data, tokenizer, block size or model)."""


@dataclass(frozen=True)
class RunDir:
    """One run: ``<root>/<name>/version_<version>``."""

    root: Path
    name: str
    version: int

    @property
    def path(self) -> Path:
        return self.root / self.name / f"version_{self.version}"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"


def check_name(name: str) -> str:
    """An experiment name becomes one folder: letters, digits, ``.``, ``_`` and ``-``."""
    if not _NAME.fullmatch(name):
        raise ModelConfigError(f"--name {name!r}: an experiment name is one folder name made of letters, digits, "
                               "'.', '_' and '-', starting with a letter or digit (e.g. --name gpt2-bs32)")
    return name


def versions(root: Path, name: str) -> list[int]:
    """Version numbers of the experiment's existing runs, ascending."""
    where = root / name
    if not where.is_dir():
        return []
    return sorted(int(m.group(1)) for p in where.iterdir() if p.is_dir() and (m := _VERSION.fullmatch(p.name)))


def new_run(root: Path, name: str, create: bool = True) -> RunDir:
    """The experiment's next run. With ``create``, its folder is made at once (atomically: two runs started
    together get different versions); processes other than the first of a run pass ``create=False``."""
    version = (versions(root, name) or [-1])[-1] + 1
    while create:
        run = RunDir(root, name, version)
        try:
            run.path.mkdir(parents=True, exist_ok=False)
            return run
        except FileExistsError:
            version += 1
    return RunDir(root, name, version)


def run_of_checkpoint(root: Path, name: str, ckpt: str | Path) -> RunDir | None:
    """The run of this experiment that ``ckpt`` belongs to (inside its folder), else None."""
    ckpt_path = Path(ckpt).resolve()
    base = (root / name).resolve()
    try:
        rel = ckpt_path.relative_to(base)
    except ValueError:
        return None
    match = _VERSION.fullmatch(rel.parts[0]) if len(rel.parts) > 1 else None
    return RunDir(root, name, int(match.group(1))) if match else None


def latest_resume_checkpoint(root: Path, name: str) -> Path | None:
    """``--ckpt_path last``: the newest ``last.ckpt`` or SLURM ``hpc_ckpt_N.ckpt`` of the experiment's runs."""
    where = root / name
    found = [p for pattern in _RESUME_GLOBS for p in where.glob(pattern)] if where.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def best_checkpoint(root: Path, name: str, monitor: str = "val_loss") -> Path:
    """``--ckpt_path best`` in a new process: the best checkpoint by ``monitor`` of the experiment's newest run
    (the run of :func:`latest_resume_checkpoint`).

    Each checkpoint records the best-k table of the ``monitor`` callback as it stood when it was written, so
    one file alone can be stale (``last.ckpt`` is written before the validation of the same step); the union of
    the tables of the run's checkpoints, restricted to files that still exist, is exact.
    """
    last = latest_resume_checkpoint(root, name)
    if last is None:
        raise ModelConfigError(f"--ckpt_path best: experiment {name!r} has no checkpoints under {root / name}/ "
                               "(train it first, pick it with --name, or give a .ckpt file)")
    from modeling.export import load_checkpoint

    scores: dict[str, float] = {}
    mode = "min"
    for ckpt in sorted(last.parent.glob("*.ckpt")):
        for key, state in (load_checkpoint(ckpt, mmap=True).get("callbacks") or {}).items():
            if isinstance(state, dict) and state.get("monitor") == monitor:
                mode = "max" if "'mode': 'max'" in str(key) else "min"
                for path, score in (state.get("best_k_models") or {}).items():
                    if Path(path).is_file():
                        scores[str(path)] = float(score)
    if not scores:
        raise ModelConfigError(f"--ckpt_path best: the checkpoints in {last.parent} record no best checkpoint by "
                               f"{monitor} (no validation ran yet?); pass --ckpt_path last or a .ckpt file")
    pick = min if mode == "min" else max
    return Path(pick(scores, key=lambda path: scores[path]))


# ------------------------------------------------------------------------------------------------ identity
def run_identity(module: LightningModule, datamodule: Any) -> dict[str, Any]:
    """What decides whether a checkpoint can be continued by this run: the token data (content hash, split),
    the tokenizer, the block size and the model's architecture. Batch size, device count, optimizer and
    run length may change on resume; these may not."""
    identity: dict[str, Any] = {}
    fingerprint = getattr(datamodule, "fingerprint", None)
    if callable(fingerprint):
        identity.update(fingerprint())
    hf_config = getattr(module, "hf_config", None)
    config = hf_config() if callable(hf_config) else None  # before the model exists: the check precedes loading
    if config is not None:
        skip = {"transformers_version", "_name_or_path", "torch_dtype", "dtype", "use_cache", "architectures",
                "bos_token_id", "eos_token_id", "pad_token_id", "_attn_implementation_autoset"}
        # dropout rates may change on resume (they shape no weight); everything else here decides the weights
        identity["model"] = {k: v for k, v in sorted(config.to_dict().items())
                             if k not in skip and not k.startswith("_") and "pdrop" not in k and "dropout" not in k}
    lora = getattr(module, "lora", None)
    identity["lora"] = asdict(lora) if is_dataclass(lora) else None
    return _plain(identity)


def identity_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Each difference as ``what: <in the checkpoint> in the checkpoint, <now> now``, naming the flag."""
    out: list[str] = []
    data_keys = ("tokens_sha256", "docs", "tokens")
    if any(saved.get(k) != current.get(k) for k in data_keys):
        out.append(f"the token data (--data.path/--data.hf_dataset/--data.token_shards, --data.mixture, "
                   "--data.text_column, --data.max_docs): "
                   f"{_describe_data(saved)} in the checkpoint, {_describe_data(current)} now")
    labels = {"tokenizer_sha256": "the tokenizer (--data.tokenizer)", "block_size": "--data.block_size",
              "val_fraction": "--data.val_fraction", "seed": "--data.seed", "lora": "--model.lora"}
    for key, label in labels.items():
        if key in saved and saved.get(key) != current.get(key):
            if key == "tokenizer_sha256":
                out.append(f"{label}: {saved.get('tokenizer')} (sha256 {str(saved[key])[:12]}) in the checkpoint, "
                           f"{current.get('tokenizer')} (sha256 {str(current.get(key))[:12]}) now")
            else:
                out.append(f"{label}: {saved.get(key)} in the checkpoint, {current.get(key)} now")
    if "split" in current and saved.get("split", "by block") != current["split"]:  # checkpoints before it: by block
        out.append(f"the train/validation split: {saved.get('split', 'by block')} in the checkpoint, "
                   f"{current['split']} now (this version splits by document)")
    old_model, new_model = saved.get("model") or {}, current.get("model") or {}
    changed = sorted(k for k in set(old_model) | set(new_model) if old_model.get(k) != new_model.get(k))
    if changed:
        shown = ", ".join(f"{k}={old_model.get(k)!r} -> {new_model.get(k)!r}" for k in changed[:6])
        out.append(f"the model (--model.scratch/--model.pretrained): {shown}"
                   + (f" and {len(changed) - 6} more" if len(changed) > 6 else ""))
    return out


def check_resumable(ckpt: str | Path, current: dict[str, Any]) -> None:
    """Refuse to resume ``ckpt`` into a run whose identity differs; silent for a checkpoint that predates it."""
    from modeling.export import load_checkpoint

    saved = load_checkpoint(ckpt, mmap=True).get(IDENTITY_KEY)
    if saved is None:
        rank_zero_info(f"resume: {ckpt} records no run identity (an older checkpoint); data, tokenizer and model "
                       "are not checked against it")
        return
    differences = identity_differences(saved, current)
    if differences:
        run = Path(ckpt).parent.parent
        raise ResumeMismatchError(
            f"cannot resume from {ckpt}: it belongs to a different run. " + "; ".join(differences) + ". "
            f"Resume with that run's settings ({run / 'config.yaml'}), start a separate experiment with "
            "--name NEW and no --ckpt_path, or fine-tune from its weights with --model.pretrained "
            f"{run / 'hf'}"
        )


class RunIdentity(Callback):
    """Checks a resumed checkpoint against this run before any weight is loaded, and stamps every checkpoint
    this run saves with :func:`run_identity`."""

    def __init__(self, resume_from: str | None = None) -> None:
        super().__init__()
        self.resume_from = resume_from
        self.identity: dict[str, Any] | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # After the data module's setup and configure_model, before Lightning restores the checkpoint.
        if stage != "fit":
            return
        self.identity = run_identity(pl_module, trainer.datamodule)
        if self.resume_from:
            check_resumable(self.resume_from, self.identity)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.resume_from:  # after the restore
            for callback in trainer.checkpoint_callbacks:
                if isinstance(callback, ModelCheckpoint):
                    reconcile_best_k(trainer, callback)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.identity is not None:
            checkpoint[IDENTITY_KEY] = self.identity


def reconcile_best_k(trainer: Trainer, callback: ModelCheckpoint) -> None:
    """Make a resumed ModelCheckpoint's best-k table exact again.

    ``last.ckpt`` is written at the end of a training step, before the validation of that step saves its best-k
    checkpoint; resumed from it, the callback would not know that checkpoint: never count it as the best, and
    never remove it when better ones come. Each best-k checkpoint records the table as it stood with itself in
    it, so the union of the tables of the files still in the folder is the true one; it is cut back to
    ``save_top_k`` by removing the extra checkpoints, as the uninterrupted run would have.
    """
    if callback.monitor is None or not callback.dirpath or callback.save_top_k == 0 or not Path(callback.dirpath).is_dir():
        return
    from modeling.export import load_checkpoint

    table = dict(callback.best_k_models)
    for ckpt in sorted(Path(callback.dirpath).glob("*.ckpt")):
        state = (load_checkpoint(ckpt, mmap=True).get("callbacks") or {}).get(callback.state_key)
        if isinstance(state, dict):
            table.update({p: s for p, s in (state.get("best_k_models") or {}).items() if p not in table})
    table = {p: s if isinstance(s, torch.Tensor) else torch.tensor(float(s)) for p, s in table.items()
             if Path(p).is_file()}
    if not table or table.keys() == callback.best_k_models.keys():
        return
    ranked = sorted(table, key=lambda p: float(table[p]), reverse=callback.mode == "max")
    keep = ranked if callback.save_top_k < 0 else ranked[:callback.save_top_k]
    for extra in ranked[len(keep):]:
        if trainer.is_global_zero and Path(extra).resolve().parent == Path(callback.dirpath).resolve():
            Path(extra).unlink()
            rank_zero_info(f"resume: removed {extra}, no longer among the best {callback.save_top_k} by "
                           f"{callback.monitor}")
    callback.best_k_models = {p: table[p] for p in keep}
    callback.best_model_path, callback.best_model_score = keep[0], table[keep[0]]
    if callback.save_top_k > 0 and len(keep) == callback.save_top_k:
        callback.kth_best_model_path, callback.kth_value = keep[-1], table[keep[-1]]


class RunConfigSaver(SaveConfigCallback):
    """Lightning's config saver, writing into the run folder whatever the logger; a resumed run keeps the config
    of each earlier invocation as ``config.K.yaml`` instead of overwriting it."""

    def __init__(self, *args: Any, run_dir: Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_dir = run_dir  # given by the CLI (save_config_kwargs) once it has placed the run

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved or self.run_dir is None:
            return super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            target = self.run_dir / self.config_filename
            if target.exists():
                stem, suffix = os.path.splitext(self.config_filename)
                k = sum(1 for _ in self.run_dir.glob(f"{stem}.*{suffix}"))
                target.rename(self.run_dir / f"{stem}.{k}{suffix}")
            self.parser.save(self.config, str(target), skip_none=False, overwrite=True, multifile=self.multifile)
            self.save_config(trainer, pl_module, stage)
        self.already_saved = trainer.strategy.broadcast(True)


def _describe_data(identity: dict[str, Any]) -> str:
    docs, tokens = identity.get("docs"), identity.get("tokens")
    counts = f"{docs:,} docs / {tokens:,} tokens" if isinstance(docs, int) and isinstance(tokens, int) else "?"
    return f"{counts} (sha256 {str(identity.get('tokens_sha256'))[:12]}) from {identity.get('source')}"


def _plain(value: Any) -> Any:
    """JSON-like builtins only (tuples as lists), so the identity loads with ``weights_only=True``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
