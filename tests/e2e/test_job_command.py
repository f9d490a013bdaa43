"""The real commands: `python -m raymlops.job` on embedded Ray (its failure path; `make demo` and the
in-process tests/e2e/test_quickstart.py cover a whole embedded run); jobs/submit.py and `ray job submit`
against a multi-node Ray cluster on this machine (a head and two worker nodes, token auth on), where the
job command runs a whole pipeline to a served model with its Ray Data tasks, training workers and Serve
replicas on both worker nodes, the state on a path every node reads."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "+experiment=quickstart",
    "data.sample_fraction=0.1",
    "model.epochs=2",
    "serve.sample_requests=2",
    "evaluate.gates=['test/auc>=0.55']",
]


def _env(state_dir: Path) -> dict[str, str]:
    return {**os.environ, "RAYMLOPS_HOME": str(state_dir), "RAYMLOPS_PROGRESS": "0", "RAY_ADDRESS": ""}


def test_job_command_reports_a_failed_gate_and_exits_non_zero(tmp_path: Path) -> None:
    # The data gate: the command's failure path (message on stderr, exit 1) without a training run;
    # evaluation gates failing in a whole run are covered in-process by tests/e2e/test_quickstart.py.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "raymlops.job",
            *SMALL,
            "stages=[ingest,validate]",
            "validate.columns.origin.allowed=[EWR,JFK]",
        ],
        cwd=tmp_path,
        env=_env(tmp_path / "state"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "column 'origin'" in done.stderr and "LGA" in done.stderr, done.stderr[-3000:]


@dataclass(frozen=True)
class RayCluster:
    """A running multi-node cluster: its job server (dashboard) address, the token file, the node ids."""

    address: str
    token: Path
    head: str
    workers: tuple[str, ...]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """A real Ray cluster of three nodes on this machine (tests/e2e/ray_cluster.py: a head with no CPUs
    and two worker nodes), a dashboard (the job server) and token auth on; stopped by its process group
    afterwards. The token file stands in for ~/.ray/auth_token, so the test neither depends on nor
    touches the user's."""
    tmp_path = tmp_path_factory.mktemp("ray_cluster")
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    dashboard = free_port()
    out = tmp_path / "ray_cluster.log"
    with out.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.e2e.ray_cluster",
                "run",
                f"--port={free_port()}",
                f"--dashboard-port={dashboard}",
                f"--agent-port={free_port()}",
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={
                **os.environ,
                "RAY_ADDRESS": "",
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(token),
                # A job's entrypoint is `python -m ...` run by the cluster: like a real node, the cluster
                # has the project's environment first on PATH (CI runs .venv/bin/python un-activated).
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            },
        )
    address = f"http://127.0.0.1:{dashboard}"
    nodes = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        lines = [line for line in out.read_text().splitlines() if line.startswith('{"head"')]
        if lines:
            nodes = json.loads(lines[0])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{address}/api/version", timeout=2).status_code < 500:
                    break
        time.sleep(1)
    else:
        _stop(process)
        pytest.fail("the Ray cluster did not come up: " + out.read_text()[-3000:])
    assert nodes is not None
    yield RayCluster(address, token, nodes["head"], tuple(nodes["workers"]))
    _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the cluster's process group (every node's processes are in it): a graceful shutdown
    drains each node for up to 30 s, and nothing of this throw-away cluster needs saving."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.mark.cluster
