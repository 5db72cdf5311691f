"""The embedded Ray that ``common.ray_runtime.init_ray`` starts (for curation and tokenization alike): its workers
get ``RAY_WORKER_ENV`` without a ``runtime_env`` (which made Ray start workers twice), and the driver's own
environment is left as it was."""

import os

import pytest

from common import ray_runtime
from curation import pipeline
from curation.config import RunConfig


def test_worker_env_sets_then_restores(monkeypatch):
    monkeypatch.setenv("CURATION_TEST_KEPT", "mine")
    monkeypatch.delenv("CURATION_TEST_NEW", raising=False)
    with ray_runtime.worker_env({"CURATION_TEST_KEPT": "theirs", "CURATION_TEST_NEW": "1"}):
        assert os.environ["CURATION_TEST_KEPT"] == "theirs" and os.environ["CURATION_TEST_NEW"] == "1"
    assert os.environ["CURATION_TEST_KEPT"] == "mine" and "CURATION_TEST_NEW" not in os.environ
    with pytest.raises(RuntimeError), ray_runtime.worker_env({"CURATION_TEST_NEW": "1"}):
        raise RuntimeError
    assert "CURATION_TEST_NEW" not in os.environ


@pytest.mark.ray
def test_local_ray_workers_get_the_worker_env(monkeypatch):
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray is running already: init_ray would attach to it")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "driver-value")
    pipeline.init_ray(RunConfig(num_cpus=1))
    try:
        @ray.remote
        def worker_env() -> dict[str, str | None]:
            return {k: os.environ.get(k) for k in ray_runtime.RAY_WORKER_ENV}

        assert ray.get(worker_env.remote()) == ray_runtime.RAY_WORKER_ENV
        assert os.environ["TOKENIZERS_PARALLELISM"] == "driver-value"
    finally:
        ray.shutdown()


def _alive(procs) -> list[str]:
    return [f"{kind} {info.process.pid}" for kind, infos in procs.items() for info in infos
            if info.process.poll() is None]


@pytest.mark.ray
def test_shutdown_ray_stops_every_process_of_the_local_ray_and_takes_the_fast_path(monkeypatch):
    """``shutdown_ray`` kills the autoscaler monitor first (1 s less at exit): this fails when a Ray upgrade
    moves the monitor's handle, so the slow path never comes back unnoticed; and nothing is left running."""
    import ray
    from ray._private import worker

    if ray.is_initialized():
        pytest.skip("a Ray is running already: init_ray would attach to it")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    pipeline.init_ray(RunConfig(num_cpus=1))
    try:
        procs = dict(worker._global_node.all_processes)
        assert {"raylet", "gcs_server", "monitor"} <= set(procs)
    finally:
        fast = ray_runtime.shutdown_ray()
    assert fast
    assert not ray.is_initialized()
    assert _alive(procs) == []
    assert ray_runtime.shutdown_ray() is False  # a second call: nothing to stop


@pytest.mark.ray
def test_shutdown_ray_leaves_a_ray_it_did_not_start_alone():
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray is running already")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        pipeline.init_ray(RunConfig(num_cpus=1))  # Ray is up: nothing to start, nothing owned
        assert ray_runtime.shutdown_ray() is False
        assert ray.is_initialized()
    finally:
        ray.shutdown()
