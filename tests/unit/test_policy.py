"""Pure serving logic, no Ray: routing policy, its config checks, metric label sets, rolling stats,
and Open Inference Protocol parsing."""

from __future__ import annotations

import json
import math
import random
import struct
import threading
import time
from typing import Any

import numpy as np
import pytest

from raymlops.errors import ConfigError, RequestError
from raymlops.serving.metrics import (
    MAX_OBSERVED_ROWS,
    METRICS,
    MetricDef,
    RollingStats,
    ServingMetrics,
    StatsBook,
)
from raymlops.serving.policy import (
    RoutePolicy,
    Shadow,
    ShadowPool,
    Sticky,
    agreement,
    choose_version,
    key_point,
    sample_shadow,
    sticky_key_from_fields,
)
from raymlops.serving.protocols import oip_v2
from raymlops.serving.spec import ModelSpec, build_user_config, parse_user_config

COLUMNS = {"distance": "float", "hour": "float", "origin": "string"}


def spec(version: str = "1", weight: float = 1.0, **extra: Any) -> ModelSpec:
    return ModelSpec("flights", version, "/m.onnx", "3", dict(COLUMNS), weight=weight, **extra)


# ---- choosing a version ---------------------------------------------------------------------------


def test_weighted_choice_follows_weights_within_four_sigma() -> None:
    rng = random.Random(7)
    specs = [spec("1", 95.0), spec("2", 5.0)]
    n = 20_000
    picks = sum(choose_version(specs, rng).version == "2" for _ in range(n))
    assert abs(picks - 0.05 * n) <= 4 * math.sqrt(n * 0.05 * 0.95)
    specs = [spec("1", 0.0), spec("2", 1.0), spec("3", 0.0)]
    assert {choose_version(specs, rng).version for _ in range(500)} == {"2"}


def test_sticky_key_is_a_stable_hash_laid_on_cumulative_weights() -> None:
    # Pinned: a change of hash would move every user to another version at the next deploy.
    assert key_point("flights", "user-42") == 0.9175604580761548
    assert key_point("other", "user-42") != key_point("flights", "user-42")  # per-model populations
    assert abs(np.mean([key_point("m", str(i)) for i in range(20_000)]) - 0.5) < 0.01
    specs = [spec("1", 0.5), spec("2", 0.5)]
    rng = random.Random(0)
    for i in range(200):
        key = f"user-{i}"
        expected = "1" if key_point("flights", key) < 0.5 else "2"
        picks = {choose_version(specs, rng, key=key, name="flights").version for _ in range(3)}
        assert picks == {expected}


def test_growing_the_last_version_keeps_its_sticky_users() -> None:
    keys = [f"u{i}" for i in range(2000)]

    def on_candidate(share: float) -> set[str]:
        specs = [spec("1", 1 - share), spec("2", share)]
        return {k for k in keys if choose_version(specs, random.Random(), key=k, name="m").version == "2"}

    five, ten = on_candidate(0.05), on_candidate(0.10)
    assert five < ten and 60 < len(five) < 140 and 150 < len(ten) < 250


def test_shadow_sampling() -> None:
    rng = random.Random(3)
    assert not any(sample_shadow(Shadow("3", 0.0), "1", rng) for _ in range(100))
    assert all(sample_shadow(Shadow("3", 1.0), "1", rng) for _ in range(100))
    assert not sample_shadow(Shadow("3", 1.0), "3", rng)  # the shadow version served it itself
    assert not sample_shadow(None, "1", rng)
    n = 10_000
    hits = sum(sample_shadow(Shadow("3", 0.2), "1", rng) for _ in range(n))
    assert abs(hits - 0.2 * n) <= 4 * math.sqrt(n * 0.2 * 0.8)


