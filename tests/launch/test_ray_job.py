"""Curation as a Ray job, for real: a local Ray head on loopback, the job submitted through the Jobs API.

This is what ``launch/ray`` documents (``ray job submit --working-dir . -- python -m curation run ...``), run
against a one-node cluster: the repository is uploaded as the job's working_dir, the job's driver attaches to
the running cluster through the ``RAY_ADDRESS`` Ray sets for it, and the curated output and report land where
the entrypoint says.

The head runs in its own ``--temp-dir`` and teardown ends exactly the processes whose command line names that
directory (not ``ray stop``, which would also stop any other Ray on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
JOB_TIMEOUT_S = 150
# Ray turns 127.0.0.1 into the machine's outward address ("remotely reachable") unless multi-host clusters are
# off; off, every process of the test (head, job driver, workers) stays on loopback. Token auth is off too: a
# head turns it on when ~/.ray/auth_token exists, and a driver then needs RAY_AUTH_MODE=token to get in; the
# test should not depend on what an earlier Ray left in the home directory (the docs show token auth).
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_AUTH_MODE": "disabled"}

def _free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _pids_using(*markers: str) -> list[int]:
    """Pids of processes whose command line contains one of ``markers`` (our head's temp dir or GCS address)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmdline for m in markers):
            pids.append(int(proc.name))
    return pids


def _stop_head(temp_dir: str, gcs_address: str) -> None:
    """End this test's Ray processes only: SIGTERM, then SIGKILL what is left after a grace period."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        pids = _pids_using(temp_dir, f"={gcs_address}", f" {gcs_address}")
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + wait
        while pids and time.time() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and _is_alive(p)]
            time.sleep(0.2)


def _is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _dashboard_missing() -> str | None:
    """Why this environment cannot serve the Jobs API (None if it can)."""
    try:
        import aiohttp_cors  # noqa: F401  (ray[default]: the dashboard and its Jobs API)
        import opencensus  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as e:
        return (f"the Ray dashboard (Jobs API) needs ray[default], which is not installed ({e}); "
                "install the dev extras: pip install -e '.[dev]'")
    return None


@contextmanager
def ray_head(dashboard: bool):
    """A Ray head on 127.0.0.1 (all ports free ones, 2 CPUs), optionally with the dashboard and Jobs API."""
    temp_dir = tempfile.mkdtemp(prefix="rayjob-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    gcs, dash, client, agent_http, agent_grpc, rt_env, metrics, node_mgr, obj_mgr = _free_ports(9)
    env = dict(os.environ, **LOOPBACK_ENV, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("RAY_ADDRESS", None)
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", str(dashboard).lower(),
           "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent_http),
           "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(rt_env),
           "--metrics-export-port", str(metrics), "--node-manager-port", str(node_mgr),
           "--object-manager-port", str(obj_mgr), "--num-cpus", "2", "--temp-dir", temp_dir,
           "--disable-usage-stats"]
    try:
        started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, f"ray start failed:\n{started.stdout}\n{started.stderr}"
        yield {"url": f"http://127.0.0.1:{dash}", "gcs": f"127.0.0.1:{gcs}"}
    finally:
        _stop_head(temp_dir, f"127.0.0.1:{gcs}")
        shutil.rmtree(temp_dir, ignore_errors=True)


def _check_output(out: Path) -> None:
    report = json.loads((out / "report.json").read_text())
    assert report["rows_out"] > 0
    assert report["rows_in"] == report["rows_out"] + sum(report["dropped"].values())
    assert report["dropped"].get("language", 0) > 0  # --languages en reached the run
    assert sorted(p.name for p in (out / "data").iterdir())[0] == "part-00000.parquet"


@pytest.mark.slow
@pytest.mark.ray
def test_curation_runs_as_a_ray_job(tmp_path: Path) -> None:
    """`ray job submit --working-dir . --runtime-env launch/ray/runtime_env.yaml -- python -m curation run ...`"""
    missing = _dashboard_missing()
    assert missing is None, missing
    from ray.job_submission import JobStatus, JobSubmissionClient

    out = tmp_path / "out"
    runtime_env = yaml.safe_load((REPO / "launch/ray/runtime_env.yaml").read_text())
    runtime_env["working_dir"] = str(REPO)  # what `ray job submit --working-dir .` does from the repo root
    entrypoint = ("python -c 'import sys; print(\"JOB_PYTHON\", sys.executable)' && "
                  f"python -m curation run --input data/sample --output {out} --languages en --no-progress")

    with ray_head(dashboard=True) as head:
        client = JobSubmissionClient(head["url"])
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        deadline = time.time() + JOB_TIMEOUT_S
        status = client.get_job_status(job_id)
        while not status.is_terminal() and time.time() < deadline:
            time.sleep(1)
            status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        if not status.is_terminal():
            client.stop_job(job_id)
        info = client.get_job_info(job_id)
    assert status == JobStatus.SUCCEEDED, f"job ended {status}:\n{logs[-4000:]}"
    assert info.entrypoint == entrypoint

    # the job's Python is the project's virtualenv (the head was started from it), not some system Python
    job_python = next(line.split(" ", 1)[1] for line in logs.splitlines() if line.startswith("JOB_PYTHON "))
    assert Path(job_python).parent == VENV_BIN, job_python
    # the driver attached to this cluster (Ray sets RAY_ADDRESS for a job) instead of starting its own Ray
    assert "attaching to Ray cluster at" in logs, logs[-4000:]
    assert "Connecting to existing Ray cluster at address: 127.0.0.1" in logs, logs[-4000:]
    assert "Started a local Ray instance" not in logs
    _check_output(out)


@pytest.mark.slow
@pytest.mark.ray
def test_curation_attaches_to_a_running_cluster(tmp_path: Path) -> None:
    """`RAY_ADDRESS=HEAD:6379 python -m curation run ...` on a head node: the driver joins the cluster."""
    out = tmp_path / "out"
    with ray_head(dashboard=False) as head:
        env = dict(os.environ, **LOOPBACK_ENV, RAY_ADDRESS=head["gcs"])
        run = subprocess.run([sys.executable, "-m", "curation", "run", "--input", "data/sample",
                              "--output", str(out), "--languages", "en", "--no-progress"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    logs = run.stdout + run.stderr
    assert run.returncode == 0, logs[-4000:]
    assert f"attaching to Ray cluster at {head['gcs']}" in logs, logs[-4000:]
    assert f"Connecting to existing Ray cluster at address: {head['gcs']}" in logs, logs[-4000:]
    assert "Started a local Ray instance" not in logs
    _check_output(out)


def test_cluster_config_is_valid_for_the_launcher() -> None:
    """`ray up launch/ray/cluster.yaml` would accept it: the launcher's own defaults and schema check."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "launch/ray/cluster.yaml").read_text())
    config = prepare_config(raw)
    validate_config(config)
    assert config["file_mounts"] == {"~/corpusforge": "."}
    assert any("pip install" in c and "-e ." in c for c in config["setup_commands"])
    assert any("--dashboard-port=8265" in c for c in config["head_start_ray_commands"])


def test_runtime_env_is_valid() -> None:
    from ray.runtime_env import RuntimeEnv

    env = RuntimeEnv(**yaml.safe_load((REPO / "launch/ray/runtime_env.yaml").read_text()))
    assert env["env_vars"]["TOKENIZERS_PARALLELISM"] == "false"
    assert "pip" not in env  # the cluster's nodes have the dependencies (cluster.yaml's setup_commands)


def test_submit_script_builds_the_documented_command(tmp_path: Path) -> None:
    """launch/ray/submit.sh runs `ray job submit ... -- python -m curation run ...` (a stand-in `ray` echoes it)."""
    fake_ray = tmp_path / "ray"
    fake_ray.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake_ray.chmod(0o755)
    script = REPO / "launch/ray/submit.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env = dict(os.environ, RAY=str(fake_ray), INPUT="/shared/raw", OUTPUT="/shared/curated",
               RAY_JOB_ADDRESS="http://10.0.0.1:8265", NO_WAIT="1")
    run = subprocess.run(["bash", str(script), "--languages", "en,de"], cwd=REPO, env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "job", "submit", "--address", "http://10.0.0.1:8265", "--working-dir", ".",
        "--runtime-env", "launch/ray/runtime_env.yaml", "--no-wait", "--",
        "python", "-m", "curation", "run", "--config", "configs/curation/cluster.yaml",
        "--input", "/shared/raw", "--output", "/shared/curated", "--no-progress", "--languages", "en,de"]

    missing = subprocess.run(["bash", str(script)], cwd=REPO, capture_output=True, text=True,
                             env={k: v for k, v in env.items() if k != "INPUT"})
    assert missing.returncode == 2 and "INPUT and OUTPUT" in missing.stderr
    helped = subprocess.run(["bash", str(script), "--help"], cwd=REPO, capture_output=True, text=True)
    assert helped.returncode == 0 and "RAY_JOB_ADDRESS" in helped.stdout
