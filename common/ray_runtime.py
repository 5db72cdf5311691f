"""The one way every Ray job of the project (curation, tokenization) starts an embedded local Ray or attaches to a
cluster, so that ``RAY_ADDRESS``, ``ray job submit`` and ``--ray_address`` behave the same in each."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Attach to ``address`` (else ``RAY_ADDRESS``) if given, else start an embedded local Ray on ``num_cpus``
    CPUs (None: all of them). Does nothing when Ray is already initialized (a test's, or a caller's own)."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        # No runtime_env here: under `ray job submit` the job already has one, and Ray refuses to merge two
        # that set the same keys. The cluster's (or the job's) environment is the one to use.
        log.info("attaching to Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
    else:
        with worker_env(RAY_WORKER_ENV):
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, configure_logging=False)


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
