"""The baselines users would pick instead of ours, run beside our benchmarks (issue 18, point 5).

Evidently, pandera and MLServer pin packages that conflict with Ray's (pydantic, fastapi, uvicorn,
grpcio, pandas...), so they live in their own venv, ``.venv-baselines`` (``make baselines``), never in
``.venv``. A benchmark writes its input (parquet files, the ONNX graph) to a folder, runs the baseline's
runner script of this folder with that venv's Python as a child process, and reads the one JSON object
the runner prints. Without the venv a runner is not started and the benchmark reports its own figures
with the baseline's left empty (``{"skipped": "make baselines ..."}``): the smoke tests run without it.

This module is imported by the benchmarks (our venv); the runner scripts beside it (``_runner.py``,
``evidently_drift.py``, ``pandera_validation.py``, ``mlserver_serve.py``, ``mlserver_runtime.py``) run in
the baselines venv and import nothing of ours.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_PYTHON = REPO / ".venv-baselines" / "bin" / "python"
SKIPPED = {"skipped": f"make baselines (no {DEFAULT_PYTHON.relative_to(REPO)})"}
RUNNERS = ("evidently_drift.py", "pandera_validation.py", "mlserver_serve.py")


def add_option(parser: Any) -> None:
    """``--baselines-python``: the Python of the baselines venv (default: .venv-baselines's, if any)."""
    parser.add_argument(
        "--baselines-python",
        default=None,
        help="Python of the baselines venv (`make baselines`; default .venv-baselines/bin/python if it "
        "exists; 'none' skips the baselines)",
    )


def python(option: str | None) -> str | None:
    """The baselines Python to use, or None (skip): the option's, else the default venv's if it exists."""
    if option == "none":
        return None
    if option:
        if not Path(option).exists():
            raise FileNotFoundError(f"--baselines-python {option!r} does not exist; run `make baselines`")
        return option
    return str(DEFAULT_PYTHON) if DEFAULT_PYTHON.exists() else None


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def parse_result(stdout: str) -> dict[str, Any]:
    """The runner's JSON object: the last stdout line that opens like JSON."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ValueError(f"the baseline runner printed no JSON object; its stdout: {stdout[-500:]!r}")
    result = json.loads(lines[-1])
    if not isinstance(result, dict):
        raise ValueError(f"the baseline runner printed {result!r}, not a JSON object")
    return result


def run(
    runner: str, args: Sequence[str], baselines_python: str | None, timeout_s: float = 900
) -> dict[str, Any]:
    """Run ``runner`` (a script of this folder) with ``baselines_python``; its JSON, or ``SKIPPED``."""
    if baselines_python is None:
        _log(f"{runner}: skipped, {SKIPPED['skipped']}")
        return dict(SKIPPED)
    command = [baselines_python, str(HERE / runner), *args]
    _log(f"baseline: {' '.join(command)}")
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"baseline runner {runner} exited {done.returncode}; see its stderr above")
    result = parse_result(done.stdout)
    _log(f"{runner}: {result}")
    return result


def seconds(result: dict[str, Any]) -> float | None:
    """The baseline's median seconds, None when it was skipped."""
    return None if "skipped" in result else float(result["seconds"])


def note(name: str, result: dict[str, Any]) -> str:
    """The summary's words on a baseline: its version, or why it was skipped."""
    if "skipped" in result:
        return f"{name} skipped: {result['skipped']}"
    return f"{name} {result.get('version', '?')}"


# ------------------------------------------------------------------------------------- MLServer


def start_mlserver(
    baselines_python: str | None, folder: Path, ports: tuple[int, int, int], niceness: int
) -> tuple[subprocess.Popen[bytes] | None, dict[str, Any]]:
    """MLServer serving ``folder/model.onnx`` at ``niceness``, once it answers ready; (None, SKIPPED)
    without the venv. ``ports``: HTTP, gRPC, metrics (all free: MLServer's defaults may be taken)."""
    import httpx

    if baselines_python is None:
        _log(f"mlserver: skipped, {SKIPPED['skipped']}")
        return None, dict(SKIPPED)

    def prepare() -> None:  # in the child, before exec
        os.nice(niceness)
        if sys.platform == "linux":  # ends with us even if we are killed (PR_SET_PDEATHSIG = 1)
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)

    http, grpc, metrics = ports
    command = [baselines_python, str(HERE / "mlserver_serve.py"), "--input", str(folder)]
    command += ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, preexec_fn=prepare, cwd=folder)
    assert child.stdout is not None
    info = parse_result(child.stdout.readline().decode())
    if "skipped" in info:
        child.wait(30)
        return None, info
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"mlserver exited with code {child.returncode}; see its output above")
        try:
            if httpx.get(f"http://127.0.0.1:{http}/v2/models/flights/ready", timeout=1).status_code == 200:
                _log(f"mlserver pid {child.pid} ready at nice {niceness}: {info}")
                return child, info
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    child.kill()
    raise RuntimeError("mlserver did not answer ready within 120 s")


def v2_body(body: bytes, columns: dict[str, str]) -> bytes:
    """Our predict body (``{"records": [...]}``) as a V2 inference request: a tensor per column."""
    records = json.loads(body)["records"]
    inputs = []
    for name, kind in columns.items():
        values = [r[name] for r in records]
        if kind == "float":
            inputs.append({"name": name, "shape": [len(values), 1], "datatype": "FP32", "data": values})
        else:
            values = ["" if v is None else v for v in values]
            inputs.append({"name": name, "shape": [len(values), 1], "datatype": "BYTES", "data": values})
    return json.dumps({"inputs": inputs}).encode()


def check_v2_answers(load: Any, bodies: Sequence[bytes], session: Any, columns: dict[str, str]) -> None:
    """Every kept V2 answer equals onnxruntime run here on the same record (``bodies``: ours)."""
    import numpy as np
    from router import score_body

    for index, data in load.answers.items():
        (output,) = [o for o in json.loads(data)["outputs"] if o["name"] == "probability"]
        want = [
            p["probability"]
            for p in score_body(session, columns, "1", bodies[index % len(bodies)])["predictions"]
        ]
        if not np.allclose(output["data"], want, atol=1e-6):
            raise AssertionError(
                f"mlserver answered {output['data']} for body {index}, onnxruntime gives {want}"
            )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
