"""The one way every Ray job of the project (curation, tokenization) starts an embedded local Ray or attaches to a
cluster, so that ``RAY_ADDRESS``, ``ray job submit`` and ``--ray_address`` behave the same in each."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)


_owned: str | None = None
"""What :func:`init_ray` did in this process: ``"local"`` (started an embedded Ray), ``"attached"`` (connected
to a cluster), None (nothing yet, or Ray was initialized by someone else). :func:`shutdown_ray` stops only
what init_ray started."""


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Attach to ``address`` (else ``RAY_ADDRESS``) if given, else start an embedded local Ray on ``num_cpus``
    CPUs (None: all of them). Does nothing when Ray is already initialized (a test's, or a caller's own)."""
    global _owned
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        # No runtime_env here: under `ray job submit` the job already has one, and Ray refuses to merge two
        # that set the same keys. The cluster's (or the job's) environment is the one to use.
        log.info("attaching to Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
        _owned = "attached"
    else:
        with worker_env(RAY_WORKER_ENV):
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, configure_logging=False)
        _owned = "local"


def shutdown_ray() -> bool:
    """Stop the Ray that :func:`init_ray` started (or leave the cluster it attached to), now rather than in
    Ray's exit hook; returns whether it stopped the local autoscaler monitor first (see below). Does nothing
    when init_ray started nothing (a Ray a test or a caller initialized stays up).

    Why, measured on the demo run (2-core machine, Ray 2.60): the exit took ~1.9 s after the summary was
    printed. ``ray.shutdown`` from Ray's ``atexit`` hook sleeps 0.5 s first (so that late worker log lines are
    printed; every task has returned by the time a run ends); called here it does not. It then stops the
    raylet, the GCS, and then the autoscaler monitor, which on SIGTERM tries to tell the (already stopped) GCS
    that it died, and is SIGKILLed after a 1 s timeout: 1.0 of the 1.4 s of ``ray.shutdown``. A local embedded
    run has nothing to autoscale, so the monitor is killed first (no handler runs, no "monitor died" error
    reaches the driver) and ``ray.shutdown`` then finds it gone. The monitor's handle is Ray's own bookkeeping
    (``_global_node.all_processes``, not a public API): when a Ray upgrade moves it, this falls back to the
    plain, slower ``ray.shutdown`` and ``tests/common/test_ray_runtime.py`` fails, rather than this breaking
    anything. Either way every process the local Ray started is stopped before this returns."""
    global _owned
    owned, _owned = _owned, None
    if owned is None:  # before importing Ray: a run that failed on its config never imported it
        return False
    import ray

    if not ray.is_initialized():
        return False
    stopped = _kill_local_monitor() if owned == "local" else False
    ray.shutdown()
    return stopped


def _kill_local_monitor() -> bool:
    """SIGKILL the autoscaler monitor of the embedded Ray this process started, and reap it; False when it
    cannot be found (see :func:`shutdown_ray`)."""
    try:
        from ray._private import ray_constants, worker

        infos = worker._global_node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, [])
        if not infos:
            return False
        for info in infos:
            if info.process.poll() is None:
                info.process.kill()
                info.process.wait(timeout=5)
        return True
    except Exception:  # any change in Ray's internals: ray.shutdown stops it the slow way
        log.debug("could not stop Ray's autoscaler monitor early", exc_info=True)
        return False


RAY_WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false"}
"""Environment of the local Ray's workers. Not a ``runtime_env``: with one, Ray cannot use the workers it
prestarts at ``ray.init`` and starts others through its runtime-env agent. On the curation demo run (busy 2-core
machine) that was a fifth of the CPU time of all its processes (15-16 s against 11.5-12.5 s) and stage 1 took
13.5 s instead of 4-8 s. Under ``ray job submit`` the job's runtime_env sets it (launch/ray/runtime_env.yaml)."""


@contextlib.contextmanager
def worker_env(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` while the local Ray starts, then restore ours: its processes (the raylet, and the workers
    the raylet starts, at once or later) copy the environment they were started with."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
