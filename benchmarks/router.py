"""router: the full serving router vs a bare Serve deployment of the same model, over real HTTP.

Ours: ``deploy()`` with two live versions of the model split 95/5 (no sticky key, no shadow), i.e. per
request: body read, record validation into an Arrow table, weighted version choice, the version's
onnxruntime session (co-located in the router replica), Prometheus metrics, rolling stats, a prediction
id and the ``model-*``/``data-version`` headers. Baseline: the model deployment alone, a bare Serve
deployment with a FastAPI ingress and the access log off (as ours), one replica of 0.25 CPU taking
``max_ongoing_requests`` 64 at once (as ours), the same onnxruntime session options, that parses the
same JSON body, builds the feeds by hand and answers the same predictions. Both run on the same Serve
(same HTTP proxy, different route prefixes), must agree on every probability checked, are warmed up,
and are measured alternately: ours, baseline, ours, baseline.

Figures: p50/p99 latency at concurrency 1 (all rounds pooled); requests/s at concurrency 4 and 16 (the
median round); and ``throughput_scaling_c16_vs_c4*``: each side's requests/s at 16 in flight against
its own at 4 (``ours`` is the router's, ``baseline`` bare Serve's, ``ratio`` ours/baseline), with the
router's own ratio as ``throughput_rps_c16_over_c4*`` (target >= 0.95: more load must not be served
slower). A Serve replica takes at most ``max_ongoing_requests`` at once; beyond that Serve's proxy does
not queue for it but re-polls with a back-off (25 ms doubling to 0.5 s): at Serve's default of 5, 16 in
flight were served at half the rate of 4, for the router and bare Serve alike. Hence 64 on both sides
(``--max-ongoing-requests`` to compare). Targets (the issue): throughput >= 0.90x the baseline, added
p50 <= 1 ms (``latency_p50_ms_c1_budget``: its baseline is the bare deployment's p50 + 1 ms).

The model is real: the flights preprocessing (5 numeric, 3 categorical columns) fitted on synthetic
flights and an XGBoost model (the family's defaults: 60 rounds, depth 6) per version, exported with
``export_pipeline`` (parity-checked ONNX graph). Each request carries one flight record.

The same router with both versions in their own ``ModelServer`` deployments behind a
``DeploymentHandle`` (``placement="deployment"``, ``@serve.batch``; a third application on the same
Serve, measured in the same alternation) gives the ``*_placement_deployment`` figures against the same
baseline; target: throughput >= 0.70x.

The client is in this process (threads, one keep-alive connection each) on the same cores as Ray.
"""

# No ``from __future__ import annotations``: FastAPI reads the bare deployment's endpoint annotations at
# run time (see raymlops/serving/app.py).

import http.client
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

# Run as ``python benchmarks/router.py``: Python puts this folder first on sys.path.
from _harness import Figure, emit, log, parser, start_ray, summary, synthetic_flights

NAME = "router"
MODEL = "flights"
NUMERIC = ["hour", "minute", "sched_dep_time", "sched_arr_time", "distance"]
CATEGORICAL = ["carrier", "origin", "dest"]
VERSION_WEIGHTS = {"1": 0.95, "2": 0.05}
THROUGHPUT_TARGET = 0.90
HANDLE_THROUGHPUT_TARGET = 0.70
SCALING_TARGET = 0.95  # requests/s at 16 in flight over those at 4, the router's own
ADDED_P50_BUDGET_MS = 1.0
PREDICT_PATH = f"/v1/models/{MODEL}/predict"
MODEL_ROWS = 30_000
SMOKE_MODEL_ROWS = 3_000  # trains in a second; the serving path is the same
_CACHE = Path(tempfile.gettempdir()) / "raymlops-bench-router"


# ------------------------------------------------------------------------------------------ model