def test_submit_without_the_token_is_refused(ray_cluster: RayCluster) -> None:
    address = ray_cluster.address
    done = subprocess.run(
        [sys.executable, "jobs/submit.py", "--address", address, "--no-wait", "+experiment=quickstart"],
        cwd=REPO,
        env={**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "submitted job" not in done.stdout
    assert "uthenticat" in done.stderr or "401" in done.stderr or "403" in done.stderr, done.stderr[-2000:]


@pytest.mark.cluster
def test_submit_through_the_job_api_runs_across_the_nodes_and_the_served_app_outlives_the_job(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    address, token = ray_cluster.address, ray_cluster.token
    port = free_port()
    done = subprocess.run(
        [
            sys.executable,
            "jobs/submit.py",
            "--address",
            address,
            # The nodes run this environment, as a cluster runs the image. (A working directory would
            # also do on real nodes; here the nodes share /tmp/ray/session_*/runtime_resources, and a
            # node's runtime-env agent may delete a package directory another node's job runs in.)
            "--installed",
            "--state-dir",
            str(tmp_path / "state"),
            *SMALL,
            "model.epochs=1",
            # The job API is under test here; the explain stage runs in the command test above.
            "stages=[ingest,validate,features,train,evaluate,export,register,deploy]",
            f"serve.port={port}",
            # One training worker per node, two replicas (Serve spreads them by default).
            "trainer.scaling.placement_strategy=STRICT_SPREAD",
            "serve.num_replicas=2",
            # Data steps as Ray Data over blocks even on this small sample (auto would run the
            # features stage in the driver): the test shows the data work spread over the nodes.
            "execution.mode=distributed",
        ],
        cwd=REPO,
        # Only the token's whereabouts: submit.py switches token auth on by itself when it finds one.
        env={**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_TOKEN_PATH": str(token)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    out = done.stdout
    assert "finished: SUCCEEDED" in out
    # The job's own summary, streamed back: every stage, the registered version, the URL, the sample
    # requests' real answers; Hydra's output stays under the state dir.
    for stage in ("ingest", "validate", "features", "train", "evaluate", "export", "register", "deploy"):
        assert f"\n{stage} " in out, out[-3000:]
    assert "registered model: flights-delay version 1" in out
    assert f"served at:        POST http://127.0.0.1:{port}/v1/models/flights-delay/predict" in out
    assert out.count("'probability':") >= 2
    assert (tmp_path / "state" / "mlflow.db").exists() and (tmp_path / "state" / "hydra").is_dir()
    # Serve apps are detached: the model keeps answering after the driver exited.
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/models/flights-delay/predict",
        json={
            "records": [
                {
                    "hour": 8,
                    "minute": 0,
                    "sched_dep_time": 800,
                    "sched_arr_time": 1100,
                    "distance": 1000,
                    "carrier": "UA",
                    "origin": "EWR",
                    "dest": "ORD",
                }
            ]
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert 0.0 <= response.json()["predictions"][0]["probability"] <= 1.0
    # Where the work ran, from Ray's state API: on both worker nodes, nothing on the head (no CPUs).
    where = subprocess.run(
        [sys.executable, "-m", "tests.e2e.ray_cluster", "placement", address],
        cwd=REPO,
        env={**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.returncode == 0, where.stderr[-2000:]
    placed = json.loads(where.stdout.strip().splitlines()[-1])
    workers = set(ray_cluster.workers)
    detail = placed.pop("data_tasks_by_node")
    assert {k: set(v) for k, v in placed.items()} == {"data": workers, "train": workers, "serve": workers}, (
        f"head {ray_cluster.head}: {detail}"
    )


@pytest.mark.cluster
def test_ray_job_submit_cli_with_the_documented_token_setting(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    # README: `export RAY_AUTH_MODE=token` (and the token: ~/.ray/auth_token or RAY_AUTH_TOKEN_PATH).
    address, token = ray_cluster.address, ray_cluster.token
    env = {**os.environ, "RAY_ADDRESS": address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    runtime_env = '{"env_vars": {"RAYMLOPS_HOME": "%s", "RAYMLOPS_PROGRESS": "0"}}' % (tmp_path / "state")
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ray"),
            "job",
            "submit",
            # No --working-dir: this cluster's three nodes share one /tmp/ray/session_*/runtime_resources,
            # and a node's runtime-env agent re-extracting the package under a running job made its
            # imports fail (ImportError in CI). The nodes run this environment, as nodes run the image.
            "--runtime-env-json",
            runtime_env,
            "--",
            "python",
            "-m",
            "raymlops.job",
            "+experiment=quickstart",
            "stages=[ingest,validate]",
            "data.sample_fraction=0.05",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "succeeded" in done.stdout.lower()
    assert "validate" in done.stdout and (tmp_path / "state" / "data" / "flights" / "_delta_log").is_dir()


@pytest.mark.cluster
def test_an_alert_that_retrains_submits_one_job_to_the_cluster_and_audits_it(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    """`raymlops alerts receive` (its own process, as deployed) through the real job server: one job per
    alert (a re-sent notification finds the job Ray already has), its entrypoint `python -m raymlops
    retrain` with the receiver's overrides, started by the cluster, audited with the alert. The job is
    stopped once it runs: what a retrain does is test_retrain.py's and test_feedback_loop.py's. Only the
    token's whereabouts are given: the receiver turns token auth on when it finds one."""
    from raymlops.config import compose
    from raymlops.security.audit import read_audit

    port = free_port()
    overrides = [f"state_dir={tmp_path}", f"alerts.retrain.address={ray_cluster.address}"]
    receiver = subprocess.Popen(
        [sys.executable, "-m", "raymlops", "alerts", "receive", "--port", str(port), *overrides],
        cwd=REPO,
        env={**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_TOKEN_PATH": str(ray_cluster.token)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    alert = {
        "status": "firing",
        "labels": {"alertname": "RaymlopsAccuracyDrop", "env": "dev", "model": "flights-delay"},
        "annotations": {"summary": "live accuracy fell by 0.08"},
        "startsAt": "2026-12-07T07:00:00Z",
        "fingerprint": "4f2a9c0de1b7a355",
    }
    payload = {"version": "4", "status": "firing", "receiver": "raymlops", "alerts": [alert]}
    url = f"http://127.0.0.1:{port}/alerts"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(ray_cluster.token)}
    job_id = None
    try:
        deadline = time.monotonic() + 60
        while True:  # up once /healthz answers
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert receiver.poll() is None and time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.5)
        first = httpx.post(url, json=payload, timeout=120)
        assert first.status_code == 200, first.text
        [outcome] = first.json()["alerts"]
        assert (outcome["action"], outcome["result"]) == ("retrain", "ok"), outcome
        job_id = outcome["details"]["job_id"]
        # Alertmanager re-sends the notification (or a second receiver gets it): no second job.
        again = httpx.post(url, json=payload, timeout=120)
        assert again.status_code == 200 and again.json()["alerts"][0]["result"] == "duplicate", again.text
        # What the cluster holds, through the job API with the same token (a process of its own: this
        # one's Ray took its auth mode from the session's local Ray).
        check = subprocess.run(
            [sys.executable, "-c", _JOB_INFO, ray_cluster.address, job_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert check.returncode == 0, check.stderr[-2000:]
        info = json.loads(check.stdout.strip().splitlines()[-1])
        assert info["entrypoint"].startswith("python -m raymlops retrain")
        assert f"state_dir={tmp_path}" in info["entrypoint"]
        assert info["fingerprint"] == alert["fingerprint"]
        assert info["submissions"] == 1
        assert info["status"] != "PENDING", info  # the cluster started it
    finally:
        receiver.send_signal(signal.SIGTERM)
        output = receiver.communicate(timeout=30)[0]
        if job_id:
            subprocess.run(
                [sys.executable, "-c", _STOP_JOB, ray_cluster.address, job_id], env=env, timeout=120
            )
    assert "receiving Alertmanager webhooks" in output and "stopping" in output, output[-2000:]
    cfg = compose(overrides)
    [record] = [r for r in read_audit(cfg.security.audit_log) if r.action == "alert.retrain"]
    assert record.outcome == "ok" and record.details["job_id"] == job_id
    assert record.details["fingerprint"] == alert["fingerprint"]


# Run in a process of their own, with RAY_AUTH_MODE=token from the start (see the test above).
_JOB_INFO = """
import json, sys, time
from ray.job_submission import JobStatus, JobSubmissionClient
client = JobSubmissionClient(sys.argv[1])
job_id = sys.argv[2]
deadline = time.monotonic() + 120
while client.get_job_status(job_id) == JobStatus.PENDING and time.monotonic() < deadline:
    time.sleep(1)
info = client.get_job_info(job_id)
print(json.dumps({
    "entrypoint": info.entrypoint,
    "fingerprint": (info.metadata or {}).get("fingerprint"),
    "status": client.get_job_status(job_id).value,
    "submissions": [j.submission_id for j in client.list_jobs()].count(job_id),
}))
"""
_STOP_JOB = """
import sys
from ray.job_submission import JobSubmissionClient
JobSubmissionClient(sys.argv[1]).stop_job(sys.argv[2])
"""
