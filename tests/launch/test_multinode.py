"""The multi-node launchers: both scripts parse, the sbatch asks SLURM for what Lightning needs, and
``launch/torchrun.sh`` really trains with two CPU processes (DDP over gloo) and writes a checkpoint."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.modeling.conftest import build_tokenizer_dir, make_docs, write_shards

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = REPO / "launch/torchrun.sh"
SBATCH = REPO / "launch/slurm/train.sbatch"
VENV_BIN = Path(sys.executable).parent


@pytest.mark.parametrize("script", [TORCHRUN, SBATCH], ids=["torchrun", "sbatch"])
def test_script_parses_and_explains_itself(script: Path) -> None:
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "set -euo pipefail" in text
    helped = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, cwd=REPO)
    assert helped.returncode == 0, helped.stderr
    assert "CONFIG" in helped.stdout and "RESUME" in helped.stdout
    assert "--ckpt_path last" in text


def test_sbatch_requests_nodes_gpus_time_and_requeue() -> None:
    directives = dict(
        (m.group(1), m.group(2)) for m in re.finditer(r"^#SBATCH --([\w-]+)(?:=(\S+))?", SBATCH.read_text(), re.M)
    )
    for key in ("nodes", "ntasks-per-node", "gpus-per-node", "time", "signal"):
        assert directives.get(key), f"#SBATCH --{key} missing"
    assert "requeue" in directives
    # one task per GPU: Lightning's SLURM environment expects devices x num_nodes tasks
    assert directives["ntasks-per-node"] == directives["gpus-per-node"]
    # SIGUSR1 before the end: Lightning's SLURMEnvironment saves an hpc checkpoint and requeues on it
    assert re.fullmatch(r"(SIG)?USR1@\d+", directives["signal"])
    text = SBATCH.read_text()
    assert "srun" in text and "-m modeling.train fit" in text


def test_sbatch_refuses_to_run_outside_slurm() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    run = subprocess.run(["bash", str(SBATCH)], capture_output=True, text=True, cwd=REPO, env=env)
    assert run.returncode == 2
    assert "sbatch" in run.stderr


def test_torchrun_rejects_bad_knobs(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    for env, message in [({"CONFIG": str(tmp_path / "missing.yaml")}, "CONFIG="),
                         ({"CONFIG": str(config), "NNODES": "two"}, "NNODES=two"),
                         ({"CONFIG": str(config), "NNODES": "1", "NODE_RANK": "1"}, "NODE_RANK=1")]:
        run = subprocess.run(["bash", str(TORCHRUN)], capture_output=True, text=True, cwd=REPO,
                             env=dict(os.environ, **env))
        assert run.returncode == 2, run.stderr
        assert message in run.stderr


def _launch(args: list[str], env: dict[str, str], timeout: float = 240) -> str:
    """Run the launcher in its own process group, so a timeout ends torchrun's workers too; returns its log."""
    proc = subprocess.Popen(["bash", str(TORCHRUN), *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"launch/torchrun.sh ran past {timeout}s:\n{out[-6000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-6000:]
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_trains_with_two_cpu_processes(tmp_path: Path) -> None:
    root = tmp_path / "run"
    cfg = yaml.safe_load((REPO / "configs/train/tiny-cpu.yaml").read_text())
    cfg["trainer"].update(default_root_dir=str(root), val_check_interval=2, log_every_n_steps=1)
    cfg["trainer"]["logger"] = [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                 "init_args": {"save_dir": str(root)}}]
    cfg["name"] = "csv"  # the experiment: runs go to <root>/csv/version_N
    cfg["data"].update(path=str(write_shards(tmp_path / "shards", make_docs(200))),
                       tokenizer=str(build_tokenizer_dir(tmp_path / "tok")), cache_dir=str(tmp_path / "cache"),
                       block_size=32, batch_size=4)
    cfg["periodic_checkpoint"]["every_n_train_steps"] = 2
    cfg["model"]["optimizer"]["init_args"]["fused"] = False
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))

    env = dict(os.environ, NPROC_PER_NODE="2", CONFIG=str(config), MASTER_PORT=str(_free_port()),
               MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1", TORCHRUN=str(VENV_BIN / "torchrun"),
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    extra = ["--trainer.accelerator", "cpu", "--trainer.max_steps", "4"]
    log = _launch(extra, env)

    # both ranks joined one gloo process group of two
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log, log[-6000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log, log[-6000:]
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log
    # --ckpt_path last with nothing to resume from: a fresh start, said so
    assert "experiment 'csv' has no checkpoint under" in log

    version = root / "csv" / "version_0"
    saved = yaml.safe_load((version / "config.yaml").read_text())
    assert str(saved["trainer"]["devices"]) == "2" and saved["trainer"]["num_nodes"] == 1
    assert saved["trainer"]["strategy"] == "ddp" and saved["trainer"]["max_steps"] == 4
    last = version / "checkpoints" / "last.ckpt"
    assert last.is_file(), sorted(p.name for p in version.rglob("*"))
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4

    # a second launch resumes from that checkpoint, in the same run folder, and trains two more steps
    log = _launch([*extra[:2], "--trainer.max_steps", "6"], env)
    assert f"--ckpt_path last: resuming {last}" in log, log[-6000:]
    assert sorted(p.name for p in (root / "csv").iterdir()) == ["version_0"]
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 6
    assert (version / "config.0.yaml").is_file()  # the first launch's config, kept beside the resumed one