def train_models(versions: Sequence[str], rows: int = MODEL_ROWS) -> dict[str, Path]:
    """One XGBoost flights model per version (same preprocessing, another seed), exported to ONNX.

    Cached between runs (and shared with ``serve_vs_raw``): training takes 10-30 s on 2 busy cores.
    """
    folder = _CACHE / f"models-{rows}"
    paths = {version: folder / f"{MODEL}-{version}.onnx" for version in versions}
    if all(path.exists() for path in paths.values()):
        log(f"models from the cache: {folder}")
        return paths
    import xgboost

    from raymlops.data.stats import table_stats
    from raymlops.features.preprocess import fit_preprocessor
    from raymlops.models.export import export_pipeline
    from raymlops.models.xgboost_model import XGBoostModel

    table = synthetic_flights(rows, seed=1234)
    table = table.filter(pc.is_valid(table["arr_delay"]))
    pre = fit_preprocessor(
        table_stats(table, [*NUMERIC, *CATEGORICAL]),
        NUMERIC,
        CATEGORICAL,
        max_categories=64,
        min_frequency=10,
    )
    label = pc.greater(table["arr_delay"], 15).to_numpy(zero_copy_only=False).astype(np.float32)
    features = xgboost.DMatrix(pre.transform(table), label=label)
    for index, version in enumerate(versions):
        model = XGBoostModel()  # the family's defaults, trained here without Ray Train
        params = {
            "objective": "binary:logistic",
            "tree_method": "hist",
            "max_depth": model.max_depth,
            "eta": model.eta,
            "subsample": model.subsample,
            "colsample_bytree": model.colsample_bytree,
            "seed": index,
            "nthread": 2,
        }
        model.booster_ = xgboost.train(params, features, num_boost_round=model.num_boost_round)
        model.num_features_ = pre.num_features
        partial = paths[version].with_suffix(".partial")  # renamed when complete: the cache check is safe
        diff = export_pipeline(pre, model, table.slice(0, 2000), partial, opset=17, tolerance=1e-4)
        partial.replace(paths[version])
        log(
            f"model v{version}: {pre.num_features} features, {model.num_boost_round} trees, parity {diff:.2g}"
        )
    return paths


def input_columns() -> dict[str, str]:
    return {**dict.fromkeys(NUMERIC, "float"), **dict.fromkeys(CATEGORICAL, "string")}


def request_bodies(count: int, seed: int = 7) -> list[bytes]:
    """``count`` predict bodies of one real-looking flight each (nulls included where the data has them)."""
    table = synthetic_flights(count, seed=seed).select(list(input_columns()))
    return [json.dumps({"records": [record]}).encode() for record in table.to_pylist()]


def make_session(path: Path | str) -> Any:
    """The onnxruntime session the router builds for a version (one intra- and inter-op thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def score_body(session: Any, columns: Mapping[str, str], version: str, body: bytes) -> dict[str, Any]:
    """What a hand-written model server does with a predict body: parse, feed, run, answer."""
    records = json.loads(body)["records"]
    feeds = {}
    for name, kind in columns.items():
        if kind == "float":
            values = [np.nan if r[name] is None else r[name] for r in records]
            feeds[name] = np.asarray(values, dtype=np.float32).reshape(-1, 1)
        else:
            values = ["" if r[name] is None else r[name] for r in records]
            feeds[name] = np.asarray(values, dtype=object).reshape(-1, 1)
    probabilities = session.run(["probability"], feeds)[0].reshape(-1).tolist()
    return {
        "model_name": MODEL,
        "model_version": version,
        "predictions": [{"probability": p, "label": int(p >= 0.5)} for p in probabilities],
    }


# ----------------------------------------------------------------------------------------- client


@dataclass
class Load:
    """One load run: per-request latencies, wall time, and what answered."""

    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    versions: Counter[str] = field(default_factory=Counter)
    answers: dict[int, bytes] = field(default_factory=dict)  # body index -> response, when kept

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.elapsed_s


def run_load(
    port: int,
    path: str,
    bodies: Sequence[bytes],
    concurrency: int,
    requests: int,
    keep_answers: bool = False,
    host: str = "127.0.0.1",
) -> Load:
    """POST ``requests`` bodies (cycling) with ``concurrency`` threads, one keep-alive connection each."""
    load = Load()
    lock = threading.Lock()
    counter = itertools.count()
    start = threading.Barrier(concurrency + 1)
    failures: list[str] = []

    def worker() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        headers = {"Content-Type": "application/json"}
        latencies: list[float] = []
        versions: Counter[str] = Counter()
        answers: dict[int, bytes] = {}
        start.wait()
        try:
            while (index := next(counter)) < requests:
                body = bodies[index % len(bodies)]
                began = time.perf_counter()
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                data = response.read()
                latencies.append(time.perf_counter() - began)
                if response.status != 200:
                    failures.append(f"{response.status}: {data[:300]!r}")
                    return
                versions[response.getheader("model-version", "-")] += 1
                if keep_answers:
                    answers[index] = data
        except Exception as exc:  # surfaced below, with the others
            failures.append(repr(exc))
        finally:
            connection.close()
            with lock:
                load.latencies_s += latencies
                load.versions.update(versions)
                load.answers.update(answers)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    load.elapsed_s = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{len(failures)} request(s) to {host}:{port}{path} failed; first: {failures[0]}")
    return load


def check_answers(
    name: str, load: Load, bodies: Sequence[bytes], sessions: Mapping[str, Any], columns: Mapping[str, str]
) -> None:
    """Every kept answer equals onnxruntime run here on the same body with the version that answered."""
    for index, data in load.answers.items():
        answer = json.loads(data)
        version = answer["model_version"]
        expected = score_body(sessions[version], columns, version, bodies[index % len(bodies)])
        got = [p["probability"] for p in answer["predictions"]]
        want = [p["probability"] for p in expected["predictions"]]
        if not np.allclose(got, want, atol=1e-6):
            raise AssertionError(f"{name} answered {got} for body {index}, onnxruntime gives {want}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile_ms(latencies_s: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(latencies_s) * 1000.0, q))


@dataclass
class Side:
    """One system under test: where it listens, and everything measured on it."""

    name: str
    port: int
    path: str
    latencies_c1_s: list[float] = field(default_factory=list)
    rps: dict[int, list[float]] = field(default_factory=dict)
    versions: Counter[str] = field(default_factory=Counter)


def compare(
    sides: Sequence[Side],
    bodies: Sequence[bytes] | Mapping[str, Sequence[bytes]],
    *,
    rounds: int,
    latency_requests: int,
    throughput_requests: int,
    concurrencies: Sequence[int],
) -> None:
    """Alternate the sides (ours, baseline, ours, ...) round by round; fills every ``Side``. ``bodies``: the
    same requests for every side, or each side's own by name (the same records in another protocol)."""
    bodies_of = {side.name: bodies[side.name] if isinstance(bodies, Mapping) else bodies for side in sides}
    for round_index in range(rounds):
        for side in sides:
            load = run_load(side.port, side.path, bodies_of[side.name], 1, latency_requests)
            side.latencies_c1_s += load.latencies_s
            side.versions.update(load.versions)
        p50s = ", ".join(f"{side.name} {percentile_ms(side.latencies_c1_s, 50):.2f}" for side in sides)
        log(f"round {round_index + 1}/{rounds} c=1 p50 so far (ms): {p50s}")
        for concurrency in concurrencies:
            for side in sides:
                load = run_load(side.port, side.path, bodies_of[side.name], concurrency, throughput_requests)
                side.rps.setdefault(concurrency, []).append(load.rps)
                side.versions.update(load.versions)
            rps = ", ".join(f"{side.name} {side.rps[concurrency][-1]:.0f}" for side in sides)
            log(f"round {round_index + 1}/{rounds} c={concurrency} req/s: {rps}")


