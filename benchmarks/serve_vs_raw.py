"""serve_vs_raw: our serving path (Ray Serve router) vs raw uvicorn + FastAPI + onnxruntime, no Ray.

Ours: ``deploy()`` with one version of the model, as a user deploys it: Serve's HTTP proxy, the router
replica (record validation, routing, onnxruntime co-located, metrics, stats, prediction id and
headers). Baseline: what a user could write by hand: one uvicorn process (its default event loop and
HTTP parser), one FastAPI endpoint that parses the same JSON body, builds the feeds by hand and runs
the same onnxruntime session (same options), no Ray at all. Same model, same request bodies (one
flight record each), both warmed up, both must agree on every probability checked, measured
alternately: ours, baseline, ours, baseline.

Figures: p50/p99 latency at concurrency 1 (all rounds pooled), requests/s at concurrency 4 and 16 (the
median round). Context for users on what Serve costs, so no target.

Ray runs its workers (the Serve proxy and replica included) at nice 15 (``RAY_worker_niceness``); the
uvicorn process runs at the same niceness, so that on a shared machine it does not get many times the
CPU share of our processes. The client (this process: threads, one keep-alive connection each) runs at
the default niceness, on the same cores, for both.

Against MLServer (``*_vs_mlserver``), what a user might run instead: MLServer 1.7 with a custom runtime
(an ``mlserver.MLModel`` calling onnxruntime on the same graph with the same session options;
benchmarks/baselines/mlserver_runtime.py), its defaults otherwise (one parallel inference worker), in the
baselines venv (``make baselines``), at the same niceness as the raw server, answering V2 inference
requests that carry the same records (one tensor per column) and checked against onnxruntime as the
others. After the ours-vs-raw rounds, ours and MLServer alternate over the same rounds: p50/p99 at
concurrency 1, requests/s at 4 and 16 (target: ours >= 0.5x MLServer's). Without the venv the figures'
baselines are null and the summary says MLServer was skipped.

The model is ``router``'s (the flights preprocessing + XGBoost, 60 trees, exported with
``export_pipeline``), cached between runs.
"""

# No ``from __future__ import annotations``: FastAPI reads the raw server's endpoint annotations at run
# time.

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as ``python benchmarks/serve_vs_raw.py``: Python puts this folder first on sys.path.
from _harness import Figure, emit, log, parser, start_ray, summary
from baselines import add_option as add_baselines_option
from baselines import check_v2_answers, start_mlserver, v2_body
from baselines import note as baseline_note
from baselines import python as baselines_python
from router import (
    MODEL,
    PREDICT_PATH,
    Side,
    check_answers,
    compare,
    figures,
    free_port,
    input_columns,
    make_session,
    percentile_ms,
    request_bodies,
    run_load,
    score_body,
    sizes,
    train_models,
)

NAME = "serve_vs_raw"
MLSERVER_TARGET = 0.5  # the issue: our throughput (routing on) at least half of MLServer's


def raw_server(port: int, model_path: str) -> None:
    """The baseline server: uvicorn + FastAPI + onnxruntime in this process (``--raw-server``)."""
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    session = make_session(model_path)
    columns = input_columns()
    app = FastAPI()

    @app.post("/v1/models/{name}/predict")
    async def predict(name: str, request: Request) -> JSONResponse:
        return JSONResponse(score_body(session, columns, "1", await request.body()))

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def ray_worker_niceness() -> int:
    import ray

    return ray.get(ray.remote(num_cpus=0)(lambda: os.nice(0)).remote())


def start_raw_server(port: int, model_path: Path, niceness: int) -> subprocess.Popen[bytes]:
    """This file run with ``--raw-server`` at ``niceness``; returns once it answers over HTTP."""
    import httpx

    def prepare() -> None:  # in the child, before exec
        os.nice(niceness)
        if sys.platform == "linux":  # ends with us even if we are killed (PR_SET_PDEATHSIG = 1)
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)

    command = [sys.executable, __file__, "--raw-server", str(port), str(model_path)]
    child = subprocess.Popen(command, preexec_fn=prepare)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"the raw uvicorn server exited with code {child.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return child
        except httpx.HTTPError:
            time.sleep(0.2)
    child.kill()
    raise RuntimeError("the raw uvicorn server did not answer within 60 s")


def stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)