def test_shadow_pool_drops_calls_beyond_its_bound() -> None:
    pool, release, ran = ShadowPool(), threading.Event(), []

    def slow() -> None:
        release.wait(5)
        ran.append(1)

    assert pool.submit(2, slow) and pool.submit(2, slow)  # one running, one queued
    assert not pool.submit(2, slow)  # a slow shadow model: dropped, not queued
    assert pool.in_flight == 2
    release.set()
    deadline = time.monotonic() + 5
    while pool.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.in_flight == 0 and len(ran) == 2
    assert pool.submit(2, lambda: None)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"user_id": "abc"}, "abc"),
        ({"user_id": 42}, "42"),
        ({"user_id": True}, None),
        ({"user_id": None}, None),
        ({"user_id": 4.2}, None),
        ({"user_id": ["a"]}, None),
        ({}, None),
        ("not a mapping", None),
    ],
)
def test_sticky_key_from_fields(fields: Any, expected: str | None) -> None:
    assert sticky_key_from_fields(fields, "user_id") == expected


def test_agreement() -> None:
    served = np.asarray([0.9, 0.2, 0.6, 0.4], dtype=np.float32)
    shadow = np.asarray([0.8, 0.3, 0.4, 0.4], dtype=np.float32)
    labels, diff = agreement(served, 0.5, shadow, 0.5)
    assert labels == 0.75 and diff == pytest.approx(0.1, abs=1e-6)
    assert agreement(served, 0.5, shadow, 0.9)[0] == 0.5  # thresholds are per version
    with pytest.raises(ValueError, match="shapes"):
        agreement(served, 0.5, shadow[:2], 0.5)


# ---- the policy in user_config --------------------------------------------------------------------


def test_policy_round_trips_through_user_config() -> None:
    policy = RoutePolicy(sticky=Sticky("header", "x-user-id"), shadow=Shadow("3", 0.2))
    config = build_user_config(
        [spec("1", 0.95), spec("2", 0.05), spec("3", 0.0)],
        policies={"flights": policy},
        shadow_max_in_flight=2,
        stats_window=50,
    )
    assert json.loads(json.dumps(config)) == config
    assert config["policies"] == {
        "flights": {"sticky": {"header": "x-user-id"}, "shadow": {"version": "3", "fraction": 0.2}}
    }
    routing = parse_user_config(config)
    assert routing.policies == {"flights": policy}
    assert (routing.shadow_max_in_flight, routing.stats_window) == (2, 50)
    assert routing.max_body_bytes == 16 * 1024**2
    assert parse_user_config(build_user_config([spec()])).policies == {}
    field = RoutePolicy.from_dict("flights", {"sticky": {"field": "user_id"}})
    assert field == RoutePolicy(sticky=Sticky("field", "user_id"))


