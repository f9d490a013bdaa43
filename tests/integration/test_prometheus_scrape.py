"""A real Prometheus server scrapes the router's metrics from a real Ray metrics agent.

The shared test session already holds a Ray without metrics export, and one process can hold only one
Ray, so the Ray + Serve side runs in a child process: this module run as a script
(``python -m tests.integration.test_prometheus_scrape METRICS_PORT HTTP_PORT FOLDER``). It starts its
own Ray exporting metrics on ``METRICS_PORT``, deploys two versions of a tiny model with ``deploy()``,
prints ``READY <url>`` and serves until its stdin closes. The test starts Prometheus first (so that
it scrapes from the moment the metrics appear), sends the requests over HTTP and asks Prometheus'
HTTP API what it holds.

Ray exports a custom metric ``name`` as ``ray_<name>`` (a counter already ending in ``_total`` keeps a
single ``_total``; a histogram adds ``_bucket``/``_count``/``_sum``) with its own labels added:
``Component``, ``NodeAddress``, ``SessionName``, ``Version`` (Ray's version; ours is ``version``) and
``WorkerId``, plus ``otel_scope_*``. The metrics agent listens on all interfaces (0.0.0.0).
Ray 2.60's agent forgets a gauge that was not set again within 2 report intervals, so the
routing-weight gauge is checked twice: seen after the deploy, and still there at the end.

The counters the dashboard reads beside the request counters are scraped too: version 3 shadows every
served request (``raymlops_shadow_agreement``; with ``shadow_max_in_flight=1`` a burst of concurrent
requests overflows it: ``raymlops_shadow_dropped_total``), versions 1 and 2 carry a training profile that
flags the airport SFO (``raymlops_ood_rows_total``), and a per-client rate limit whose bucket the test
empties refuses the last requests (``raymlops_rate_limited_total``).

Needs the ``prometheus`` binary (Debian package ``prometheus``; CI installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from raymlops.serving.metrics import METRICS
from tests.integration.test_serving import PRE, ROWS, free_port

pytestmark = pytest.mark.slow

MODEL = "flights"
WEIGHTS = {"1": 0.8, "2": 0.2}
SHADOW = "3"  # loaded at weight 0, shadows every served request
ROUTED = {**WEIGHTS, SHADOW: 0.0}  # the routing-weight gauge: every loaded version, the shadow at 0
# Versions 1 and 2's training profile (as test_serving's OOD test): ROWS[3]'s origin SFO is outside it.
PROFILE = {
    "distance": {"q01": 100.0, "q99": 2900.0},
    "hour": {"q01": 0.0, "q99": 23.0},
    "origin": {"categories": ["EWR", "JFK", "LGA"]},
}
# Tokens of the per-client bucket; the refill (0.001/s) adds less than one over the test's minute, so
# exactly BURST requests (every route but health) pass before the first 429.
BURST = 200
BURSTS = 5  # most concurrent bursts sent to overflow the shadow pool (the first one nearly always does)
GOOD_REQUESTS = 50
BAD_REQUESTS = 2  # a record without its columns: 422, counted against the chosen version
REPORT_INTERVAL_MS = 1000  # Ray's default is 10 s: metrics would take that long to reach the agent
GAUGE_TTL_S = 2 * REPORT_INTERVAL_MS / 1000  # the agent drops a gauge not set again for this long
ROOT = Path(__file__).resolve().parents[2]


def _exported(name: str) -> str:
    return f"ray_{name}"


# ---- the child process: its own Ray with metrics export, the router deployed ------------------------


def serve_main(metrics_port: int, http_port: int, folder: Path) -> None:
    import onnx
    import ray

    from raymlops.models.export import compose_pipeline
    from raymlops.pipeline.ray_session import start_local_ray
    from raymlops.serving import ModelSpec, deploy
    from raymlops.serving.policy import RoutePolicy, Shadow
    from tests.integration.test_serving import WEIGHTS as MODEL_WEIGHTS
    from tests.integration.test_serving import model_graph

    specs = []
    for version, weight in ROUTED.items():
        path = folder / f"flights-{version}.onnx"
        graph = MODEL_WEIGHTS[version if version in MODEL_WEIGHTS else "2"]
        onnx.save(compose_pipeline(PRE, model_graph(graph)), str(path))
        profile = PROFILE if version in WEIGHTS else None
        specs.append(
            ModelSpec(
                MODEL,
                version,
                str(path),
                f"delta-{version}",
                PRE.input_columns,
                weight,
                input_profile=profile,
            )
        )
    start_local_ray(
        num_cpus=2,
        log_to_driver=False,
        configure_logging=False,
        _metrics_export_port=metrics_port,
    )
    try:
        url = deploy(
            specs,
            app_name="prometheus-test",
            host="127.0.0.1",
            port=http_port,
            timeout_s=120,
            policies={MODEL: RoutePolicy(shadow=Shadow(SHADOW, 1.0))},
            shadow_max_in_flight=1,
            rate_limit={"requests_per_s": 0.001, "burst": BURST},
        )
        print(f"READY {url}", flush=True)
        sys.stdin.read()  # until the test closes our stdin
    finally:
        ray.shutdown()


# ---- the test ---------------------------------------------------------------------------------------


def _start_prometheus(folder: Path, metrics_port: int, port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.fail("the prometheus binary is missing: apt-get install -y --no-install-recommends prometheus")
    config = folder / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: ray\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    log = (folder / "prometheus.log").open("wb")
    return subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait_for_line(child: subprocess.Popen[str], prefix: str, timeout_s: float) -> str:
    """The first stdout line of ``child`` starting with ``prefix``; fails if it exits or times out."""
    import queue
    import threading

    lines: queue.Queue[str] = queue.Queue()
    assert child.stdout is not None
    stdout = child.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.poll() is None:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise AssertionError(f"the serving process never printed {prefix!r} (exit code {child.poll()})")


def _query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def _poll(prometheus: str, promql: str, done: Any, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """Query until ``done(result)`` holds (metrics reach the agent once per report interval)."""
    deadline = time.monotonic() + timeout_s
    result = _query(prometheus, promql)
    while not done(result) and time.monotonic() < deadline:
        time.sleep(0.25)
        result = _query(prometheus, promql)
    return result


def _stop(child: subprocess.Popen[Any], graceful_s: float) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(graceful_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)


def test_prometheus_scrapes_router_metrics(tmp_path: Path) -> None:
    metrics_port, http_port, prometheus_port = free_port(), free_port(), free_port()
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    prometheus = _start_prometheus(tmp_path, metrics_port, prometheus_port)
    serving: subprocess.Popen[str] | None = None
    serving_log = tmp_path / "serving.log"
    try:
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "disabled",
            "RAY_metrics_report_interval_ms": str(REPORT_INTERVAL_MS),
        }
        with serving_log.open("w") as stderr:
            serving = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.test_prometheus_scrape",
                    str(metrics_port),
                    str(http_port),
                    str(tmp_path),
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        try:
            url = _wait_for_line(serving, "READY ", timeout_s=150)
            ready_at = time.monotonic()
        except AssertionError:
            raise AssertionError(serving_log.read_text()[-4000:]) from None
        assert httpx.get(f"{prometheus_url}/-/ready", timeout=5).status_code == 200

        versions: Counter[str] = Counter()  # served requests (200 and 422) by the version that answered
        ood: Counter[str] = Counter()  # rows flagged out of distribution (SFO) by version
        predict = f"/v1/models/{MODEL}/predict"
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(GOOD_REQUESTS):
                response = client.post(predict, json={"records": [ROWS[i % 4]]})
                assert response.status_code == 200, response.text
                versions[response.headers["model-version"]] += 1
                ood[response.headers["model-version"]] += i % 4 == 3
            for _ in range(BAD_REQUESTS):
                response = client.post(predict, json={"records": [{"hour": 3}]})
                assert response.status_code == 422, response.text
                versions[response.headers["model-version"]] += 1
            sent = GOOD_REQUESTS + BAD_REQUESTS  # requests that took a token of the rate limit's bucket

            # Concurrent requests overflow the one-call shadow pool: the sampled shadow call is dropped.
            def one(_: int) -> httpx.Response:
                return httpx.post(f"{url}{predict}", json={"records": [ROWS[0]]}, timeout=30)

            dropped = 0
            for _ in range(BURSTS):
                with ThreadPoolExecutor(8) as pool:
                    answers = list(pool.map(one, range(24)))
                assert [r.status_code for r in answers] == [200] * 24
                versions.update(r.headers["model-version"] for r in answers)
                dropped = client.get(f"/v1/models/{MODEL}/stats").json()["shadow"]["dropped_total"]
                sent += 24 + 1
                if dropped:
                    break
            assert dropped > 0, f"{BURSTS} bursts of 24 concurrent requests never overflowed the shadow pool"

            # The rate limit: the bucket's tokens left, then 429s (none of them reaches a version).
            for _ in range(BURST - sent):
                response = client.post(predict, json={"records": [ROWS[0]]})
                assert response.status_code == 200, (sent, response.text)
                versions[response.headers["model-version"]] += 1
            refused = [client.post(predict, json={"records": [ROWS[0]]}) for _ in range(3)]
            assert [r.status_code for r in refused] == [429] * 3, [r.text for r in refused]
        total = sum(versions.values())
        good = total - BAD_REQUESTS  # every answered request was shadowed (fraction 1.0)

        def count(result: list[dict[str, Any]]) -> float:
            return sum(float(s["value"][1]) for s in result)

        served = '{route="served"}'  # the shadow's calls are counted too, as route="shadow"
        requests = _poll(
            prometheus_url, _exported("raymlops_requests_total") + served, lambda r: count(r) >= total
        )
        if count(requests) < total:
            targets = httpx.get(f"{prometheus_url}/api/v1/targets").json()["data"]["activeTargets"]
            pytest.fail(f"Prometheus holds {count(requests)} of {total} requests; targets: {targets}")
        by_version = {}
        for series in requests:
            labels = series["metric"]
            assert {"model", "version", "route"} <= set(labels), labels
            assert (labels["model"], labels["route"]) == (MODEL, "served")
            by_version[labels["version"]] = float(series["value"][1])
        assert by_version == {v: float(n) for v, n in versions.items()}

        # Polled too: a series first set late in one report interval can reach the agent one export later.
        errors = _poll(
            prometheus_url, _exported("raymlops_request_errors_total"), lambda r: count(r) >= BAD_REQUESTS
        )
        assert count(errors) == BAD_REQUESTS and {s["metric"]["code"] for s in errors} == {"422"}

        latency = _exported("raymlops_request_latency_seconds")
        assert count(_poll(prometheus_url, f"{latency}_count{served}", lambda r: count(r) >= total)) == total
        buckets = _query(prometheus_url, f'{latency}_bucket{{model="{MODEL}",route="served"}}')
        assert {"+Inf", "0.001", "0.01", "1.0"} <= {s["metric"]["le"] for s in buckets}
        quantile = _query(prometheus_url, f"histogram_quantile(0.5, sum by (le) ({latency}_bucket))")
        assert 0 < float(quantile[0]["value"][1]) < 1.0

        names = httpx.get(f"{prometheus_url}/api/v1/label/__name__/values").json()["data"]
        ours = sorted(n for n in names if n.startswith("ray_raymlops_"))
        print("\nexported series:", json.dumps(ours))
        expected = set()
        for definition in METRICS:
            if definition.name.startswith("raymlops_predicted_"):
                continue  # no multiclass model here
            base = _exported(definition.name)
            kinds = ("_bucket", "_count", "_sum") if definition.kind == "histogram" else ("",)
            expected |= {base + suffix for suffix in kinds}
        assert expected <= set(ours), sorted(expected - set(ours))

        # The routing weights are set when the routing table changes, i.e. before any request: the
        # gauge must still be there now, several report intervals later, for a dashboard to show it.
        # The counters the dashboard reads for shadowing, out-of-distribution rows and the rate limit.
        # Every answered request was shadowed: compared (agreement observed) or dropped (pool full).
        agreement, dropped_total = (
            _exported("raymlops_shadow_agreement"),
            _exported("raymlops_shadow_dropped_total"),
        )
        shadowed = f"sum({agreement}_count) + sum({dropped_total})"
        assert count(_poll(prometheus_url, shadowed, lambda r: count(r) >= good)) == good
        drops = _query(prometheus_url, dropped_total)
        assert {s["metric"]["version"] for s in drops} == {SHADOW} and count(drops) >= dropped
        compared = _query(prometheus_url, f"{agreement}_count")
        assert {s["metric"]["version"] for s in compared} == {SHADOW}
        mean = count(_query(prometheus_url, f"sum({agreement}_sum) / sum({agreement}_count)"))
        assert 0.0 <= mean <= 1.0  # a share of rows per request
        flagged = _poll(
            prometheus_url, _exported("raymlops_ood_rows_total"), lambda r: count(r) >= sum(ood.values())
        )
        assert {s["metric"]["column"] for s in flagged} == {"origin"}
        assert {s["metric"]["version"]: float(s["value"][1]) for s in flagged} == {
            v: float(n) for v, n in ood.items() if n
        }
        limited = _poll(prometheus_url, _exported("raymlops_rate_limited_total"), lambda r: count(r) >= 3)
        assert [(s["metric"]["key"], float(s["value"][1])) for s in limited] == [("anonymous", 3.0)]

        weight = _exported("raymlops_routing_weight")
        seen = _query(prometheus_url, f"last_over_time({weight}[5m])")
        assert {s["metric"]["version"]: float(s["value"][1]) for s in seen} == ROUTED, seen
        time.sleep(max(0.0, ready_at + GAUGE_TTL_S + 2 - time.monotonic()))  # past the agent's TTL
        current = _poll(prometheus_url, weight, lambda r: len(r) == len(ROUTED), timeout_s=3)
        assert {s["metric"]["version"]: float(s["value"][1]) for s in current} == ROUTED, (
            f"{weight} was scraped after the deploy but is gone from Prometheus now: Ray drops a gauge "
            f"that is not set again within 2 report intervals; the router must refresh it periodically."
        )
    finally:
        if serving is not None:
            if serving.stdin is not None:
                serving.stdin.close()  # asks it to shut its Ray down
            try:
                serving.wait(30)
            except subprocess.TimeoutExpired:
                _stop(serving, 10)
        _stop(prometheus, 10)


if __name__ == "__main__":
    serve_main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
