"""Shared fixtures: one local Ray for the whole session, Serve shut down after tests that deploy."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

# Quiet, fast Ray for tests: no auth prompt for a local cluster, no progress bars in CI logs,
# and Ray Train's report() not blocking on its 2 s health check.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAYMLOPS_PROGRESS", "0")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    import ray
    from ray.data import DataContext

    from raymlops.pipeline.ray_session import start_local_ray

    # As the job starts its embedded Ray: the workers are told its address. With a plain ray.init, Ray
    # Train's PlacementGroupCleaner resolves the address on its own, its state API call runs into its
    # 10 s timeout, and every trainer.fit() waited 12 s for it to stop (21.7 s vs 9.4 s for a trivial fit).
    start_local_ray(
        num_cpus=4,
        include_dashboard=False,
        object_store_memory=512 * 1024**2,
        log_to_driver=False,
        configure_logging=False,
    )
    DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture
def serve_port(ray_local: None) -> Iterator[int]:
    """A free HTTP port for Serve; Serve is shut down after the test so the next one starts clean."""
    from ray import serve

    port = free_port()
    yield port
    serve.shutdown()
