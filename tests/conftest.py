"""Shared fixtures: one local Ray for the whole session, Serve shut down after tests that deploy."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

# Quiet, fast Ray for tests: no auth prompt for a local cluster, no progress bars in CI logs,
# and Ray Train's report() not blocking on its 2 s health check.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAYMLOPS_PROGRESS", "0")


REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str, name: str) -> ModuleType:
    """A script of jobs/ or benchmarks/ (folders of scripts, not packages) loaded from its file as ``name``.
    Registered in ``sys.modules``: dataclasses look their module up while building a class."""
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_token_in_place() -> None:
    """Ray's default token (~/.ray/auth_token) created atomically if missing. On a new machine the two
    pytest-xdist processes start their Ray at the same moment, and each would write a token of its own
    over the other's; here the first link wins and both read the same token."""
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token
    from ray._private.authentication.authentication_token_setup import _get_default_token_path

    path = _get_default_token_path()
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    draft.write_text(generate_new_authentication_token())
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    import ray
    from ray.data import DataContext

    from raymlops.pipeline.ray_session import start_local_ray

    _ray_token_in_place()
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


@pytest.fixture(scope="module", autouse=True)
def no_train_run_outlives_its_module() -> Iterator[None]:
    """Fails the module that leaves a Ray Train run's placement group behind in this process's Ray.

    Such a group keeps its CPUs; once they are all held, a later test's Ray Data read in the same Ray waits
    for CPUs forever (a CI run lost 900 s to it, in a test far from the one that leaked).
    """
    yield
    import time

    import ray

    if not ray.is_initialized():
        return
    from raymlops.training.placement_groups import actor_created_groups

    deadline = time.monotonic() + 20  # a run's controller may still be ending its last checkpoint
    while (left := actor_created_groups()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"placement groups still held by Ray Train runs (id: creator dead?): {left}"


@pytest.fixture
def serve_port(ray_local: None) -> Iterator[int]:
    """A free HTTP port for Serve; Serve is shut down after the test so the next one starts clean."""
    from ray import serve

    port = free_port()
    yield port
    serve.shutdown()


# The slowest test files, slowest first (CI's --durations, summed per file, on 2 cores). `make test`
# hands files to its two pytest processes in collection order (--no-loadscope-reorder): these go first
# so the run does not end with one process on a long file while the other idles (longest first keeps
# the two finishing within about the length of the last short file). Files not listed follow, in order.
SLOW_FILES_FIRST = (
    "tests/conformance/test_model_families.py",
    "tests/e2e/test_job_command.py",
    "tests/integration/test_benchmarks_smoke.py",
    "tests/integration/test_training.py",
    "tests/e2e/test_quickstart.py",
    "tests/integration/test_benchmarks_smoke_serving.py",
    "tests/e2e/test_init_outside_repo.py",
    "tests/e2e/test_node_faults.py",
    "tests/integration/test_step_cache.py",
    "tests/e2e/test_task_experiments.py",
    "tests/integration/test_feedback_loop.py",
    "tests/e2e/test_plugins_quickstart.py",
    "tests/integration/test_lakefs_pipeline.py",
    "tests/integration/test_tune.py",
    "tests/integration/test_retrain.py",
    "tests/integration/test_rollout.py",
    "tests/integration/test_multinode_placement.py",
    "tests/integration/test_faults.py",
    "tests/e2e/test_scheduler.py",
    "tests/integration/test_prometheus_scrape.py",
    "tests/integration/test_prediction_log.py",
    "tests/integration/test_features_execution.py",
)


def _slow_files_first(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: keeps order


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow files first (``SLOW_FILES_FIRST``); one test id per API operation for schemathesis' generated
    tests (test_serving_fuzz.py).

    Pytest 9 builds a test's id from its original name, and schemathesis passes the test function's
    name for every operation: all of them shared one id, so pytest-xdist (which schedules by id) ran
    one operation of fourteen, and reports did not say which operation failed. Pytest 9 has no public
    way to name an item after creation, hence its private ``_id``; the label is schemathesis' own.
    """
    from _pytest.nodeid import NodeId

    for item in items:
        label = getattr(item, "operation_label", None)
        node_id = getattr(item, "_id", None)
        if label and isinstance(node_id, NodeId) and node_id.params is None:
            item._id = node_id.with_params(label)
    _slow_files_first(items)
