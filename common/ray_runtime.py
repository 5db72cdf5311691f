"""The one way every Ray job of the project (curation, tokenization) starts an embedded local Ray or attaches to a
cluster, so that ``RAY_ADDRESS``, ``ray job submit`` and ``--ray_address`` behave the same in each."""

from __future__ import annotations

import logging
import os

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
        ray.init(num_cpus=num_cpus, include_dashboard=False,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
                 log_to_driver=True, configure_logging=False)
