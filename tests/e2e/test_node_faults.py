"""A worker node of a real multi-node Ray cluster killed under load (issue 20, point 5).

One cluster, one kill, two subjects (``tests/e2e/node_faults.py`` drives it in its own process: a process
joins one Ray cluster only, and this session's is ``ray_local``). Two router replicas, one per worker
node, answer three retrying clients while a ``TorchMLP`` trains on both worker nodes; once the first
checkpoint is committed, the node holding the first replica is killed (SIGKILL to its raylet and
processes). Figures checked (docs/durability.md, "A worker node dies"):

- serving: no request fails after client retry; Serve re-places the replica on the remaining node by
  itself and answers keep coming; every answered prediction reaches the prediction log;
- training: the run finishes (``trainer.max_failures=1``) with every epoch once, the epochs after the
  kill run from the committed checkpoint (``resumed_from_epoch`` >= 1) on the remaining node only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.e2e.node_faults import EPOCHS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("node_faults")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["PYTHONPATH"] = str(REPO)
    # A loaded machine starts nodes slowly; Ray's default 60 s wait for a raylet then fails the start.
    env.setdefault("RAY_raylet_start_wait_time_s", "180")
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.node_faults", str(out), str(free_port())],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # every node's processes are in its group: stopped together below
    )
    try:
        output, _ = driver.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, output[-4000:]
    result: dict[str, Any] = json.loads((out / "figures.json").read_text())
    print(json.dumps({k: v for k, v in result.items() if k not in ("training", "failed")}))
    return result


@pytest.mark.cluster
def test_a_killed_worker_node_fails_no_request_and_serve_replaces_its_replica(
    figures: dict[str, Any],
) -> None:
    victim = figures["victim"]
    # Serve spread the two replicas over the two worker nodes; the victim held one of them.
    assert len(set(figures["replica_nodes_before"])) == 2 and victim in figures["replica_nodes_before"]
    assert figures["failed"] == [], f"requests failed even after retry: {figures['failed']}"
    # Re-placed by Serve alone on the remaining worker node (not the CPU-less head), and answering.
    after = figures["replica_nodes_after"]
    assert len(after) == 2 and victim not in after and figures["head"] not in after, figures
    assert figures["answered"] >= figures["answered_at_kill"] + 20
    assert figures["answered_not_logged"] == 0, "answered predictions missing from the prediction log"
    assert figures["wal_segments_left"] == [], "the dead node's write-ahead segments were not recovered"


@pytest.mark.cluster
def test_a_killed_training_node_resumes_from_the_checkpoint_on_the_remaining_node(
    figures: dict[str, Any],
) -> None:
    training, victim = figures["training"], figures["victim"]
    assert "error" not in training, training.get("error")
    # One worker on each node (SPREAD) before the kill: the lost node took a training worker with it.
    assert victim in figures["train_nodes_before"], figures
    history = training["history"]
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))  # each epoch once, none lost
    resumed = [row["resumed_from_epoch"] for row in history]
    assert max(resumed) >= 1, f"no epoch ran from a checkpoint: {resumed}"
    # The epochs before the resume point ran in the first attempt, the rest only after the restart.
    start = max(resumed)
    assert all(r == 0 for r in resumed[:start]) and all(r == start for r in resumed[start:]), resumed
    assert figures["train_nodes_after"] and victim not in figures["train_nodes_after"], figures
