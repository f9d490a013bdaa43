"""Every online store keeps the OnlineStore contract: SQLite, Redis (a real redis-server) and one written
outside the package (tests/plugins/external_store.py), named only by its dotted path in the settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raymlops.errors import ConfigError
from raymlops.features.online import (
    STORES,
    TS_FIELD,
    MaterializationState,
    OnlineStore,
    OnlineStoreSettings,
    open_online_store,
    store_class,
)
from tests.redis_server import RedisServer, start_redis

EXTERNAL = "tests.plugins.external_store:JsonFileStore"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis", "external"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    if request.param == "sqlite":
        settings = {"kind": "sqlite", "path": str(tmp_path / "sub" / "online.db")}
    elif request.param == "external":
        settings = {"kind": EXTERNAL, "path": str(tmp_path / "sub" / "online.json")}
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        settings = {"kind": "redis", "url": server.url, "key_prefix": f"t-{tmp_path.name}"}
    opened = open_online_store(settings)
    yield opened
    opened.close()


def test_write_then_lookup_many_views_at_once(store: OnlineStore) -> None:
    store.write(
        "weather", [("JFK", 10, {"temp": 40.5, "wind": None}), ("LGA", 11, {"temp": 38.0, "wind": 7})]
    )
    store.write("planes", [("N14228", 5, {"year": 1999, "type": "Fixed wing"})])
    found = store.lookup({"weather": ["LGA", "SFO", None, "JFK", "LGA"], "planes": ["N14228", "N0"]})
    assert found["weather"] == [
        {"temp": 38.0, "wind": 7, TS_FIELD: 11},
        None,
        None,
        {"temp": 40.5, "wind": None, TS_FIELD: 10},
        {"temp": 38.0, "wind": 7, TS_FIELD: 11},
    ]
    assert found["planes"] == [{"year": 1999, "type": "Fixed wing", TS_FIELD: 5}, None]
    assert store.lookup({"weather": []}) == {"weather": []}
    assert (store.count("weather"), store.count("planes"), store.count("nothing")) == (2, 1, 0)


def test_newer_row_wins_whatever_the_write_order(store: OnlineStore) -> None:
    store.write("weather", [("JFK", 20, {"temp": 2.0})])
    store.write("weather", [("JFK", 10, {"temp": 1.0})])  # late, older: ignored
    assert store.lookup({"weather": ["JFK"]})["weather"][0] == {"temp": 2.0, TS_FIELD: 20}
    store.write("weather", [("JFK", 30, {"temp": 3.0})])
    assert store.lookup({"weather": ["JFK"]})["weather"][0] == {"temp": 3.0, TS_FIELD: 30}


def test_expire_state_and_clear(store: OnlineStore) -> None:
    store.write("weather", [(f"A{i}", i, {"temp": float(i)}) for i in range(2500)])  # several write chunks
    assert store.count("weather") == 2500
    assert store.expire("weather", 2000) == 2000
    assert store.count("weather") == 500
    assert store.lookup({"weather": ["A1999", "A2000"]})["weather"] == [
        None,
        {"temp": 2000.0, TS_FIELD: 2000},
    ]
    assert store.get_state("weather") is None
    state = MaterializationState(
        "weather", "delta:/w@3", "2013-06-01T00:00:00+00:00", 2499, 500, 2500, 2000, True, "now"
    )
    store.put_state(state)
    assert store.get_state("weather") == state
    store.clear("weather")
    assert (store.count("weather"), store.get_state("weather")) == (0, None)


def test_every_store_is_an_online_store_found_by_kind_or_dotted_path() -> None:
    for kind in STORES:
        assert issubclass(store_class(kind), OnlineStore)
    assert store_class(EXTERNAL).__name__ == "JsonFileStore"  # registered nowhere


def test_a_store_judges_its_own_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"features\.online_store\.path.*JSON file"):
        OnlineStoreSettings.from_dict({"kind": EXTERNAL, "path": ""})
    with pytest.raises(
        ConfigError, match=r"features\.online_store\.kind.*cannot import 'tests\.plugins\.nothing'"
    ):
        OnlineStoreSettings.from_dict({"kind": "tests.plugins.nothing:Store", "path": "x"})
    with pytest.raises(ConfigError, match=r"not a subclass of raymlops\.features\.online\.base\.OnlineStore"):
        OnlineStoreSettings.from_dict({"kind": "pathlib:Path", "path": "x"})
    settings = OnlineStoreSettings.from_dict({"kind": EXTERNAL, "path": str(tmp_path / "s.json")})
    assert OnlineStoreSettings.from_dict(settings.to_dict()) == settings  # what reaches a router's config
