"""What is particular to each online store, on a real SQLite file and a real redis-server: one query or
round trip per lookup, outages, the Redis password, entity keys, settings. The contract every store
keeps is checked by tests/conformance/test_online_stores.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raymlops.errors import ConfigError, OnlineStoreError
from raymlops.features.online import (
    TS_FIELD,
    OnlineStoreSettings,
    entity_key,
    open_online_store,
)
from tests.redis_server import RedisServer, start_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def test_sqlite_lookup_is_one_query(tmp_path: Path) -> None:
    from raymlops.features.online.sqlite_store import SQLiteStore

    sqlite = SQLiteStore(tmp_path / "o.db")
    sqlite.write("a", [(str(i), 1, {"x": i}) for i in range(64)])
    sqlite.write("b", [(str(i), 1, {"y": i}) for i in range(64)])
    statements: list[str] = []
    sqlite._connect().set_trace_callback(statements.append)
    found = sqlite.lookup({"a": [str(i) for i in range(64)], "b": [str(i) for i in range(70)]})
    assert len(statements) == 1 and statements[0].startswith("SELECT")
    assert [r["x"] for r in found["a"]] == list(range(64))  # type: ignore[index]
    assert found["b"][64:] == [None] * 6
    # Each view's part searches the primary key: a row-value IN (VALUES ...) scanned the whole table.
    sqlite._connect().set_trace_callback(None)
    plan = sqlite._connect().execute("EXPLAIN QUERY PLAN " + statements[0]).fetchall()
    assert all("USING PRIMARY KEY" in step[-1] for step in plan if "feature_rows" in step[-1]), plan
    # Beyond SQLite's bound-variable limit the batch is split, and still answered whole.
    many = [str(i) for i in range(40_000)]
    assert sqlite.lookup({"a": many})["a"][63:65] == [{"x": 63, TS_FIELD: 1}, None]


def test_redis_lookup_is_one_round_trip(redis_server: RedisServer) -> None:
    import redis

    store = open_online_store({"kind": "redis", "url": redis_server.url, "key_prefix": "rt"})
    store.write("a", [(str(i), 1, {"x": i}) for i in range(64)])
    store.write("b", [(str(i), 1, {"y": i}) for i in range(64)])
    admin = redis.Redis.from_url(redis_server.url)
    before = admin.info("commandstats")
    found = store.lookup({"a": [str(i) for i in range(64)], "b": [str(i) for i in range(64)]})
    after = admin.info("commandstats")
    assert after["cmdstat_mget"]["calls"] - before.get("cmdstat_mget", {}).get("calls", 0) == 1
    # Everything else the server ran meanwhile is the info call itself.
    changed = {k for k in after if after[k]["calls"] != before.get(k, {}).get("calls")}
    assert changed == {"cmdstat_mget", "cmdstat_info"}
    assert [r["y"] for r in found["b"]] == list(range(64))  # type: ignore[index]


def test_redis_outage_is_an_online_store_error(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis-down")
    store = open_online_store({"kind": "redis", "url": server.url, "timeout_s": 0.2})
    store.write("a", [("k", 1, {"x": 1})])
    server.stop()
    with pytest.raises(OnlineStoreError, match=f"redis {server.url} is unavailable"):
        store.lookup({"a": ["k"]})


def test_redis_password_comes_from_the_environment_never_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_redis(tmp_path / "redis-auth", password="s3cret-pw")
    try:
        settings = {"kind": "redis", "url": server.url, "timeout_s": 0.5, "password_env": "TEST_REDIS_PW"}
        monkeypatch.delenv("TEST_REDIS_PW", raising=False)
        with pytest.raises(OnlineStoreError, match="uthenticat"):  # no password: the server refuses
            open_online_store(settings).write("a", [("k", 1, {"x": 1})])
        monkeypatch.setenv("TEST_REDIS_PW", "s3cret-pw")
        store = open_online_store(settings)
        store.write("a", [("k", 1, {"x": 1})])
        assert store.lookup({"a": ["k"]})["a"] == [{"x": 1, TS_FIELD: 1}]
        assert "s3cret-pw" not in repr(store) and "s3cret-pw" not in str(
            OnlineStoreSettings.from_dict(settings).to_dict()
        )  # what reaches Serve's user_config and the logs
    finally:
        server.stop()


def test_entity_keys_are_the_same_from_json_and_arrow() -> None:
    assert entity_key(["JFK"]) == "JFK"
    assert entity_key([1.0]) == entity_key([1]) == "1"
    assert entity_key([1.5]) == "1.5"
    assert entity_key(["UA", "EWR", "ORD"]) == "UA\x1fEWR\x1fORD"
    assert entity_key(["UA", None]) is None and entity_key([float("nan")]) is None


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"kind": "redist"}, "Did you mean 'redis'? Valid choices: redis, sqlite"),
        ({"kind": "sqlite", "path": ""}, "name the SQLite file"),
        ({"kind": "redis", "url": "http://x"}, "must be a redis://"),
        ({"kind": "sqlite", "path": "x.db", "timeout": 1}, "'features.online_store.timeout'"),
        ({"kind": "redis", "timeout_s": 0}, "must be a number > 0"),
        ({"kind": "redis", "url": "redis://:s3cret@127.0.0.1:6379/0"}, "$RAYMLOPS_REDIS_PASSWORD"),
    ],
)
def test_bad_settings_name_the_key(settings: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        OnlineStoreSettings.from_dict(settings)
    assert fragment in str(info.value)