def _config(policy: Any, **settings: Any) -> dict[str, Any]:
    config = build_user_config([spec("1"), spec("3", 0.0)])
    return {**config, "policies": {"flights": policy}, **settings}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (_config({"stiky": {"header": "x"}}), "Did you mean 'sticky'"),
        (
            _config({"sticky": {"cookie": "x"}}),
            'sticky.cookie": is not a setting here. Valid choices: field, header',
        ),
        (_config({"sticky": {"header": "x", "field": "y"}}), "exactly one"),
        (_config({"sticky": {"header": "x user"}}), "not a valid HTTP header name"),
        (_config({"sticky": {"field": ""}}), "must be a non-empty string"),
        (_config({"shadow": {"version": "9", "fraction": 0.1}}), "'9' is not a deployed version"),
        (_config({"shadow": {"version": "3", "fraction": 1.5}}), "must be a number in [0, 1]"),
        (_config({"shadow": {"version": "3", "fraction": "0.2"}}), "must be a number in [0, 1]"),
        (_config({"shadow": {"version": "3"}}), "missing key(s): fraction"),
        (_config({"shadow": {"version": "3", "fraction": 0.1, "fractoin": 1}}), "Did you mean 'fraction'"),
        (_config("all"), "must be a mapping"),
        ({**_config({}), "policies": {"flight": {}}}, "names no served model. Did you mean 'flights'"),
        ({**_config({}), "policies": ["flights"]}, "must map model name -> policy"),
        (_config({}, stats_window=0), "'serving.stats_window': must be an integer >= 1"),
        (_config({}, max_body_bytes=True), "'serving.max_body_bytes': must be an integer >= 1"),
        (_config({}, shadow_max_inflight=3), "Did you mean 'shadow_max_in_flight'"),
        ({"models": {"flights": "v1"}}, "must be a list of specs"),
        ({"models": {"flights": [{**spec().to_dict(), "placement": "remote"}]}}, "Did you mean"),
    ],
)
def test_bad_policies_fail_with_a_config_error_naming_the_key(config: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_user_config(config)
    assert expected in str(info.value)


def test_driver_side_checks_match() -> None:
    with pytest.raises(ConfigError, match="names no served model"):
        build_user_config([spec()], policies={"other": RoutePolicy()})
    with pytest.raises(ConfigError, match="is not a deployed version"):
        build_user_config([spec()], policies={"flights": RoutePolicy(shadow=Shadow("2", 0.5))})
    with pytest.raises(ConfigError, match="shadow_max_in_flight"):
        build_user_config([spec()], shadow_max_in_flight=0)
    assert spec().placement == "colocated"
    assert spec(placement="deployment").placement == "deployment"
    with pytest.raises(ConfigError, match="model_batch_wait_us"):
        build_user_config([spec()], model_batch_wait_us=0)


# ---- metrics --------------------------------------------------------------------------------------


class Recorder:
    """Stands in for a ray.util.metrics object; checks the label set of every call like Ray does."""

    def __init__(self, definition: MetricDef) -> None:
        self.definition = definition
        self.calls: list[tuple[str, float, dict[str, str]]] = []

    def _record(self, method: str, value: float, tags: dict[str, str]) -> None:
        assert set(tags) == set(self.definition.tag_keys), (self.definition.name, tags)
        assert all(isinstance(v, str) for v in tags.values())
        assert isinstance(value, int | float) and not isinstance(value, bool)
        self.calls.append((method, value, dict(tags)))

    def inc(self, value: float, tags: dict[str, str]) -> None:
        assert self.definition.kind == "counter" and value > 0
        self._record("inc", value, tags)

    def observe(self, value: float, tags: dict[str, str]) -> None:
        assert self.definition.kind == "histogram"
        self._record("observe", value, tags)

    def set(self, value: float, tags: dict[str, str]) -> None:
        assert self.definition.kind == "gauge"
        self._record("set", value, tags)


def test_metric_names_kinds_and_label_sets() -> None:
    table = {d.name: (d.kind, d.tag_keys) for d in METRICS}
    assert table == {
        "raymlops_requests_total": ("counter", ("model", "version", "route")),
        "raymlops_request_errors_total": ("counter", ("model", "version", "route", "code")),
        "raymlops_request_latency_seconds": ("histogram", ("model", "version", "route")),
        "raymlops_prediction_probability": ("histogram", ("model", "version")),
        "raymlops_predicted_class_total": ("counter", ("model", "version", "class_index")),
        "raymlops_routing_weight": ("gauge", ("model", "version")),
        "raymlops_shadow_agreement": ("histogram", ("model", "version")),
        "raymlops_shadow_dropped_total": ("counter", ("model", "version")),
        "raymlops_ood_rows_total": ("counter", ("model", "version", "column")),
        "raymlops_rate_limited_total": ("counter", ("key",)),
    }
    for definition in METRICS:
        if definition.kind == "histogram":  # Ray refuses boundaries <= 0
            assert definition.boundaries[0] > 0 and list(definition.boundaries) == sorted(
                definition.boundaries
            )


def test_serving_metrics_record_with_the_declared_labels() -> None:
    recorders: dict[str, Recorder] = {}

    def factory(definition: MetricDef) -> Recorder:
        recorders[definition.name] = Recorder(definition)
        return recorders[definition.name]

    metrics = ServingMetrics(factory)
    metrics.request("flights", "1", "served", 0.002, probabilities=np.linspace(0, 1, 1000, dtype=np.float32))
    metrics.request("flights", "3", "shadow", 0.004, code=500)
    metrics.request("flights", "1", "served", 0.001, code=422)
    metrics.shadow_agreement("flights", "3", 0.75)
    metrics.shadow_dropped("flights", "3")
    metrics.routing_weights({("flights", "1"): 0.8, ("flights", "2"): 0.2})
    metrics.routing_weights({("flights", "1"): 1.0})
    metrics.ood_rows("flights", "1", [["distance"], [], ["distance", "origin"]])  # per column, not row
    metrics.rate_limited("anonymous")

    calls = {name: r.calls for name, r in recorders.items()}
    assert len(calls["raymlops_requests_total"]) == 3
    assert [c[2]["route"] for c in calls["raymlops_request_latency_seconds"]] == [
        "served",
        "shadow",
        "served",
    ]
    assert [c[2]["code"] for c in calls["raymlops_request_errors_total"]] == ["500", "422"]
    observed = calls["raymlops_prediction_probability"]
    assert 0 < len(observed) <= MAX_OBSERVED_ROWS  # a 1000-row request is sampled, not 1000 calls
    assert calls["raymlops_shadow_agreement"] == [("observe", 0.75, {"model": "flights", "version": "3"})]
    assert calls["raymlops_routing_weight"][-2:] == [
        ("set", 0.0, {"model": "flights", "version": "2"}),  # undeployed: its gauge drops to 0
        ("set", 1.0, {"model": "flights", "version": "1"}),
    ]
    assert sorted((c[1], c[2]["column"]) for c in calls["raymlops_ood_rows_total"]) == [
        (1, "origin"),
        (2, "distance"),
    ]
    assert calls["raymlops_rate_limited_total"] == [("inc", 1, {"key": "anonymous"})]


def test_rolling_stats_window_and_snapshot() -> None:
    stats = RollingStats(window=4)
    empty = stats.snapshot()
    assert empty["window"]["requests"] == 0 and empty["window"]["latency_ms"] == {"p50": None, "p99": None}
    assert empty["window"]["error_rate"] is None and "agreement" not in empty
    for latency_s, code, p in [(0.9, 200, 0.0), (0.001, 200, 0.2), (0.003, 422, math.nan), (0.002, 200, 0.4)]:
        stats.record(latency_s, code, p)
    stats.record(0.004, 500)  # evicts the 0.9 s request
    snap = stats.snapshot()
    assert (snap["requests_total"], snap["errors_total"]) == (5, 2)
    window = snap["window"]
    assert window["requests"] == 4 and window["errors"] == 2 and window["error_rate"] == 0.5
    assert window["errors_by_code"] == {"422": 1, "500": 1}
    assert window["latency_ms"]["p50"] == pytest.approx(2.5)
    assert window["mean_probability"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="shadow route"):
        stats.record_agreement(1.0, 0.0)
    shadow = RollingStats(window=10, shadow=True)
    shadow.record_agreement(1.0, 0.1)
    shadow.record_agreement(0.5, 0.3)
    assert shadow.snapshot()["agreement"] == {"compared": 2, "label_agreement": 0.75, "mean_abs_diff": 0.2}


def test_stats_book_forgets_undeployed_versions() -> None:
    book = StatsBook(window=10)
    book.get("m", "1", "served").record(0.001, 200, 0.5)
    book.get("m", "2", "shadow").record(0.001, 200, 0.5)
    assert book.get("m", "1", "served") is book.get("m", "1", "served")
    book.retain({("m", "1")}, window=10)
    assert book.has("m", "1", "served") and not book.has("m", "2", "shadow")
    book.retain({("m", "1")}, window=20)
    assert not book.has("m", "1", "served") and book.window == 20


# ---- Open Inference Protocol ----------------------------------------------------------------------


def tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


GOOD = [
    tensor("distance", "FP32", [2, 1], [[1400.0], [None]]),
    tensor("hour", "INT64", [2], [7, 23]),
    tensor("origin", "BYTES", [2, 1], ["JFK", None]),
]


def parse(inputs: list[dict[str, Any]], **extra: Any) -> oip_v2.InferRequest:
    return oip_v2.parse_infer_request(json.dumps({"inputs": inputs, **extra}).encode())


def test_infer_request_json_to_table() -> None:
    request = parse(GOOD, id="r1", parameters={"user_id": "u7"})
    assert request.id == "r1" and request.rows == 2
    table = oip_v2.infer_table(request, COLUMNS, max_rows=10)
    assert table.column_names == ["distance", "hour", "origin"]
    distance = table["distance"].to_pylist()
    assert distance[0] == 1400.0 and math.isnan(distance[1])  # null: a missing value, imputed
    assert table["hour"].to_pylist() == [7.0, 23.0] and table["origin"].to_pylist() == ["JFK", None]
    assert oip_v2.sticky_key(request, "user_id") == "u7"
    assert oip_v2.sticky_key(parse(GOOD), "origin") == "JFK"  # else the first element of that input
    assert oip_v2.sticky_key(parse(GOOD), "nope") is None


def binary_body(inputs: list[tuple[str, str, np.ndarray | list[str]]]) -> tuple[bytes, str]:
    """A body in the binary tensor extension, as tritonclient builds it by default."""
    header, blobs = [], []
    for name, datatype, values in inputs:
        if datatype == "BYTES":
            raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
        else:
            raw = np.asarray(values).tobytes()
        header.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": [len(values), 1],
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        blobs.append(raw)
    head = json.dumps({"inputs": header}).encode()
    return head + b"".join(blobs), str(len(head))


def test_infer_request_binary_tensors() -> None:
    body, length = binary_body(
        [
            ("distance", "FP32", np.asarray([1400.0, np.nan], dtype="<f4")),
            ("hour", "FP64", np.asarray([7.0, 23.0], dtype="<f8")),
            ("origin", "BYTES", ["JFK", "ÉWR"]),
        ]
    )
    request = oip_v2.parse_infer_request(body, length)
    table = oip_v2.infer_table(request, COLUMNS, max_rows=10)
    assert table["hour"].to_pylist() == [7.0, 23.0] and table["origin"].to_pylist() == ["JFK", "ÉWR"]
    assert math.isnan(table["distance"][1].as_py())  # NaN is a missing value, imputed by the graph
    for bad_length, fragment in [("x", "must be an integer"), (str(len(body) + 1), "must be an integer")]:
        with pytest.raises(RequestError, match=fragment) as info:
            oip_v2.parse_infer_request(body, bad_length)
        assert info.value.status == 400
    with pytest.raises(RequestError, match="add up to") as info:
        oip_v2.parse_infer_request(body + b"\0", length)
    assert info.value.status == 400
    short, short_length = binary_body([("distance", "FP32", np.asarray([1.0], dtype="<f8"))])
    with pytest.raises(RequestError, match="do not make the 1 element"):
        oip_v2.parse_infer_request(short, short_length)
    inf, inf_length = binary_body([("distance", "FP32", np.asarray([np.inf], dtype="<f4"))])
    with pytest.raises(RequestError, match="finite float32"):
        oip_v2.infer_table(oip_v2.parse_infer_request(inf, inf_length), {"distance": "float"}, 10)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{", 400, "not valid JSON"),
        (b"[" * 100_000, 400, "not valid JSON"),
        (b"[]", 422, "must be a JSON object"),
        (json.dumps({"inputs": GOOD, "id": 5}).encode(), 422, "'id' must be a string"),
        (json.dumps({"inputs": GOOD, "parameters": []}).encode(), 422, "'parameters' must be a JSON object"),
        (json.dumps({"inputs": {}}).encode(), 422, "'inputs' must be a non-empty list"),
        (json.dumps({"inputs": [GOOD[0], GOOD[0]]}).encode(), 422, "input 'distance' is given twice"),
        (json.dumps({"inputs": [{**GOOD[0], "name": ""}]}).encode(), 422, "name must be a non-empty string"),
        (json.dumps({"inputs": [tensor("a", "FP32", [0], [])]}).encode(), 422, "has no rows"),
        (json.dumps({"inputs": [tensor("a", "FP32", [1, 1, 1], [1])]}).encode(), 422, "shape must be"),
        (json.dumps({"inputs": [tensor("a", "FP32", [1], [[1]])]}).encode(), 422, "nested deeper"),
        (json.dumps({"inputs": [tensor("a", "FP32", [1], 1)]}).encode(), 422, "'data' must be a list"),
        (json.dumps({"inputs": [{**GOOD[0], "data": None}]}).encode(), 422, "'data' must be a list"),
        (
            json.dumps({"inputs": [GOOD[0], tensor("b", "FP32", [1], [1])]}).encode(),
            422,
            "same number of rows",
        ),
        (json.dumps({"inputs": GOOD, "outputs": [{"name": 3}]}).encode(), 422, "unknown output 3"),
    ],
)
def test_bad_infer_requests(body: bytes, status: int, fragment: str) -> None:
    with pytest.raises(RequestError) as info:
        oip_v2.parse_infer_request(body)
    assert info.value.status == status and fragment in info.value.message


