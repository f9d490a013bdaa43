"""Issue 19's MLflow checks on a registered version: ``mlflow.pyfunc.load_model("models:/NAME@ALIAS")`` and
``mlflow models serve -m models:/NAME@ALIAS --env-manager local`` (a real subprocess, stopped by its PID)
answer exactly what the router answered over HTTP for the same records."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx

from tests.conftest import free_port

# What only the router adds to a v1 answer row: its out-of-distribution check and its feature lookup.
ROUTER_FIELDS = ("ood", "imputed")


def task_fields(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of a v1 answer without the router-only fields: what an MLflow-level load answers."""
    return [{k: v for k, v in row.items() if k not in ROUTER_FIELDS} for row in answers]


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """MLflow's fluent API pointed at ``uri`` for the block, then back where it was."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def pyfunc_answers(tracking_uri: str, model_uri: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``mlflow.pyfunc.load_model(model_uri).predict(DataFrame(records))``."""
    import mlflow.pyfunc
    import pandas as pd

    with tracking(tracking_uri):
        model = mlflow.pyfunc.load_model(model_uri)
    schema = model.metadata.get_input_schema()
    frame = pd.DataFrame(records)
    for column in schema.inputs:  # as a user builds it: numbers as doubles (the signature's type)
        if column.type.name == "double":
            frame[column.name] = frame[column.name].astype("float64")
    return model.predict(frame)


def served_by_mlflow(
    tracking_uri: str, model_uri: str, records: list[dict[str, Any]], timeout_s: float = 240.0
) -> dict[str, Any]:
    """``mlflow models serve`` as a subprocess: its answer to ``POST /invocations`` with the records."""
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        # The server starts `uvicorn` by name: the virtual environment's bin, as an activated venv has it.
        "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    # A file, not a pipe, for its output: a full pipe would stall the server.
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # uvicorn runs as its child: the group is stopped together below
        )
        try:
            return _invoke(f"http://127.0.0.1:{port}", server, log, records, timeout_s)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def _invoke(
    url: str, server: subprocess.Popen, log: Any, records: list[dict[str, Any]], timeout_s: float
) -> Any:
    """Wait for the server's /ping, then POST the records to /invocations; its JSON answer."""

    def output() -> str:
        log.seek(0)
        return log.read()[-3000:]

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mlflow models serve exited {server.returncode}: {output()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                break
        time.sleep(0.25)
    else:
        raise AssertionError(f"mlflow models serve did not answer /ping in {timeout_s:.0f} s: {output()}")
    response = httpx.post(f"{url}/invocations", json={"dataframe_records": records}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()
