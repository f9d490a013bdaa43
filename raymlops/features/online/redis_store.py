"""The online store at scale: a Redis server (``redis`` client; any Redis 6+ or compatible server).

Layout under ``key_prefix`` (``p``):

- ``p:f:<view>:<entity>``: the entity's row, JSON with its event time (``base.encode_payload``);
- ``p:ts:<view>``: a sorted set entity -> event time, for newest-wins upserts, TTL expiry and counts;
- ``p:state``: a hash view -> ``MaterializationState`` JSON.

A lookup of a request batch is one ``MGET`` over every (view, entity) it needs: one round trip. Writes
go through a Lua script per chunk, so "keep the newer row" is atomic on the server.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from raymlops.errors import ConfigError, MissingDependencyError, OnlineStoreError
from raymlops.features.online.base import (
    FeatureRow,
    MaterializationState,
    OnlineStore,
    OnlineStoreSettings,
    encode_payload,
)

__all__ = ["RedisStore"]

# KEYS: the view's sorted set, then one row key per entity; ARGV: entity, ts, payload per entity.
_UPSERT = """
local zset = KEYS[1]
for i = 2, #KEYS do
  local j = (i - 2) * 3
  local entity, ts = ARGV[j + 1], tonumber(ARGV[j + 2])
  local current = redis.call('ZSCORE', zset, entity)
  if (not current) or ts >= tonumber(current) then
    redis.call('SET', KEYS[i], ARGV[j + 3])
    redis.call('ZADD', zset, ts, entity)
  end
end
return #KEYS - 1
"""
_WRITE_CHUNK = 1000  # entities per script call: bounded server time per call, few round trips


class RedisStore(OnlineStore):
    """``OnlineStore`` on a Redis server; ``url`` as ``redis.Redis.from_url`` takes it."""

    @classmethod
    def check_settings(cls, settings: OnlineStoreSettings) -> None:
        key, url = "features.online_store", settings.url
        if not (isinstance(url, str) and url.startswith(("redis://", "rediss://", "unix://"))):
            raise ConfigError(f"{key}.url", f"must be a redis://, rediss:// or unix:// URL, got {url!r}.")
        if _has_password(url):
            raise ConfigError(
                f"{key}.url",
                "holds a password: put it in the environment variable features.online_store.password_env "
                f"(${settings.password_env}) instead; the URL reaches Serve's config and the dashboard.",
            )

    @classmethod
    def from_settings(cls, settings: OnlineStoreSettings) -> RedisStore:
        """The password comes from the environment variable ``settings.password_env``, never the URL."""
        import os

        return cls(
            settings.url,
            key_prefix=settings.key_prefix,
            timeout_s=settings.timeout_s,
            password=os.environ.get(settings.password_env) or None,
        )

    def __init__(
        self, url: str, *, key_prefix: str = "raymlops", timeout_s: float = 0.5, password: str | None = None
    ) -> None:
        try:
            import redis
        except ImportError as exc:
            raise MissingDependencyError("redis", "features.online_store.kind=redis") from exc
        self.url, self.prefix = url, key_prefix
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        # Short timeouts on purpose: a store that does not answer must cost a request a fast 503, not a
        # hung replica. The pool keeps connections open between lookups (one round trip each).
        self._client = redis.Redis.from_url(
            url,
            password=password,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
        )
        self._upsert = self._client.register_script(_UPSERT)

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, key_prefix={self.prefix!r})"

    def _row_key(self, view: str, entity: str) -> str:
        return f"{self.prefix}:f:{view}:{entity}"

    def _zset(self, view: str) -> str:
        return f"{self.prefix}:ts:{view}"

    def _fail(self, exc: BaseException) -> OnlineStoreError:
        return OnlineStoreError(f"redis {self.url}", f"{type(exc).__name__}: {exc}")

    def write(self, view: str, rows: Iterable[FeatureRow]) -> int:
        written, keys, args = 0, [self._zset(view)], list[str | int]()
        try:
            for entity, ts, features in rows:
                keys.append(self._row_key(view, entity))
                args += [entity, ts, encode_payload(ts, features)]
                if len(keys) > _WRITE_CHUNK:
                    written += int(self._upsert(keys=keys, args=args))
                    keys, args = keys[:1], []
            if len(keys) > 1:
                written += int(self._upsert(keys=keys, args=args))
        except self._errors as exc:
            raise self._fail(exc) from exc
        return written

    def lookup(self, keys: Mapping[str, Sequence[str | None]]) -> dict[str, list[dict[str, Any] | None]]:
        wanted = sorted(
            {(view, key) for view, entities in keys.items() for key in entities if key is not None}
        )
        if not wanted:
            return {view: [None] * len(entities) for view, entities in keys.items()}
        try:
            values = self._client.mget([self._row_key(view, key) for view, key in wanted])
        except self._errors as exc:
            raise self._fail(exc) from exc
        decoded = {pair: json.loads(value) for pair, value in zip(wanted, values, strict=True) if value}
        return {
            view: [None if key is None else decoded.get((view, key)) for key in entities]
            for view, entities in keys.items()
        }

    def expire(self, view: str, before_us: int) -> int:
        zset = self._zset(view)
        try:
            stale: list[bytes] = self._client.zrangebyscore(zset, "-inf", f"({before_us}")  # type: ignore[assignment]
            if not stale:
                return 0
            with self._client.pipeline(transaction=True) as pipe:
                for start in range(0, len(stale), _WRITE_CHUNK):
                    chunk = [e.decode() for e in stale[start : start + _WRITE_CHUNK]]
                    pipe.delete(*(self._row_key(view, e) for e in chunk))
                    pipe.zrem(zset, *chunk)
                pipe.execute()
        except self._errors as exc:
            raise self._fail(exc) from exc
        return len(stale)

    def clear(self, view: str) -> None:
        try:
            self.expire(view, 2**62)
            self._client.hdel(f"{self.prefix}:state", view)
        except self._errors as exc:
            raise self._fail(exc) from exc

    def count(self, view: str) -> int:
        try:
            return int(self._client.zcard(self._zset(view)))
        except self._errors as exc:
            raise self._fail(exc) from exc

    def get_state(self, view: str) -> MaterializationState | None:
        try:
            raw: bytes | None = self._client.hget(f"{self.prefix}:state", view)  # type: ignore[assignment]
        except self._errors as exc:
            raise self._fail(exc) from exc
        return None if raw is None else MaterializationState.from_json(raw.decode())

    def put_state(self, state: MaterializationState) -> None:
        try:
            self._client.hset(f"{self.prefix}:state", state.view, state.to_json())
        except self._errors as exc:
            raise self._fail(exc) from exc

    def close(self) -> None:
        self._client.close()


def _has_password(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        return bool(urlsplit(url).password)
    except ValueError:  # an unparsable port: redis-py reports it with the URL on connect
        return False