def test_outputs_asked_for_are_the_versions_own() -> None:
    # Which outputs a version has is its task's: checked once the version is chosen.
    request = oip_v2.parse_infer_request(
        json.dumps({"inputs": GOOD, "outputs": [{"name": "label"}]}).encode()
    )
    with pytest.raises(
        RequestError, match="unknown output 'label'; this model has one output, 'probability'"
    ):
        oip_v2.OipV2().inputs(request, spec("1", 1.0), max_rows=10)
    regression = ModelSpec("m", "1", "/m.onnx", "", COLUMNS, task={"task": "regression", "loss": "mse"})
    request = oip_v2.parse_infer_request(
        json.dumps({"inputs": GOOD, "outputs": [{"name": "value"}]}).encode()
    )
    assert oip_v2.OipV2().inputs(request, regression, max_rows=10).rows == 2
    with pytest.raises(RequestError, match="this model has one output, 'value'"):
        oip_v2.OipV2().inputs(parse(GOOD, outputs=[{"name": "probability"}]), regression, max_rows=10)


@pytest.mark.parametrize(
    ("index", "change", "fragment"),
    [
        (
            2,
            {"data": [float("nan"), "JFK"]},
            "'origin' (BYTES) element 0 must be a string or null, got float nan",
        ),
        (2, {"data": [3, "JFK"]}, "element 0 must be a string or null, got int 3"),
        (2, {"datatype": "FP32", "data": [1.0, 2.0]}, "'origin' must be BYTES"),
        (0, {"datatype": "BYTES", "data": ["a", "b"]}, "'distance' must be numeric"),
        (0, {"data": [True, 1.0]}, "'distance' element 0 must be a number or null, got bool"),
        (0, {"data": [1.0, "2"]}, "element 1 must be a number or null, got str"),
        (0, {"data": [1.0, float("inf")]}, "element 1 must be a finite float32 number"),
        (0, {"data": [1.0, 10**400]}, "element 1 must be a finite float32 number"),
        (1, {"data": [1, 10**39]}, "element 1 must be a finite float32 number"),
    ],
)
def test_bad_tensors_for_the_model(index: int, change: dict[str, Any], fragment: str) -> None:
    inputs = [dict(t) for t in GOOD]
    inputs[index].update(change)
    body = json.dumps({"inputs": inputs}).encode()  # Python's json writes NaN / Infinity literals
    with pytest.raises(RequestError) as info:
        oip_v2.infer_table(oip_v2.parse_infer_request(body), COLUMNS, max_rows=10)
    assert info.value.status == 422 and fragment in info.value.message