def figures(
    benchmark: str,
    ours: Side,
    baseline: Side,
    throughput_target: float | None,
    suffix: str = "",
    scaling_target: float | None = None,
) -> list[Figure]:
    """p50/p99 at concurrency 1, the median requests/s at each concurrency, ours vs baseline, and how
    each side's requests/s at 16 in flight compare with its own at 4."""
    out = [
        Figure(
            benchmark,
            f"latency_p{q}_ms_c1{suffix}",
            percentile_ms(ours.latencies_c1_s, q),
            percentile_ms(baseline.latencies_c1_s, q),
            "ms",
            False,
        )
        for q in (50, 99)
    ]
    for concurrency in ours.rps:
        log(
            f"c={concurrency} req/s samples: ours {[round(r) for r in ours.rps[concurrency]]}, "
            f"baseline {[round(r) for r in baseline.rps[concurrency]]}"
        )
        out.append(
            Figure(
                benchmark,
                f"throughput_rps_c{concurrency}{suffix}",
                statistics.median(ours.rps[concurrency]),
                statistics.median(baseline.rps[concurrency]),
                "req/s",
                True,
                throughput_target,
            )
        )
    if {4, 16} <= set(ours.rps):
        ours_4, ours_16 = statistics.median(ours.rps[4]), statistics.median(ours.rps[16])
        base_4, base_16 = statistics.median(baseline.rps[4]), statistics.median(baseline.rps[16])
        # ours vs its own c=4: ratio is the scaling, judged; then both sides' scalings side by side.
        out.append(
            Figure(
                benchmark,
                f"throughput_rps_c16_over_c4{suffix}",
                ours_16,
                ours_4,
                "req/s",
                True,
                scaling_target,
            )
        )
        out.append(
            Figure(
                benchmark,
                f"throughput_scaling_c16_vs_c4{suffix}",
                ours_16 / ours_4,
                base_16 / base_4,
                "x",
                True,
            )
        )
    return out


def sizes(quick: bool, repeats: int | None, smoke: bool = False) -> dict[str, int]:
    """Requests per round, rounds, and the rows the models are trained on (smoke: a tiny model)."""
    if smoke:
        return {
            "rounds": repeats or 1,
            "latency_requests": 20,
            "throughput_requests": 32,
            "warmup_requests": 16,
            "model_rows": SMOKE_MODEL_ROWS,
        }
    return {
        "rounds": repeats or (2 if quick else 5),
        "latency_requests": 100 if quick else 500,
        "throughput_requests": 200 if quick else 1500,
        "warmup_requests": 100 if quick else 300,
        "model_rows": MODEL_ROWS,
    }


# ------------------------------------------------------------------------------------------ serve


