"""Fixtures shared by the curation tests."""

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """An embedded Ray on 2 CPUs for the module's tests (one start-up per module, not per test)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()