def test_missing_inputs_and_row_limit() -> None:
    with pytest.raises(RequestError, match=r"missing input tensor\(s\) 'origin'; the model's inputs are"):
        oip_v2.infer_table(parse(GOOD[:2]), COLUMNS, max_rows=10)
    with pytest.raises(RequestError, match="2 exceeds the limit of 1"):
        oip_v2.infer_table(parse(GOOD), COLUMNS, max_rows=1)


def test_metadata_and_response_shapes() -> None:
    specs = [spec("1", 0.1), ModelSpec("flights", "2", "/m.onnx", "3", {"x": "float"}, weight=0.9)]
    metadata = oip_v2.model_metadata("flights", specs)
    assert metadata["versions"] == ["1", "2"] and metadata["platform"] == "onnx"
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}]  # the champion's
    assert oip_v2.model_metadata("flights", specs, specs[0])["inputs"][2] == {
        "name": "origin",
        "datatype": "BYTES",
        "shape": [-1, 1],
    }
    answer = oip_v2.infer_response("flights", "2", None, "pid", np.asarray([0.25, 0.5], dtype=np.float32))
    assert answer == {
        "id": "pid",
        "model_name": "flights",
        "model_version": "2",
        "parameters": {"prediction_id": "pid"},
        "outputs": [{"name": "probability", "datatype": "FP32", "shape": [2], "data": [0.25, 0.5]}],
    }
    assert oip_v2.server_metadata("0.1.0")["name"] == "raymlops"


