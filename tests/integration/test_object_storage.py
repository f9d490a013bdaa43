"""State on object storage and a tracking server, through the same code paths as real S3.

One module stack, started here and stopped by PID: a local S3 endpoint (moto's server mode), and an
MLflow tracking server (``mlflow server``) on PostgreSQL whose artifacts go to that endpoint. The
credentials and endpoint reach our code only through the standard AWS environment variables, as in
production. The tracking server boots (~15 s of imports and migrations) while the S3-only tests run.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

from raymlops.data.delta import ensure_table
from raymlops.data.refs import open_backend
from raymlops.monitoring.parquet_log import ParquetLog, read_log
from raymlops.monitoring.prediction_log import (
    Feedback,
    PredictionLogger,
    join_feedback,
    read_feedback,
    read_predictions,
)
from raymlops.registry.governance import Governance
from raymlops.registry.mlflow_registry import ModelRegistry
from raymlops.serving import ModelSpec, deploy
from tests.conftest import free_port
from tests.integration.test_serving import PRE, ROWS, WEIGHTS, direct_probabilities, model_graph

pytestmark = [pytest.mark.cluster]


BUCKET = "raymlops-state"  # moto enforces S3's bucket naming rules, as S3 does
SERVER_ARTIFACTS = f"s3://{BUCKET}/mlflow-server"  # the tracking server's --artifacts-destination
NAME = "flights"
STARTUP_S = 180.0  # a loaded 2-core CI machine; typically ~3 s (moto) and ~15 s (mlflow server)


def _postgres_bin() -> Path:
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run `make system-deps` (Debian's postgresql).")
    return Path(found[-1]).parent


def _wait(ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{what} did not start (exit code {proc.returncode}):\n{tail}")
        time.sleep(0.2)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Our process and what it spawned (its own session: mlflow starts uvicorn, postgres its backends),
    by its PID. SIGKILL: their state is thrown away with the folder; a graceful stop cost seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


@dataclass
class Stack:
    s3_env: dict[str, str]  # what a process (a Ray worker) needs to reach the endpoint
    s3_log: Path  # the endpoint's request log
    mlflow_url: str
    mlflow: subprocess.Popen[bytes]
    mlflow_log: Path

    def tracking_uri(self) -> str:
        """The tracking server's URL, once it answers."""
        _wait(lambda: _answers(f"{self.mlflow_url}/health"), "mlflow server", self.mlflow, self.mlflow_log)
        return self.mlflow_url


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    import boto3

    # The `postgres` user must reach the data folder: pytest's tmp folders are root's, mode 0700.
    work = Path(tempfile.mkdtemp(prefix="raymlops-objstore-"))
    procs: list[subprocess.Popen[bytes]] = []
    s3_port, pg_port, mlflow_port = free_port(), free_port(), free_port()
    endpoint = f"http://127.0.0.1:{s3_port}"
    s3_env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,  # pyarrow, deltalake, boto3
        "MLFLOW_S3_ENDPOINT_URL": endpoint,  # MLflow's S3 artifact store
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata probes for credentials
    }

    def start(args: list[Any], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(a) for a in args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
            )
        procs.append(proc)
        return proc

    bindir, scripts = _postgres_bin(), Path(sys.executable).parent
    # PostgreSQL refuses to run as root: as root, its processes run as the `postgres` user.
    as_postgres: dict[str, Any] = {}
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        as_postgres = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        os.chown(work, user.pw_uid, user.pw_gid)
    try:
        moto_log, mlflow_log = work / "moto.log", work / "mlflow.log"
        moto = start([scripts / "moto_server", "-H", "127.0.0.1", "-p", s3_port], moto_log)
        subprocess.run(  # trust: a throwaway cluster listening on 127.0.0.1 and a private socket only
            [bindir / "initdb", "-D", work / "pg", "-A", "trust", "-U", "mlflow", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            **as_postgres,
        )
        start(
            [
                *(bindir / "postgres", "-D", work / "pg", "-k", work, "-h", "127.0.0.1", "-p", pg_port),
                *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
            ],
            work / "postgres.log",
            **as_postgres,
        )
        # MLflow retries its database connection while PostgreSQL starts: no need to wait for it.
        mlflow = start(
            [
                *(scripts / "mlflow", "server"),
                *("--backend-store-uri", f"postgresql://mlflow@127.0.0.1:{pg_port}/postgres"),
                *("--artifacts-destination", SERVER_ARTIFACTS),
                *("--host", "127.0.0.1", "--port", mlflow_port, "--workers", 1),
            ],
            mlflow_log,
            # MLflow's job runner (huey workers) runs GenAI jobs, of which this test has none.
            env={**os.environ, **s3_env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        # Ray (if this module starts it) while the servers boot; before the AWS variables are set
        # here, so that the suite's Ray workers never inherit an endpoint that dies with this module.
        request.getfixturevalue("ray_local")
        with pytest.MonkeyPatch.context() as env:
            for key, value in s3_env.items():
                env.setenv(key, value)
            _wait(lambda: _answers(f"{endpoint}/moto-api/"), "moto_server", moto, moto_log)
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            yield Stack(s3_env, moto_log, f"http://127.0.0.1:{mlflow_port}", mlflow, mlflow_log)
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def test_prediction_log_on_s3_written_read_and_joined(stack: Stack) -> None:
    """The router's writer and the monitor's readers on s3://, and a file large enough for a
    multipart upload (what moto 5.2.1 broke for pyarrow)."""
    root = f"s3://{BUCKET}/prediction_log"
    spec = ModelSpec(
        name=NAME,
        version="1",
        onnx_path="unused.onnx",  # the logger records the spec's name, version and columns only
        data_version="delta:s3://t@0",
        input_columns=dict(PRE.input_columns),
    )
    features = pa.table(
        {"distance": [1400.0, 250.0, 3000.25], "hour": [7.0, 23.5, 0.0], "origin": ["JFK", "LGA", None]}
    )
    logger = PredictionLogger(root, flush_rows=10_000, flush_interval_s=60)
    logger.log(spec, "served", "req-a", features, np.array([0.9, 0.2, 0.6]), latency_ms=1.5)
    logger.log_feedback([Feedback("req-a", 1.0, 0, NAME), Feedback("req-a", 0.0, 2, None)])
    logger.close()  # writes both logs: PUT of a hidden temporary, then a rename (copy + delete on S3)

    predictions = read_predictions(root, NAME)
    assert predictions.column("probability").to_pylist() == [0.9, 0.2, 0.6]
    assert predictions.column("f_origin").to_pylist() == ["JFK", "LGA", None]
    joined = join_feedback(predictions, read_feedback(root, NAME))
    assert sorted(zip(joined["row"].to_pylist(), joined["outcome"].to_pylist(), strict=True)) == [
        (0, 1.0),
        (2, 0.0),
    ]

    # 6.6 MiB of incompressible floats: pyarrow uploads a file over 5 MiB in parts.
    rng = np.random.default_rng(0)
    big = pa.table({f"x{i}": rng.random(140_000) for i in range(5)})
    log = ParquetLog(
        f"s3://{BUCKET}/big",
        schema=big.schema,
        partition_cols=(),
        name_prefix="big",
        flush_rows=big.num_rows,  # one file
        max_buffer_rows=big.num_rows,
    )
    log.append(big)
    log.close()
    assert log.stats()["written_rows"] == big.num_rows and log.stats()["failed_writes"] == 0
    assert read_log(f"s3://{BUCKET}/big", ()).equals(big)
    # Written as a multipart upload (then renamed: a copy, whose ETag no longer tells).
    uploads = [line for line in stack.s3_log.read_text().splitlines() if "?uploads" in line]
    assert any("POST" in line and "/big/.part-big-000000.parquet.tmp?uploads" in line for line in uploads)


def _flights_in_ray(refs: list[str]) -> list[list[int]]:  # a Ray task: resolves and reads there
    found = []
    for ref in refs:
        backend = open_backend(ref)
        found.append(sorted(row["flight"] for row in backend.read(backend.resolve()).take_all()))
    return found


def test_delta_table_on_s3_versions_read_with_ray(stack: Stack) -> None:
    """Write, write-audit-publish, history and a pinned read through Ray Data, all on s3://."""
    import ray

    uri = f"s3://{BUCKET}/tables/flights"
    first = pa.table({"flight": [1, 2, 3], "delay": [5.0, -3.0, 40.0]})
    assert ensure_table(uri, first, "initial load") == 0
    backend = open_backend(f"delta:{uri}")
    candidate = backend.stage(pa.table({"flight": [4], "delay": [12.0]}), "april", {"source": "test"})
    assert backend.publish(candidate, "publish april", {}).version == "1"
    assert [c.message for c in backend.log()] == ["publish april", "initial load"]
    assert backend.num_rows(backend.resolve()) == 4

    # Ray workers reach S3 through their own environment (the nodes' or a job's runtime_env); the
    # suite's Ray started without these variables.
    read = ray.remote(_flights_in_ray).options(runtime_env={"env_vars": stack.s3_env})
    pinned, latest = ray.get(read.remote([f"delta:{uri}@0", f"delta:{uri}"]), timeout=180)
    assert (pinned, latest) == ([1, 2, 3], [1, 2, 3, 4])


def test_registry_on_a_tracking_server_with_s3_artifacts_serves(
    stack: Stack, serve_port: int, tmp_path: Path
) -> None:
    """Versions registered on the server (artifacts proxied by it, and written to S3 directly), an
    alias moved, the model folder downloaded, and a deployment answering from it."""
    import boto3
    import onnx

    from raymlops.data.profile import Profile
    from raymlops.data.stats import table_stats
    from raymlops.models.export import compose_pipeline
    from raymlops.monitoring.version_info import PROFILE
    from raymlops.serving.operations import spec_from_registry

    url = stack.tracking_uri()
    lock = str(tmp_path / "registry.lock")  # a tracking server has no SQLite file to lock beside
    proxied = ModelRegistry(url, "mlflow-artifacts:/", "s3-proxied", lock_path=lock)
    direct = ModelRegistry(url, f"s3://{BUCKET}/mlflow", "s3-direct", lock_path=lock)
    files = tmp_path / "files"
    files.mkdir()
    onnx.save(compose_pipeline(PRE, model_graph(WEIGHTS["1"])), str(files / "model.onnx"))
    reference = pa.table(
        {"distance": [500.0, 1000.0, 2500.0], "hour": [6.0, 12.0, 20.0], "origin": ["EWR", "JFK", "LGA"]}
    )
    Profile.from_stats(table_stats(reference), reference.num_rows, "delta:s3://t@0").save(files / PROFILE)
    tags = {"raymlops.input_columns": ",".join(f"{k}:{v}" for k, v in PRE.input_columns.items())}
    versions = []
    for registry in (proxied, direct):
        run = registry.client.create_run(registry.experiment_id(), run_name=registry.experiment)
        versions.append(
            registry.register_version(
                model_name=NAME,
                run_id=run.info.run_id,
                model_files=[files / "model.onnx", files / PROFILE],
                tags=tags,
            )
        )
    assert versions[0].source.startswith("mlflow-artifacts:/s3-proxied/"), versions[0].source
    assert versions[1].source.startswith(f"s3://{BUCKET}/mlflow/s3-direct/"), versions[1].source
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert sum(k.startswith("mlflow-server/s3-proxied/") and k.endswith("/model.onnx") for k in keys) == 1
    assert sum(k.startswith("mlflow/s3-direct/") and k.endswith("/model.onnx") for k in keys) == 1

    governance = Governance(direct)
    governance.set_alias(NAME, "champion", "1", why="first")
    governance.set_alias(NAME, "champion", "2", why="moved", expected="1")
    assert governance.aliases(NAME) == {"champion": "2"}
    held = direct.by_alias(NAME, "champion")
    assert held is not None and held.version == "2"
    original = (files / "model.onnx").read_bytes()
    assert proxied.local_artifact(versions[0], "model.onnx").read_bytes() == original
    assert direct.local_artifact(versions[1], "model.onnx").read_bytes() == original

    spec = spec_from_registry(direct, NAME, "@champion", weight=1.0)
    assert spec.version == "2" and not spec.onnx_path.startswith(str(tmp_path))  # the downloaded copy
    assert spec.input_profile is not None  # profile.json came with the model folder: OOD checks kept
    _served_answers_like_onnxruntime(spec, serve_port, files / "model.onnx")

    # A replica on another node cannot read the folder this process downloaded: it downloads its own
    # copy from the version's source, through the tracking server for mlflow-artifacts:/.
    from dataclasses import replace

    proxied_spec = spec_from_registry(proxied, NAME, "1", weight=1.0)
    assert proxied_spec.source == versions[0].source and proxied_spec.tracking_uri == stack.tracking_uri()
    elsewhere = replace(proxied_spec, onnx_path="/not/on/this/node/model.onnx")
    _served_answers_like_onnxruntime(elsewhere, serve_port, files / "model.onnx")


def _served_answers_like_onnxruntime(spec: ModelSpec, port: int, onnx_file: Path) -> None:
    """Deploy ``spec`` alone and check its answers over HTTP equal onnxruntime's on ``onnx_file``."""
    url = deploy([spec], app_name="object-storage-test", host="127.0.0.1", port=port, timeout_s=120)
    response = httpx.post(f"{url}/v1/models/{NAME}/predict", json={"records": ROWS}, timeout=30)
    assert response.status_code == 200, response.text
    answered = [p["probability"] for p in response.json()["predictions"]]
    np.testing.assert_allclose(answered, direct_probabilities(str(onnx_file), ROWS), atol=1e-6)
    assert response.headers["model-version"] == spec.version
