"""Run folders, ``--ckpt_path last|best`` and resume checks, through the real CLI on tiny models: each experiment
has its own folder whatever the logger, ``last`` resumes its own experiment only, a checkpoint of a different run
is refused naming the difference, a longer run refits the schedule, and validate never scores a random model."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from modeling.data import TextDataModule
from modeling.export import load_checkpoint
from modeling.module import WarmupCosineLR
from modeling.runs import IDENTITY_KEY, identity_differences, new_run, run_of_checkpoint
from modeling.train import StepProgressBar, main, run_command
from tests.modeling.conftest import make_docs, write_shards
from tests.modeling.test_train import tiny_args

QUICK = ["--data.max_docs", "60", "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
         "--periodic_checkpoint.every_n_train_steps", "2"]


def fit(root: Path, tokenizer: Path, shards: Path, *extra: str) -> int:
    return run_command(tiny_args(root, tokenizer, shards, *QUICK, *extra))


def last_error_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------- layout
def test_new_runs_take_the_next_version_and_claim_it_atomically(tmp_path):
    assert new_run(tmp_path, "exp").path == tmp_path / "exp" / "version_0"
    assert new_run(tmp_path, "exp").version == 1  # the folder of version_0 exists now
    assert new_run(tmp_path, "exp", create=False).version == 2
    assert not (tmp_path / "exp" / "version_2").exists()
    assert new_run(tmp_path, "other").version == 0
    ckpt = tmp_path / "exp" / "version_1" / "checkpoints" / "last.ckpt"
    assert run_of_checkpoint(tmp_path, "exp", ckpt).version == 1
    assert run_of_checkpoint(tmp_path, "other", ckpt) is None
    assert run_of_checkpoint(tmp_path, "exp", tmp_path / "elsewhere.ckpt") is None


def test_experiment_name_defaults_to_the_config_file_and_must_be_one_folder(tmp_path, tokenizer_dir, shards_dir,
                                                                           capsys):
    args = tiny_args(tmp_path, tokenizer_dir, shards_dir)
    args.remove("--name")
    args.remove("csv")
    cli = main(args[1:], run=False)
    assert Path(cli.trainer.default_root_dir) == tmp_path / "tiny-cpu" / "version_0"
    assert fit(tmp_path, tokenizer_dir, shards_dir, "--name", "../escape") == 2
    assert "--name '../escape': an experiment name is one folder name" in last_error_line(capsys)


@pytest.mark.slow
def test_ckpt_path_last_resumes_its_own_experiment_in_its_own_folder(tmp_path, tokenizer_dir, shards_dir):
    assert fit(tmp_path, tokenizer_dir, shards_dir, "--name", "a") == 0
    assert fit(tmp_path, tokenizer_dir, shards_dir, "--name", "b", "--data.block_size", "16") == 0  # newer
    a_last = tmp_path / "a" / "version_0" / "checkpoints" / "last.ckpt"
    b_last = tmp_path / "b" / "version_0" / "checkpoints" / "last.ckpt"
    b_before = b_last.read_bytes()

    cli = main(tiny_args(tmp_path, tokenizer_dir, shards_dir, *QUICK, "--name", "a", "--trainer.max_steps", "6",
                         "--ckpt_path", "last"))
    assert cli.trainer.ckpt_path == str(a_last)
    assert cli.trainer.global_step == 6
    assert Path(cli.trainer.log_dir) == a_last.parent.parent  # continued in its own folder
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["version_0"]
    assert torch.load(a_last, weights_only=False)["global_step"] == 6
    # save_top_k 1 holds across the resume: last.ckpt was written before the step-4 validation saved its best
    # checkpoint, and the resumed run still knows that checkpoint (to beat it, remove it, or export it)
    best = list(a_last.parent.glob("best-*.ckpt"))
    assert len(best) == 1 and cli.trainer.checkpoint_callback.best_model_path == str(best[0]), best
    val_losses = [float(r["val_loss"]) for r in _csv(cli.trainer.log_dir) if r.get("val_loss")]
    assert float(best[0].stem.split("-")[-1]) == pytest.approx(min(val_losses), abs=1e-4)
    assert b_last.read_bytes() == b_before  # the other experiment is untouched
    # each invocation's config is kept: the first as config.0.yaml, the resumed one as config.yaml
    run = a_last.parent.parent
    assert "ckpt_path: null" in (run / "config.0.yaml").read_text()
    assert f"ckpt_path: {a_last}" in (run / "config.yaml").read_text()

    # a fresh run of the same experiment (no --ckpt_path) gets the next version
    assert fit(tmp_path, tokenizer_dir, shards_dir, "--name", "a") == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["version_0", "version_1"]


@pytest.mark.slow
def test_wandb_runs_keep_their_own_export_and_config(tmp_path, tokenizer_dir, shards_dir, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = ["--trainer.logger", "lightning.pytorch.loggers.WandbLogger", "--trainer.logger.save_dir", str(tmp_path)]
    for lr in ("0.003", "0.001"):
        args = tiny_args(tmp_path, tokenizer_dir, shards_dir, *QUICK, "--name", "sweep",
                         "--model.optimizer.init_args.lr", lr)
        at = args.index("--trainer.logger")
        args[at:at + 4] = logger  # W&B instead of the CSV logger of tiny_args
        assert run_command(args) == 0
        wandb.finish()  # as a process exit does: in one process, WandbLogger would join the run still open
    runs = sorted((tmp_path / "sweep").iterdir())
    assert [r.name for r in runs] == ["version_0", "version_1"]
    for run, lr in zip(runs, ("0.003", "0.001")):
        assert (run / "hf" / "config.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        assert f"lr: {lr}" in (run / "config.yaml").read_text()
        assert (run / "wandb").is_dir()  # W&B's own files live in the run folder too
    assert not (tmp_path / "hf").exists() and not (tmp_path / "config.yaml").exists()


# ----------------------------------------------------------------------------------- resume checks
@pytest.fixture(scope="module")
def finished(tmp_path_factory, tokenizer_dir, shards_dir):
    """One finished 4-step run whose last.ckpt the mismatch tests try to resume."""
    root = tmp_path_factory.mktemp("finished")
    assert fit(root, tokenizer_dir, shards_dir) == 0
    return root


def test_checkpoints_record_the_run_identity_loadable_weights_only(finished):
    ckpt = load_checkpoint(finished / "csv" / "version_0" / "checkpoints" / "last.ckpt")
    identity = ckpt[IDENTITY_KEY]
    assert identity["block_size"] == 32 and identity["docs"] == 60 and len(identity["tokens_sha256"]) == 64
    assert identity["model"]["n_embd"] == 32 and identity["model"]["n_layer"] == 2
    assert identity["lora"] is None and len(identity["tokenizer_sha256"]) == 64


@pytest.mark.parametrize("change, expected", [
    (["--data.block_size", "16"], "--data.block_size: 32 in the checkpoint, 16 now"),
    (["--data.max_docs", "50"], "the token data (--data.path/--data.hf_dataset/--data.token_shards, --data.mixture, --data.text_column, "
                                    "--data.max_docs): 60 docs"),
    (["--model.scratch.num_layers", "3"], "the model (--model.scratch/--model.pretrained): n_layer=2 -> 3"),
    (["--data.val_fraction", "0.2"], "--data.val_fraction: 0.05 in the checkpoint, 0.2 now"),
], ids=["block_size", "data", "model", "split"])
def test_resuming_a_different_run_is_refused_naming_the_difference(finished, tokenizer_dir, shards_dir, capsys,
                                                                   change, expected):
    run = finished / "csv" / "version_0"
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    args = tiny_args(finished, tokenizer_dir, shards_dir, *QUICK, "--trainer.max_steps", "8", "--ckpt_path",
                     "last", *change)
    assert run_command(args) == 2
    line = last_error_line(capsys)
    assert line.startswith(f"error: cannot resume from {run / 'checkpoints' / 'last.ckpt'}: it belongs to a "
                           "different run.")
    assert expected in line and "--name NEW" in line, line
    # nothing the refused run could have changed was changed: checkpoints, config, metrics
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p in before}
    assert after == before
    assert not list(run.glob("config.*.yaml"))


def test_a_different_tokenizer_is_named(tmp_path):
    saved = {"tokens_sha256": "a", "docs": 1, "tokens": 2, "tokenizer": "tok-a", "tokenizer_sha256": "1" * 64}
    now = {**saved, "tokenizer": "tok-b", "tokenizer_sha256": "2" * 64}
    assert identity_differences(saved, now) == [
        "the tokenizer (--data.tokenizer): tok-a (sha256 111111111111) in the checkpoint, tok-b (sha256 222222222222) now"]
    assert identity_differences(saved, dict(saved)) == []


def test_a_checkpoint_of_the_block_split_is_named():
    saved = {"tokens_sha256": "a", "docs": 1, "tokens": 2, "val_fraction": 0.05, "seed": 0}  # no "split" key yet
    now = {**saved, "split": "by document"}
    assert identity_differences(saved, now) == [
        "the train/validation split: by block in the checkpoint, by document now (this version splits by document)"]


@pytest.mark.slow
def test_a_longer_run_refits_the_cosine_schedule(finished, tokenizer_dir, shards_dir, caplog):
    cli = main(tiny_args(finished, tokenizer_dir, shards_dir, *QUICK, "--trainer.max_steps", "10",
                         "--ckpt_path", "last", "--trainer.callbacks+", "lightning.pytorch.callbacks.LearningRateMonitor"))
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.total_steps == 10
    assert "the cosine decay is refitted to end at step 10" in caplog.text
    # the LR of the steps after the resume follows the 10-step curve, not the finished 4-step one (its floor)
    rows = [r for r in _csv(cli.trainer.log_dir) if r.get("lr-AdamW/pg1")]
    lrs = {int(r["step"]): float(r["lr-AdamW/pg1"]) for r in rows}
    fresh = WarmupCosineLR(torch.optim.SGD([torch.zeros(1)], lr=0.003), warmup_steps=5, total_steps=10,
                           min_lr_ratio=0.1)
    for step in (5, 7, 9):
        assert lrs[step] == pytest.approx(0.003 * fresh.lr_factor(step), rel=1e-6), (step, lrs)


def test_refit_moves_the_next_step_to_the_new_curve():
    opt = torch.optim.SGD([torch.zeros(1)], lr=1.0)
    scheduler = WarmupCosineLR(opt, warmup_steps=0, total_steps=4, min_lr_ratio=0.1)
    for _ in range(4):
        opt.step()
        scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # the floor of the 4-step run
    before, after = scheduler.refit(8)
    assert before == pytest.approx(0.1) and after == pytest.approx(scheduler.lr_factor(4))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.55)  # halfway down the 8-step cosine
    assert scheduler.get_last_lr() == [pytest.approx(0.55)]


# ------------------------------------------------------------------------------------ validate / test
def test_validate_without_a_checkpoint_is_refused_for_a_model_from_scratch(finished, tokenizer_dir, shards_dir,
                                                                          capsys):
    args = tiny_args(finished, tokenizer_dir, shards_dir, *QUICK)
    assert run_command(["validate", *args[1:]]) == 2
    assert last_error_line(capsys) == (
        "error: validate without --ckpt_path would score a randomly initialised model (--model.scratch): pass "
        "--ckpt_path best or last (of experiment 'csv') or a .ckpt file")


def test_validate_ckpt_path_best_takes_the_lowest_val_loss_that_still_exists(finished, tokenizer_dir, shards_dir):
    ckpts = finished / "csv" / "version_0" / "checkpoints"
    best = min(ckpts.glob("best-*.ckpt"), key=lambda p: float(p.stem.split("-")[-1]))
    args = tiny_args(finished, tokenizer_dir, shards_dir, *QUICK, "--ckpt_path", "best")
    cli = main(["validate", *args[1:]])
    assert cli.trainer.ckpt_path == str(best)
    score = float(best.stem.split("-")[-1])
    assert cli.trainer.callback_metrics["val_loss"].item() == pytest.approx(score, abs=1e-4)


def test_test_scores_heldout_documents_and_refuses_without_them(finished, tokenizer_dir, shards_dir, tmp_path,
                                                                 capsys):
    args = tiny_args(finished, tokenizer_dir, shards_dir, *QUICK, "--ckpt_path", "best")
    assert run_command(["test", *args[1:]]) == 2  # plain shards: no heldout/ beside them, and no --data.test_path
    line = last_error_line(capsys)
    assert "test scores held-out documents, and there are none" in line and "--data.test_path" in line, line
    held = write_shards(tmp_path / "held", make_docs(12, seed=11), n_shards=1)
    cli = main(["test", *args[1:], "--data.test_path", str(held)])
    assert len(cli.datamodule.test_set) > 0 and cli.datamodule.val_set is None  # validation was never loaded
    assert "test_loss" in cli.trainer.callback_metrics


def test_a_missing_checkpoint_file_is_one_line(finished, tokenizer_dir, shards_dir, capsys):
    args = tiny_args(finished, tokenizer_dir, shards_dir, *QUICK, "--ckpt_path", str(finished / "nope.ckpt"))
    assert run_command(args) == 2
    assert f"--ckpt_path '{finished / 'nope.ckpt'}': no such file" in last_error_line(capsys)


# ------------------------------------------------------------------------------------- data identity
def test_data_fingerprint_hashes_the_token_streams(tmp_path, tokenizer_dir):
    shards = write_shards(tmp_path / "shards", make_docs(30))
    dm = TextDataModule(tokenizer=str(tokenizer_dir), path=str(shards), block_size=16,
                        cache_dir=str(tmp_path / "cache"))
    fp = dm.fingerprint()
    cache = dm.build_cache()
    meta = json.loads((cache / "meta.json").read_text())
    streams = []
    for side in ("train", "val"):  # packed apart since the split is by document
        tokens = np.load(cache / f"{side}.npy").reshape(-1)[:meta[side]["tokens"]]
        streams.append(hashlib.sha256(tokens.tobytes()).hexdigest())
        assert streams[-1] == meta[side]["tokens_sha256"]
    assert fp["tokens_sha256"] == hashlib.sha256("".join(streams).encode()).hexdigest() == meta["tokens_sha256"]
    assert fp["split"] == "by document" and fp["docs"] == 30
    # moving the corpus changes nothing; another block size does not change the token stream either
    moved = tmp_path / "moved"
    shards.rename(moved)
    other = TextDataModule(tokenizer=str(tokenizer_dir), path=str(moved), block_size=8,
                           cache_dir=str(tmp_path / "cache"))
    assert other.fingerprint()["tokens_sha256"] == fp["tokens_sha256"]


# ------------------------------------------------------------------------------------- progress bar
def test_progress_bar_shows_steps_not_a_negative_epoch_count():
    class FakeTrainer:
        max_epochs, max_steps, global_step = -1, 10, 3

    bar = StepProgressBar()
    bar._trainer = FakeTrainer()
    assert bar._get_train_description(0) == "Epoch 0"
    FakeTrainer.max_epochs = 3
    assert bar._get_train_description(1) == "Epoch 1/2"


def _csv(log_dir: str) -> list[dict[str, str]]:
    import csv

    with open(Path(log_dir) / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


class SlurmPreemptAt(pl.Callback):
    """Calls Lightning's SLURM SIGUSR1 handler at optimizer step ``step``, as SLURM's warning signal would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not list(Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt")):
            trainer._signal_connector._slurm_sigusr_handler_fn(signal.SIGUSR1, None)


@pytest.mark.slow
def test_slurm_requeue_checkpoint_lands_in_the_run_folder_and_is_resumed(tmp_path, tokenizer_dir, shards_dir,
                                                                        monkeypatch):
    # SLURM's SIGUSR1: Lightning saves hpc_ckpt_N.ckpt into trainer.default_root_dir (the run folder) and asks
    # scontrol to requeue the job (not on this machine: it logs that the requeue failed and training goes on)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("PATH", str(tmp_path / "no-scontrol"))
    cli = main(tiny_args(tmp_path, tokenizer_dir, shards_dir, *QUICK, "--trainer.max_steps", "3",
                         "--trainer.callbacks+", f"{__name__}.SlurmPreemptAt", "--trainer.callbacks.step", "2"))
    run = Path(cli.trainer.log_dir)
    hpc = run / "hpc_ckpt_1.ckpt"
    assert hpc.is_file() and load_checkpoint(hpc)["global_step"] == 2
    assert load_checkpoint(hpc)[IDENTITY_KEY]["block_size"] == 32
    # the requeued job runs the same command with --ckpt_path last: the preemption checkpoint, when newest
    (run / "checkpoints" / "last.ckpt").unlink()
    monkeypatch.delenv("SLURM_JOB_ID")
    resumed = main(tiny_args(tmp_path, tokenizer_dir, shards_dir, *QUICK, "--trainer.max_steps", "5",
                             "--ckpt_path", "last"))
    assert resumed.trainer.ckpt_path == str(hpc)
    assert Path(resumed.trainer.log_dir) == run and resumed.trainer.global_step == 5
