"""prediction_log: serving latency with the router's prediction log on vs off, over real HTTP.

Ours: ``deploy()`` with one version of the model and ``prediction_log={"root": <tmpdir>}``, i.e. per
request everything ``router`` measures plus one row per scored record handed to the log's buffer, and a
background thread in the replica writing the buffer out as Parquet (``flush_interval_s`` 0.5: more
writes during the measurement than the default 2 s, so this errs against us). Baseline: the same router,
same model version and settings, without the log. Both are applications on the same Serve (same HTTP
proxy, different route prefixes), must agree with onnxruntime on every probability checked, are warmed
up, and are measured alternately: log on, log off, log on, log off.

Figures: p50/p99 latency at concurrency 1 (all rounds pooled), requests/s at concurrency 4 (the median
round). Target (the issue): p50 with the log grows by at most 5% (``latency_p50_ms_c1`` ratio >=
1/1.05); p99 and throughput are reported without a target.

After measuring, the log is read back with ``read_predictions``: it must hold at least one row per
request sent to the logging application (warm-up included), once the replica has flushed.

The model and the client are ``router``'s (the flights preprocessing + XGBoost, cached between runs;
threads in this process, one keep-alive connection each, on the same cores as Ray).
"""

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

# Run as ``python benchmarks/prediction_log.py``: Python puts this folder first on sys.path.
from _harness import emit, log, parser, start_ray, summary
from router import (
    MODEL,
    MODEL_ROWS,
    PREDICT_PATH,
    SMOKE_MODEL_ROWS,
    Side,
    check_answers,
    compare,
    figures,
    free_port,
    input_columns,
    make_session,
    request_bodies,
    run_load,
    train_models,
)

NAME = "prediction_log"
VERSION = "1"
P50_GROWTH = 1.05  # p50 with the log may be at most 5% above p50 without it
P50_TARGET = round(1 / P50_GROWTH, 3)
FLUSH_INTERVAL_S = 0.5
LOG_WAIT_S = 30.0


def sizes(quick: bool, repeats: int | None, smoke: bool = False) -> dict[str, int]:
    if smoke:
        return {
            "rounds": repeats or 1,
            "latency_requests": 20,
            "throughput_requests": 32,
            "warmup_requests": 16,
            "model_rows": SMOKE_MODEL_ROWS,
        }
    # A 5% p50 budget is a fraction of a millisecond: more c=1 samples than ``router`` takes.
    return {
        "rounds": repeats or (4 if quick else 8),
        "latency_requests": 200 if quick else 500,
        "throughput_requests": 200 if quick else 1000,
        "warmup_requests": 100 if quick else 300,
        "model_rows": MODEL_ROWS,
    }


def logged_rows(root: Path, expected: int) -> int:
    """Rows of ``MODEL`` in the log under ``root``, polled until ``expected`` are there or a timeout."""
    from raymlops.monitoring.prediction_log import read_predictions

    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        table = read_predictions(root, MODEL)
        if table.num_rows >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    routes = set(table.column("route").to_pylist()) if table.num_rows else set()
    versions = set(table.column("version").to_pylist()) if table.num_rows else set()
    ids = len(set(table.column("prediction_id").to_pylist()))
    log(
        f"prediction log: {table.num_rows} rows ({ids} prediction ids) for {expected} requests sent; "
        f"routes {sorted(routes)}, versions {sorted(versions)}, {len(list(root.rglob('*.parquet')))} files"
    )
    return table.num_rows


def main(argv: list[str] | None = None) -> int:
    from ray import serve

    from raymlops.serving import ModelSpec, deploy

    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    size = sizes(args.quick, args.repeats, args.smoke)
    started = time.monotonic()
    start_ray()
    log(f"ray started in {time.monotonic() - started:.1f} s")
    path = train_models([VERSION], size["model_rows"])[VERSION]
    columns = input_columns()
    bodies = request_bodies(1000)
    port = free_port()
    spec = ModelSpec(MODEL, VERSION, str(path), f"bench-{VERSION}", columns)
    with tempfile.TemporaryDirectory(prefix="raymlops-bench-predlog-") as tmp:
        root = Path(tmp)
        try:
            deploy(
                [spec],
                app_name="bench-log-on",
                host="127.0.0.1",
                port=port,
                route_prefix="/on",
                timeout_s=180,
                prediction_log={"root": str(root), "flush_interval_s": FLUSH_INTERVAL_S},
            )
            deploy(
                [spec],
                app_name="bench-log-off",
                host="127.0.0.1",
                port=port,
                route_prefix="/off",
                timeout_s=180,
            )
            log(f"both applications ready at {time.monotonic() - started:.1f} s")
            on = Side("log-on", port, "/on" + PREDICT_PATH)
            off = Side("log-off", port, "/off" + PREDICT_PATH)
            sessions = {VERSION: make_session(path)}
            for side in (on, off):  # warm-up, and both must answer what onnxruntime answers
                load = run_load(side.port, side.path, bodies, 4, size["warmup_requests"], keep_answers=True)
                check_answers(side.name, load, bodies, sessions, columns)
                side.versions.update(load.versions)
            log(f"warm-up done, answers agree; {size}")
            compare(
                (on, off),
                bodies,
                rounds=size["rounds"],
                latency_requests=size["latency_requests"],
                throughput_requests=size["throughput_requests"],
                concurrencies=(4,),
            )
            log(f"measured in {time.monotonic() - started:.1f} s")
            sent = sum(on.versions.values())  # every 200 answer of the logging app, warm-up included
            rows = logged_rows(root, sent)
        finally:
            serve.shutdown()
    if rows < sent:
        raise AssertionError(
            f"the prediction log holds {rows} rows after {LOG_WAIT_S:.0f} s, "
            f"but {sent} one-record requests were sent to the logging app"
        )
    results = figures(NAME, on, off, None)
    results[0] = replace(results[0], target=P50_TARGET)  # latency_p50_ms_c1
    for figure in results:
        emit(figure)
    p50, base_p50 = results[0].ours, results[0].baseline
    assert base_p50 is not None
    growth = 100.0 * (p50 / base_p50 - 1.0)
    note = f"p50 {growth:+.1f}% with the log (budget +{100 * (P50_GROWTH - 1):.0f}%); {rows} rows logged"
    summary(results, note=note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