def mlserver_rounds(
    port: int, path: str, bodies: list[bytes], size: dict[str, int], session: object
) -> tuple[Side, Side]:
    """Ours and MLServer alternated over the same rounds; (ours, MLServer) measured."""
    columns = input_columns()
    v2_bodies = [v2_body(body, columns) for body in bodies]
    ours, theirs = Side("serve", port, PREDICT_PATH), Side("mlserver", size["mlserver_port"], path)
    load = run_load(theirs.port, theirs.path, v2_bodies, 4, size["warmup_requests"], keep_answers=True)
    check_v2_answers(load, bodies, session, columns)
    compare(
        (ours, theirs),
        {ours.name: bodies, theirs.name: v2_bodies},
        rounds=size["rounds"],
        latency_requests=size["latency_requests"],
        throughput_requests=size["throughput_requests"],
        concurrencies=(4, 16),
    )
    return ours, theirs


def mlserver_figures(ours: Side, measured: tuple[Side, Side] | None) -> list[Figure]:
    """Ours vs MLServer: p50/p99 at concurrency 1, requests/s at 4 and 16 (target 0.5x), each side's
    scaling from 4 to 16; without MLServer the same figures with ours from the first rounds, no baseline."""
    if measured is not None:
        kept = figures(NAME, *measured, MLSERVER_TARGET, suffix="_vs_mlserver")
        return [f for f in kept if not f.metric.startswith("throughput_rps_c16_over_c4")]  # ours vs ours
    out = [
        Figure(
            NAME, f"latency_p{q}_ms_c1_vs_mlserver", percentile_ms(ours.latencies_c1_s, q), None, "ms", False
        )
        for q in (50, 99)
    ]
    for concurrency in (4, 16):
        rps = statistics.median(ours.rps[concurrency])
        metric = f"throughput_rps_c{concurrency}_vs_mlserver"
        out.append(Figure(NAME, metric, rps, None, "req/s", True, MLSERVER_TARGET))
    return out


def main(argv: list[str] | None = None) -> int:
    from ray import serve

    from raymlops.serving import ModelSpec, deploy

    options = parser(__doc__.splitlines()[0])
    options.add_argument("--raw-server", nargs=2, metavar=("PORT", "MODEL"), help=argparse.SUPPRESS)
    add_baselines_option(options)
    args = options.parse_args(argv)
    if args.raw_server:
        raw_server(int(args.raw_server[0]), args.raw_server[1])
        return 0
    size = sizes(args.quick, args.repeats, args.smoke)
    started = time.monotonic()
    start_ray()
    log(f"ray started in {time.monotonic() - started:.1f} s")
    path = train_models(["1"], size["model_rows"])["1"]
    columns = input_columns()
    bodies = request_bodies(1000)
    serve_port, raw_port = free_port(), free_port()
    niceness = ray_worker_niceness()
    raw = start_raw_server(raw_port, path, niceness)
    log(f"raw uvicorn pid {raw.pid} at nice {niceness}, as the Ray workers")
    scratch = tempfile.TemporaryDirectory(prefix="raymlops-bench-mlserver-")
    mlserver, mlserver_info, measured = None, {}, None
    try:
        shutil.copy(path, Path(scratch.name) / "model.onnx")  # the same graph, in MLServer's folder
        size["mlserver_port"] = free_port()
        mlserver, mlserver_info = start_mlserver(
            baselines_python(args.baselines_python),
            Path(scratch.name),
            (size["mlserver_port"], free_port(), free_port()),
            niceness,
        )
        spec = ModelSpec(MODEL, "1", str(path), "bench-1", columns)
        deploy([spec], app_name="bench-serve", host="127.0.0.1", port=serve_port, timeout_s=180)
        log(f"both servers ready at {time.monotonic() - started:.1f} s")
        ours = Side("serve", serve_port, PREDICT_PATH)
        baseline = Side("raw", raw_port, PREDICT_PATH)
        sessions = {"1": make_session(path)}
        for side in (ours, baseline):  # warm-up, and the two must answer what onnxruntime answers
            load = run_load(side.port, side.path, bodies, 4, size["warmup_requests"], keep_answers=True)
            check_answers(side.name, load, bodies, sessions, columns)
        log(f"warm-up done, answers agree; {size}")
        compare(
            (ours, baseline),
            bodies,
            rounds=size["rounds"],
            latency_requests=size["latency_requests"],
            throughput_requests=size["throughput_requests"],
            concurrencies=(4, 16),
        )
        if mlserver is not None:
            log("ours vs MLServer, alternating")
            infer = mlserver_info["infer_path"]
            measured = mlserver_rounds(serve_port, infer, bodies, size, sessions["1"])
    finally:
        stop(raw)
        if mlserver is not None:
            stop(mlserver)
        scratch.cleanup()
        serve.shutdown()
    log(f"measured in {time.monotonic() - started:.1f} s")
    results = figures(NAME, ours, baseline, None)
    results += mlserver_figures(ours, measured)
    for figure in results:
        emit(figure)
    summary(
        results,
        note=f"vs raw uvicorn no target: context for users; {baseline_note('mlserver', mlserver_info)}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
