"""The training entry point end to end, through the real CLI on tiny models: learning, exact resume, early
stopping, LoRA, the Hugging Face export, 2-process DDP, and the configs in configs/train/."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from modeling.export import load_causal_lm, merge_lora
from modeling.module import ModelConfigError
from modeling.train import main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "train").glob("*.yaml"))


class InterruptAt(pl.Callback):
    """Kills a run at the start of optimizer step ``step`` (after the checkpoints before it were written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt  # Lightning's graceful-interrupt path, as for Ctrl-C


class PrintSteps(pl.Callback):
    """Prints ``step N`` after every optimizer step (a subprocess test waits for it before sending a signal)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        print(f"step {trainer.global_step}", flush=True)


def tiny_args(root: Path, tokenizer: Path, shards: Path, *extra: str, config: str = "tiny-cpu.yaml") -> list[str]:
    """A config shrunk for tests: 32-token blocks, batch 4, CSV logs under ``root``; for tiny-cpu.yaml also a
    32-wide model."""
    model = (["--model.scratch.hidden_size", "32", "--model.scratch.max_position_embeddings", "32"]
             if config == "tiny-cpu.yaml" else [])
    return [
        "fit", "--config", str(REPO / "configs/train" / config),
        "--data.path", str(shards), "--data.tokenizer", str(tokenizer),
        "--data.cache_dir", str(root.parent / "token-cache"), "--data.block_size", "32", "--data.batch_size", "4",
        *model, "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(root),
        "--name", "csv", "--trainer.log_every_n_steps", "1", *extra,
    ]


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def series(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer_dir, shards_dir):
    """One full tiny run, shared by the tests that inspect its outputs."""
    root = tmp_path_factory.mktemp("trained")
    cli = main(tiny_args(root, tokenizer_dir, shards_dir, "--trainer.max_steps", "60",
                         "--trainer.val_check_interval", "20"))
    return cli, Path(cli.trainer.log_dir)


@pytest.mark.slow
def test_loss_falls_and_the_run_dir_has_everything(trained):
    _, run_dir = trained
    rows = read_metrics(run_dir)
    train_loss = series(rows, "train_loss_step")
    val_loss = series(rows, "val_loss")
    assert len(val_loss) == 3
    assert train_loss[0] > 5.0  # about ln(320): the untrained model guesses uniformly
    assert val_loss[-1] < 0.6 * train_loss[0]  # a repetitive corpus is easy to learn
    assert val_loss[-1] < val_loss[0]
    assert series(rows, "lr-AdamW/pg1")  # LearningRateMonitor (pg2: the no-weight-decay group)
    assert len(series(rows, "train/tokens_per_sec")) == 60  # every log_every_n_steps (1 here)
    assert series(rows, "train/tokens_per_sec")[-1] > 0 and series(rows, "train/tokens")[-1] == 60 * 4 * 32
    assert (run_dir / "config.yaml").exists()  # the config the run used
    ckpts = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts) and "step-60.ckpt" in ckpts


@pytest.mark.slow
def test_hf_export_reloads_and_generates(trained):
    cli, run_dir = trained
    hf = run_dir / "hf"
    model = AutoModelForCausalLM.from_pretrained(hf)
    tok = AutoTokenizer.from_pretrained(hf)
    assert model.config.eos_token_id == tok.eos_token_id
    generator = pipeline("text-generation", model=str(hf), device="cpu")
    out = generator("the patient was", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert out.startswith("the patient was") and len(out) > len("the patient was")
    # the export is the best checkpoint: the .ckpt and the HF dir give the same logits
    best = cli.trainer.checkpoint_callback.best_model_path
    from_ckpt, _ = load_causal_lm(best)
    from_hf, _ = load_causal_lm(hf)
    ids = tok("the contract says", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(from_ckpt(ids).logits, from_hf(ids).logits)


@pytest.mark.slow
@pytest.mark.parametrize("interrupt_at", [10, 15])  # mid-epoch, and just after the first epoch ended
def test_resume_matches_an_uninterrupted_run(tmp_path, tokenizer_dir, shards_dir, interrupt_at):
    # 60 docs -> ~3k tokens -> ~90 blocks of 32 -> 14 batches of 4 per epoch; dropout on, to check the RNG too
    common = ["--data.max_docs", "40", "--model.scratch.dropout", "0.1", "--trainer.max_steps", "20",
              "--trainer.val_check_interval", "5", "--periodic_checkpoint.every_n_train_steps", "7",
              "--early_stopping.patience", "100"]
    straight = main(tiny_args(tmp_path / "straight", tokenizer_dir, shards_dir, *common))
    epoch_len = straight.trainer.num_training_batches
    assert epoch_len < 20 and interrupt_at - 7 * (interrupt_at // 7) < epoch_len  # the test covers what it says

    broken_root = tmp_path / "broken"
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        interrupted = main(tiny_args(broken_root, tokenizer_dir, shards_dir, *common, "--trainer.callbacks+",
                                     f"{__name__}.InterruptAt", "--trainer.callbacks.step", str(interrupt_at)))
        if interrupted.trainer.interrupted:
            raise KeyboardInterrupt
    last = next(broken_root.rglob("last.ckpt"))
    assert torch.load(last, weights_only=False)["global_step"] == 7 * (interrupt_at // 7)
    resumed = main(tiny_args(broken_root, tokenizer_dir, shards_dir, *common, "--ckpt_path", "last"))
    assert resumed.trainer.ckpt_path == str(last)  # `last` finds the previous run's checkpoint

    assert resumed.trainer.global_step == straight.trainer.global_step == 20
    a = straight.model.model.state_dict()
    b = resumed.model.model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"weights differ at {key}")
    assert (resumed.trainer.callback_metrics["val_loss"].item()
            == straight.trainer.callback_metrics["val_loss"].item())


@pytest.mark.slow
def test_early_stopping_stops_after_patience(tmp_path, tokenizer_dir, shards_dir):
    # lr 0: val_loss never improves, so training stops after the first validation + 3 without improvement
    cli = main(tiny_args(tmp_path, tokenizer_dir, shards_dir, "--model.optimizer.lr", "0.0",
                         "--trainer.max_steps", "200", "--trainer.val_check_interval", "4",
                         "--data.max_docs", "200"))
    assert cli.trainer.global_step == 16
    assert cli.trainer.should_stop
    assert len(series(read_metrics(Path(cli.trainer.log_dir)), "val_loss")) == 4


@pytest.mark.slow
def test_lora_trains_only_adapters_and_exports_an_adapter(tmp_path, tokenizer_dir, shards_dir, gpt2_dir):
    cli = main(tiny_args(tmp_path, gpt2_dir, shards_dir, "--model.pretrained", str(gpt2_dir),
                         "--data.max_docs", "100", "--model.lora.r", "4", "--model.optimizer.lr", "0.01",
                         "--trainer.accelerator", "cpu", "--trainer.precision", "32-true",
                         "--trainer.max_steps", "12", "--trainer.val_check_interval", "6",
                         "--trainer.limit_val_batches", "2", "--periodic_checkpoint.every_n_train_steps", "6",
                         config="lora.yaml"))
    run_dir = Path(cli.trainer.log_dir)
    base = AutoModelForCausalLM.from_pretrained(gpt2_dir).state_dict()
    trained_base = cli.model.model.get_base_model().state_dict()
    changed = {k for k, v in trained_base.items() if "lora_" in k and "lora_B" in k and v.abs().sum() > 0}
    assert changed, "LoRA B matrices start at zero and must have been trained"
    for key, value in base.items():  # frozen weights did not move
        peft_key = key.replace("c_attn.weight", "c_attn.base_layer.weight").replace("c_attn.bias",
                                                                                    "c_attn.base_layer.bias")
        torch.testing.assert_close(trained_base[peft_key], value, rtol=0, atol=0)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])  # only what is trained

    hf = run_dir / "hf"
    assert (hf / "adapter_config.json").exists() and not (hf / "model.safetensors").exists()
    adapter_model, tok = load_causal_lm(hf)
    ckpt_model, _ = load_causal_lm(cli.trainer.checkpoint_callback.best_model_path)
    merged_dir = merge_lora(hf, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    ids = tok("the party of the first part", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = adapter_model(ids).logits
        torch.testing.assert_close(merged(ids).logits, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ckpt_model(ids).logits, expected)
        assert not torch.allclose(AutoModelForCausalLM.from_pretrained(gpt2_dir)(ids).logits, expected)


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_lora(tmp_path, tokenizer_dir, shards_dir, gpt2_dir):
    """Through the real command line: Lightning starts the second rank; LoRA needs no find_unused_parameters."""
    args = tiny_args(tmp_path, gpt2_dir, shards_dir, "--model.pretrained", str(gpt2_dir),
                     "--model.lora.r", "4", "--data.max_docs", "100", "--trainer.accelerator", "cpu",
                     "--trainer.precision", "32-true", "--trainer.devices", "2", "--trainer.strategy", "ddp",
                     "--trainer.max_steps", "6", "--trainer.val_check_interval", "3",
                     "--trainer.limit_val_batches", "2", "--periodic_checkpoint.every_n_train_steps", "3",
                     config="lora.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "modeling.train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = next((tmp_path / "csv").iterdir())
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "hf" / "adapter_config.json").exists()
    assert "world_size: 2" in proc.stderr or "distributed_backend=gloo" in proc.stderr


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_parses_and_names_its_command(config, capsys):
    first = config.read_text().splitlines()[0]
    assert first.startswith("# python -m modeling.train ") and f"--config configs/train/{config.name}" in first
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "model:" in printed and "data:" in printed and "early_stopping:" in printed


def test_qlora_config_on_cpu_stops_with_a_clear_message(tmp_path, tokenizer_dir, shards_dir, gpt2_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelConfigError, match="needs a CUDA GPU"):
        main(["fit", "--config", str(REPO / "configs/train/qlora-mistral-7b.yaml"),
              "--model.pretrained", str(gpt2_dir), "--data.tokenizer", str(gpt2_dir),
              "--data.path", str(shards_dir), "--trainer.default_root_dir", str(tmp_path)])


def test_lora_on_a_model_from_scratch_is_refused_with_exit_2(tmp_path, tokenizer_dir, shards_dir, capsys):
    from modeling.train import run_command

    code = run_command(tiny_args(tmp_path, tokenizer_dir, shards_dir, "--model.lora.r", "4"))
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --model.lora needs --model.pretrained: LoRA adapts a pretrained model; for a model trained from "
        "scratch, drop --model.lora")
    assert not list(tmp_path.rglob("*.ckpt"))


def test_wandb_logger_is_selectable_and_offline_without_a_key(tmp_path, tokenizer_dir, shards_dir, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    args = tiny_args(tmp_path, tokenizer_dir, shards_dir, "--trainer.logger",
                     "lightning.pytorch.loggers.WandbLogger", "--trainer.logger.save_dir", str(tmp_path))
    cli = main(args[1:], run=False)  # without a subcommand: build everything, train nothing
    assert isinstance(cli.trainer.logger, WandbLogger)
    assert os.environ["WANDB_MODE"] == "offline"


def test_block_longer_than_the_model_positions_is_a_clear_error(tmp_path, tokenizer_dir, shards_dir):
    with pytest.raises(ModelConfigError, match=r"--data.block_size 64 is longer than the model's 32 positions"):
        main(tiny_args(tmp_path, tokenizer_dir, shards_dir, "--data.block_size", "64", "--data.max_docs", "50"))


@pytest.mark.slow
def test_throughput_reports_mfu_against_the_given_peak(tmp_path, tokenizer_dir, shards_dir):
    # on a CPU there is no table entry: the override (as for a GPU the table does not know) gives the peak
    cli = main(tiny_args(tmp_path, tokenizer_dir, shards_dir, "--throughput.peak_flops", "1e12", "--trainer.max_steps", "4",
                         "--trainer.val_check_interval", "4", "--trainer.log_every_n_steps", "2",
                         "--data.max_docs", "100"))
    rows = [r for r in read_metrics(Path(cli.trainer.log_dir)) if r.get("train/mfu")]
    assert [int(r["step"]) for r in rows] == [2, 4]
    flops_per_token = cli.model.flops_per_batch / (4 * 32)
    for r in rows:
        expected = float(r["train/tokens_per_sec_per_device"]) * flops_per_token / 1e12
        assert float(r["train/mfu"]) == pytest.approx(expected, rel=1e-6)


def test_ckpt_path_last_takes_the_newest_resume_point_of_its_own_experiment(tmp_path):
    from modeling.runs import latest_resume_checkpoint

    def touch(path: Path, mtime: int) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (mtime, mtime))
        return path

    assert latest_resume_checkpoint(tmp_path, "exp") is None
    last = touch(tmp_path / "exp" / "version_0" / "checkpoints" / "last.ckpt", 1_000)
    assert latest_resume_checkpoint(tmp_path, "exp") == last
    hpc = touch(tmp_path / "exp" / "version_0" / "hpc_ckpt_1.ckpt", 2_000)  # Lightning's SLURM preemption save
    assert latest_resume_checkpoint(tmp_path, "exp") == hpc
    touch(tmp_path / "exp" / "version_1" / "checkpoints" / "best-10-1.0.ckpt", 3_000)  # not a resume point
    assert latest_resume_checkpoint(tmp_path, "exp") == hpc
    touch(tmp_path / "other" / "version_0" / "checkpoints" / "last.ckpt", 4_000)  # another experiment's
    assert latest_resume_checkpoint(tmp_path, "exp") == hpc
    newer = touch(tmp_path / "exp" / "version_1" / "checkpoints" / "last.ckpt", 5_000)
    assert latest_resume_checkpoint(tmp_path, "exp") == newer


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_last_ckpt_exits_nonzero_and_resumes_exactly(tmp_path, tokenizer_dir, shards_dir, signum):
    # a fixed cosine length, so a run told max_steps 100000 and one told max_steps N follow the same schedule
    common = ["--data.max_docs", "40", "--model.scratch.dropout", "0.1", "--model.scheduler.init_args.total_steps",
              "200", "--trainer.val_check_interval", "10000", "--periodic_checkpoint.every_n_train_steps", "10000"]
    root = tmp_path / "preempted"
    args = tiny_args(root, tokenizer_dir, shards_dir, *common, "--trainer.max_steps", "100000",
                     "--trainer.callbacks+", f"{__name__}.PrintSteps")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "modeling.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("step 2"):
                proc.send_signal(signum)
                break
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, stderr[-3000:]
    last = next(root.rglob("last.ckpt"))
    assert last.parent.name == "checkpoints"  # the run's own checkpoint folder, where --ckpt_path last looks
    stopped_at = torch.load(last, weights_only=False)["global_step"]
    assert stopped_at >= 2
    message = stderr.strip().splitlines()[-1]
    assert message == (f"stopped by {signal.Signals(signum).name} at step {stopped_at}; checkpoint saved to {last}; "
                       "resume by running the same command with --ckpt_path last")

    total = stopped_at + 3
    resumed = main(tiny_args(root, tokenizer_dir, shards_dir, *common, "--trainer.max_steps", str(total),
                             "--ckpt_path", "last"))
    assert resumed.trainer.ckpt_path == str(last)
    assert resumed.trainer.global_step == total
    # the resumed run continued in the stopped run's folder: one metrics.csv, both parts in order, no step twice
    # and none restarted at 0 (the stopped step's own loss line is not written: the stop comes before its logging)
    assert Path(resumed.trainer.log_dir) == last.parent.parent
    steps = [int(r["step"]) for r in read_metrics(Path(resumed.trainer.log_dir)) if r.get("train_loss_step")]
    assert steps[0] == 0 and steps == sorted(set(steps)) and steps[-1] == total - 1, steps
    assert [s for s in steps if s >= stopped_at] == list(range(stopped_at, total)), steps
    straight = main(tiny_args(tmp_path / "straight", tokenizer_dir, shards_dir, *common,
                              "--trainer.max_steps", str(total)))
    a, b = straight.model.model.state_dict(), resumed.model.model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"weights differ at {key}")