def bare_application(path: Path, columns: Mapping[str, str], version: str, **options: Any) -> Any:
    """The baseline: one FastAPI-ingress Serve deployment around one onnxruntime session; ``options``
    go to ``Deployment.options`` (e.g. ``max_ongoing_requests``)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from ray import serve

    from raymlops.serving.app import LOGGING_CONFIG

    app = FastAPI()

    @serve.deployment(name="bare", ray_actor_options={"num_cpus": 0.25}, logging_config=LOGGING_CONFIG)
    @serve.ingress(app)
    class Bare:
        def __init__(self, path: str, columns: dict[str, str], version: str) -> None:
            self.session = make_session(path)
            self.columns, self.version = columns, version

        @app.post("/v1/models/{name}/predict")
        async def predict(self, name: str, request: Request) -> JSONResponse:
            return JSONResponse(score_body(self.session, self.columns, self.version, await request.body()))

    deployment: Any = Bare  # a Deployment; mypy sees the class
    return deployment.options(**options).bind(str(path), dict(columns), version)


def main(argv: list[str] | None = None) -> int:
    from ray import serve

    from raymlops.serving import ModelSpec, deploy
    from raymlops.serving.app import LOGGING_CONFIG
    from raymlops.serving.model_server import MAX_ONGOING_REQUESTS

    options = parser(__doc__.splitlines()[0])
    options.add_argument(
        "--max-ongoing-requests",
        type=int,
        default=None,
        help="requests each replica (ours and the baseline) takes at once (default: ours, 64)",
    )
    args = options.parse_args(argv)
    ongoing = args.max_ongoing_requests or MAX_ONGOING_REQUESTS
    size = sizes(args.quick, args.repeats, args.smoke)
    started = time.monotonic()
    start_ray()
    log(f"ray started in {time.monotonic() - started:.1f} s")
    paths = train_models(list(VERSION_WEIGHTS), size["model_rows"])
    columns = input_columns()
    bodies = request_bodies(1000)
    port = free_port()
    specs = [
        ModelSpec(MODEL, v, str(paths[v]), f"bench-{v}", columns, weight=w)
        for v, w in VERSION_WEIGHTS.items()
    ]
    try:
        deploy(
            specs,
            app_name="bench-router",
            host="127.0.0.1",
            port=port,
            timeout_s=180,
            max_ongoing_requests=ongoing,
        )
        deploy(
            [replace(s, placement="deployment") for s in specs],
            app_name="bench-router-handle",
            host="127.0.0.1",
            port=port,
            route_prefix="/handle",
            timeout_s=180,
            max_ongoing_requests=ongoing,
        )
        serve.run(
            bare_application(paths["1"], columns, "1", max_ongoing_requests=ongoing),
            name="bench-bare",
            route_prefix="/bare",
            logging_config=LOGGING_CONFIG,
        )
        log(f"both applications ready at {time.monotonic() - started:.1f} s")
        ours = Side("router", port, PREDICT_PATH)
        handle = Side("router-handle", port, "/handle" + PREDICT_PATH)
        baseline = Side("bare", port, "/bare" + PREDICT_PATH)
        sessions = {v: make_session(p) for v, p in paths.items()}
        for side in (ours, handle, baseline):  # warm-up, and the two must answer what onnxruntime answers
            load = run_load(side.port, side.path, bodies, 4, size["warmup_requests"], keep_answers=True)
            check_answers(side.name, load, bodies, sessions, columns)
        log(f"warm-up done, answers agree; {size}; max_ongoing_requests {ongoing}")
        compare(
            (ours, handle, baseline),
            bodies,
            rounds=size["rounds"],
            latency_requests=size["latency_requests"],
            throughput_requests=size["throughput_requests"],
            concurrencies=(4, 16),
        )
    finally:
        serve.shutdown()
    log(f"measured in {time.monotonic() - started:.1f} s")
    results = figures(NAME, ours, baseline, THROUGHPUT_TARGET, scaling_target=SCALING_TARGET)
    p50, base_p50 = results[0].ours, results[0].baseline
    assert base_p50 is not None
    added = p50 - base_p50
    results[1:1] = [
        Figure(NAME, "added_latency_p50_ms_c1", added, None, "ms", False),
        Figure(NAME, "latency_p50_ms_c1_budget", p50, base_p50 + ADDED_P50_BUDGET_MS, "ms", False, 1.0),
    ]
    results += figures(
        NAME,
        handle,
        baseline,
        HANDLE_THROUGHPUT_TARGET,
        suffix="_placement_deployment",
        scaling_target=SCALING_TARGET,
    )
    for figure in results:
        emit(figure)
    total = sum(ours.versions.values())
    share = ours.versions.get("2", 0) / total
    log(f"router answers by version: {dict(ours.versions)}")
    note = f"added p50 {added:+.2f} ms (budget {ADDED_P50_BUDGET_MS} ms); v2 answered {share:.3f} of requests"
    summary(results, note=note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