def test_metadata_and_response_per_task() -> None:
    # Every task's one FP32 output: its name, [-1] or [-1, K], and (multiclass) the class names.
    multiclass = spec(task={"task": "multiclass", "classes": ["bus", "car", "train"]})
    regression = spec("2", task={"task": "regression", "loss": "mse"})
    assert oip_v2.model_metadata("m", [multiclass])["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
    ]
    assert oip_v2.model_metadata("m", [regression])["outputs"] == [
        {"name": "value", "datatype": "FP32", "shape": [-1]}
    ]
    pred = np.asarray([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]], dtype=np.float32)
    request = parse(GOOD)
    output = oip_v2.OipV2().answer("m", multiclass, "pid", pred, request)["outputs"][0]
    assert output["name"] == "probabilities" and output["shape"] == [2, 3]
    np.testing.assert_allclose(output["data"], pred.reshape(-1))
    assert json.loads(output["parameters"]["classes"]) == ["bus", "car", "train"]
    value = oip_v2.OipV2().answer("m", regression, "pid", np.asarray([1.5, -2.0], np.float32), request)
    assert value["outputs"] == [{"name": "value", "datatype": "FP32", "shape": [2], "data": [1.5, -2.0]}]


def test_a_spec_carries_its_task_through_user_config() -> None:
    from raymlops.errors import ConfigError
    from raymlops.serving.spec import build_user_config, parse_user_config

    multiclass = spec(task={"task": "multiclass", "classes": ["a", "b"]})
    config = parse_user_config(build_user_config([multiclass, spec("2", 0.0)]))
    first, legacy = config.models["flights"]
    assert first.task == {"task": "multiclass", "classes": ["a", "b"]} and first.task_obj.output().width == 2
    assert legacy.task == {} and "task" not in legacy.to_dict()  # legacy user_config unchanged
    assert legacy.task_obj.answers(np.asarray([0.7], np.float32), 0.5) == [
        {"probability": pytest.approx(0.7), "label": 1}
    ]
    with pytest.raises(ConfigError, match=r"serving.models\['flights'\].task"):
        spec(task={"task": "ranking"})
