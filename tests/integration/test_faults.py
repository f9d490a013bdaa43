"""Faults under steady client traffic, on real Serve over real HTTP: a router replica and the Serve
controller killed with SIGKILL. Two router replicas log to a prediction log whose flush never triggers
during the test, so a killed replica's rows live only in its write-ahead file until the replica Serve
starts in its place recovers them.

Figures checked: every prediction whose answer reached its client is in the log; no request fails
after client-side retry (``raymlops.serving.retry``); both killed processes come back by themselves.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raymlops.monitoring.prediction_log import WAL_DIR, read_predictions
from raymlops.serving import ModelSpec, deploy
from tests.integration.test_prediction_log import TinyLogReg, raw_rows
from tests.integration.test_serving import PRE, ROWS, WEIGHTS, free_port
from tests.retrying_traffic import RetryingTraffic

APP = "faults-test"
MODEL = "flights"
CLIENTS = 3


def _alive(predicate: Callable[[dict[str, Any]], bool]) -> dict[str, int]:
    """Actor id -> pid of the live actors ``predicate`` picks, from Ray's GCS actor table."""
    import ray

    actors = ray._private.state.actors()  # the GCS table: works without the dashboard's state API
    return {a: int(i["Pid"]) for a, i in actors.items() if i["State"] == "ALIVE" and predicate(i)}


def _routers() -> dict[str, int]:
    return _alive(lambda i: i["ActorClassName"].startswith("ServeReplica:") and APP in i["ActorClassName"])


def _controller() -> dict[str, int]:
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME

    return _alive(lambda i: i.get("Name") == SERVE_CONTROLLER_NAME)


def _running() -> int:
    """Router replicas Serve reports RUNNING (set up and taking traffic), from ``serve.status()``."""
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None:
        return 0
    return sum(int(d.replica_states.get("RUNNING", 0)) for d in app.deployments.values())


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s} s"
        time.sleep(0.1)
    return time.monotonic() - started


def test_killed_replica_and_controller_lose_no_answered_prediction(ray_local: None, tmp_path: Path) -> None:
    from ray import serve

    from raymlops.models.export import export_pipeline

    path = tmp_path / "v1" / "model.onnx"
    export_pipeline(PRE, TinyLogReg(WEIGHTS["1"]), raw_rows(64, 0), path, opset=17, tolerance=1e-5)
    root = tmp_path / "predlog"
    log = {"root": str(root), "flush_rows": 100_000, "flush_interval_s": 3600.0, "fsync_interval_ms": 100}
    try:
        url = deploy(
            [ModelSpec(MODEL, "1", str(path), "delta-1", PRE.input_columns)],
            app_name=APP,
            host="127.0.0.1",
            port=free_port(),
            timeout_s=90,
            num_replicas=2,
            prediction_log=log,
        )
        replicas = _routers()
        assert len(replicas) == 2, replicas
        (controller_pid,) = _controller().values()
        with RetryingTraffic(f"{url}/v1/models/{MODEL}/predict", ROWS, CLIENTS) as traffic:
            _wait(lambda: traffic.count() >= 20, 30, "first answers")
            victim = sorted(replicas.values())[0]
            os.kill(victim, signal.SIGKILL)  # a router replica dies mid-traffic, its rows unflushed
            at_kill = traffic.count()
            replaced_s = _wait(
                lambda: len(_routers()) == 2 and victim not in _routers().values() and _running() == 2,
                60,
                "replica replaced",
            )
            os.kill(controller_pid, signal.SIGKILL)  # then the Serve controller
            during = traffic.count()
            _wait(lambda: traffic.count() >= during + 20, 30, "answers while the controller is down")
            back_s = _wait(
                lambda: bool(_controller()) and controller_pid not in _controller().values(), 60, "controller"
            )
            _wait(lambda: _running() == 2, 60, "two replicas running after the controller came back")
            after = traffic.count()
            _wait(lambda: traffic.count() >= after + 20, 30, "answers after the controller came back")
            # The killed replica's segments (named <time>-<pid>-...) recovered by a replica's start.
            recovered_s = _wait(
                lambda: not list((root / WAL_DIR).rglob(f"*-{victim}-*.wal")), 30, "segments recovered"
            )
        print(
            f"answered={len(traffic.answered)} retried={traffic.retried} failed={len(traffic.failed)} "
            f"at_kill={at_kill} replica_replaced_s={replaced_s:.1f} controller_back_s={back_s:.1f} "
            f"recovered_s={recovered_s:.1f}"
        )
        assert traffic.failed == [], "requests failed even after retry"
    finally:
        serve.delete(APP)  # graceful: the live replicas write their buffers out
        serve.shutdown()  # the next test file in this pytest process starts Serve on a port of its own
    logged = read_predictions(root, MODEL)
    missing = set(traffic.answered) - set(logged["prediction_id"].to_pylist())
    assert not missing, f"{len(missing)} of {len(traffic.answered)} answered predictions are not in the log"
    assert not list((root / WAL_DIR).rglob("*.wal")), (
        "a dead replica's write-ahead segments were not recovered"
    )
