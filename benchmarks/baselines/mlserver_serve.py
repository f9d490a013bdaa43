"""MLServer serving an ONNX graph with the custom runtime of mlserver_runtime.py (baselines venv).

``--input DIR`` holds ``model.onnx`` (the graph our side serves, written there by serve_vs_raw.py). The
runner writes MLServer's ``settings.json`` (the ports it is given, MLServer's other defaults: one
parallel inference worker) and ``flights/model-settings.json`` with a copy of mlserver_runtime.py beside
it into DIR, prints one JSON line (``{"baseline", "version", "parallel_workers", "infer_path"}``, or
``{"skipped": ...}`` where MLServer is missing), sends its further output to stderr and becomes
``mlserver start DIR``. The benchmark waits for ``/v2/models/flights/ready`` and stops it with SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from _runner import say, skip_unless_importable

MODEL = "flights"


def main() -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    args = p.parse_args()
    skip_unless_importable("mlserver", "onnxruntime", "numpy")
    import mlserver
    from mlserver.settings import Settings

    folder = Path(args.input).resolve()
    settings = {
        "http_port": args.http_port,
        "grpc_port": args.grpc_port,
        "metrics_port": args.metrics_port,
        "host": "127.0.0.1",
        "debug": False,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / MODEL).mkdir(exist_ok=True)
    model = {
        "name": MODEL,
        "implementation": "mlserver_runtime.OnnxFlights",
        "parameters": {"uri": str(folder / "model.onnx")},
    }
    (folder / MODEL / "model-settings.json").write_text(json.dumps(model))
    # The runtime beside its model-settings.json, MLServer's layout: it puts that folder on sys.path to
    # import the implementation, in its inference worker processes too.
    shutil.copy(Path(__file__).resolve().parent / "mlserver_runtime.py", folder / MODEL)
    say(
        {
            "baseline": "mlserver custom runtime (onnxruntime)",
            "version": mlserver.__version__,
            "parallel_workers": Settings(**settings).parallel_workers,
            "infer_path": f"/v2/models/{MODEL}/infer",
        }
    )
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the JSON line above is the runner's only stdout
    executable = str(Path(sys.executable).parent / "mlserver")
    os.execv(executable, [executable, "start", str(folder)])
    return 0  # not reached: execv replaced this process


if __name__ == "__main__":
    sys.exit(main())
