"""What every online store does, and the pieces the backends share.

An online store holds, per feature view, the latest feature row of each entity: ``(view, entity key)
-> {feature: value, "@ts": event time}``. It is written by ``features materialize`` and read by the
serving router, which asks for the rows of a whole request batch, all views at once, in one round
trip (``lookup``). It also records, per view, what the last materialization covered
(``MaterializationState``), so the next one writes only what is newer.

Entity keys are text: ``entity_key`` turns one row's key values into the same string whether they
come from an Arrow table (materialize) or a JSON request (serving).
"""

from __future__ import annotations

import abc
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from raymlops.errors import ConfigError
from raymlops.plugins import resolve_plugin
from raymlops.settings_model import validate_settings

__all__ = [
    "STORES",
    "TS_FIELD",
    "FeatureRow",
    "MaterializationState",
    "OnlineStore",
    "OnlineStoreSettings",
    "entity_key",
    "store_class",
]

# The online stores, kept as data: ``features.online_store.kind`` -> the class (``module:Class``). A kind
# that is not listed may be a store's own dotted path, so a store outside the package is named in config.
STORES: dict[str, str] = {
    "sqlite": "raymlops.features.online.sqlite_store:SQLiteStore",  # an embedded file, zero setup
    "redis": "raymlops.features.online.redis_store:RedisStore",  # a Redis server, at scale
}
# The event time (microseconds since the epoch, UTC) of a stored row, kept inside its payload so that a
# lookup reads one value per entity.
TS_FIELD = "@ts"
_KEY_SEPARATOR = "\x1f"  # ASCII unit separator between the parts of a composite entity key

# One entity's features as written: (entity key, event time in microseconds, {feature: value}).
FeatureRow = tuple[str, int, dict[str, Any]]


def _key_part(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        # 1.0 from a JSON request and 1 from an int64 column are the same entity.
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def entity_key(values: Sequence[Any]) -> str | None:
    """The store key of one entity from its key values in view order; None when any is missing."""
    parts = [_key_part(v) for v in values]
    if any(p is None for p in parts):
        return None
    return parts[0] if len(parts) == 1 else _KEY_SEPARATOR.join(parts)  # type: ignore[arg-type]


def encode_payload(ts_us: int, features: Mapping[str, Any]) -> str:
    """A stored row: the features with their event time, as compact JSON."""
    return json.dumps({**features, TS_FIELD: ts_us}, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class MaterializationState:
    """What the last materialization of one view wrote.

    Attributes:
        view: The feature view.
        source_version: Data version of the view's source that was read (e.g. ``delta:/t@3``).
        as_of: ISO 8601 instant the store reflects: rows with event time up to it were considered.
        watermark_us: Newest event time written (microseconds); the next run reads only newer rows.
        entities: Entities the view holds after the run.
        rows_written: Entities written (inserted or updated) by the run.
        expired: Entities removed by the run because their newest row fell out of the view's TTL.
        full: Whether the run rebuilt the view from scratch (first run, ``--full``, or an earlier as-of).
        materialized_at: ISO 8601 wall-clock time of the run.
    """

    view: str
    source_version: str
    as_of: str
    watermark_us: int
    entities: int
    rows_written: int
    expired: int
    full: bool
    materialized_at: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MaterializationState:
        return cls(**json.loads(text))


class OnlineStore(abc.ABC):
    """What every online store does; ``tests/conformance/test_online_stores.py`` checks it.

    A store is opened from its settings (``from_settings``, after ``check_settings`` judged them when the
    settings were read), then written by ``features materialize`` and read by the serving router.
    Shipped: ``sqlite_store.SQLiteStore`` and ``redis_store.RedisStore`` (see :data:`STORES`).
    """

    @classmethod  # noqa: B027 (an optional hook: stores without settings to judge keep it)
    def check_settings(cls, settings: OnlineStoreSettings) -> None:
        """Refuse settings this store cannot use, with a ConfigError naming the key (none by default)."""

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: OnlineStoreSettings) -> OnlineStore:
        """The store ``settings`` describe (a server may be first contacted on use)."""

    @abc.abstractmethod
    def write(self, view: str, rows: Iterable[FeatureRow]) -> int:
        """Upsert rows by entity key; a stored row with a newer event time is kept. Returns rows given."""

    @abc.abstractmethod
    def lookup(self, keys: Mapping[str, Sequence[str | None]]) -> dict[str, list[dict[str, Any] | None]]:
        """The rows of ``keys`` (view -> entity keys; None: no key), in one round trip; None where absent.

        Raises:
            OnlineStoreError: The store cannot be reached or read.
        """

    @abc.abstractmethod
    def expire(self, view: str, before_us: int) -> int:
        """Remove the view's entities whose row is older than ``before_us``; returns how many."""

    @abc.abstractmethod
    def clear(self, view: str) -> None:
        """Remove every row and the state of ``view``."""

    @abc.abstractmethod
    def count(self, view: str) -> int:
        """Entities the view holds."""

    @abc.abstractmethod
    def get_state(self, view: str) -> MaterializationState | None:
        """The view's last materialization, None if it never was."""

    @abc.abstractmethod
    def put_state(self, state: MaterializationState) -> None:
        """Record a materialization (after its rows are written)."""

    @abc.abstractmethod
    def close(self) -> None: ...


def store_class(kind: str, key: str = "features.online_store.kind") -> type[OnlineStore]:
    """The store class ``kind`` names: a key of :data:`STORES`, else a dotted path ``module:Class``."""
    found = resolve_plugin(kind, STORES, "online store", key)
    if not (isinstance(found, type) and issubclass(found, OnlineStore)):
        raise ConfigError(
            key, f"{kind!r} is {found!r}, not a subclass of {OnlineStore.__module__}.OnlineStore."
        )
    return found


@dataclass(frozen=True)
class OnlineStoreSettings:
    """Which online store, and where (``features.online_store`` in the job config).

    Attributes:
        kind: ``sqlite`` (an embedded file, the default), ``redis`` (a Redis server, at scale), or a
            store's dotted path ``package.module:Class`` (an ``OnlineStore`` outside the package).
        path: SQLite: the database file.
        url: Redis: ``redis://host:port/db`` (``rediss://`` for TLS); no password in it: the URL reaches
            Serve's application config, which the dashboard shows.
        password_env: Redis: the environment variable holding the server's password (on every node
            that serves or materializes); unset or empty: no password.
        key_prefix: Redis: namespace of every key, so several envs can share a server.
        timeout_s: A lookup (or connect) slower than this fails: the router answers 503 rather than hang.
    """

    kind: str = "sqlite"
    path: str = ""
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "raymlops"
    timeout_s: float = 0.5
    password_env: str = "RAYMLOPS_REDIS_PASSWORD"

    def __post_init__(self) -> None:
        key = "features.online_store"
        validate_settings(_StoreShape, asdict(self), key)
        store_class(self.kind, f"{key}.kind").check_settings(self)

    def to_dict(self) -> dict[str, Any]:
        data = _StoreShape.model_construct(**asdict(self)).model_dump()
        return {**data, "timeout_s": float(data["timeout_s"])}

    @classmethod
    def from_dict(cls, data: Any) -> OnlineStoreSettings:
        """From a mapping (the job config's group, or a router ``user_config``); unknown keys are errors."""
        if isinstance(data, OnlineStoreSettings):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(
                "features.online_store", f'must be {{"kind": "sqlite"|"redis", ...}}, got {data!r}.'
            )
        given = {k: v for k, v in data.items() if v is not None}  # null: the default
        shape = validate_settings(_StoreShape, given, "features.online_store")
        return cls(**shape.model_dump())


class _StoreShape(BaseModel):
    """``features.online_store``'s keys (the kind and what each store needs: ``check_settings``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # The defaults are the dataclass's (one place).
    kind: str = OnlineStoreSettings.kind
    path: str = OnlineStoreSettings.path
    url: str = OnlineStoreSettings.url
    key_prefix: str = OnlineStoreSettings.key_prefix
    timeout_s: float = Field(
        OnlineStoreSettings.timeout_s, gt=0, allow_inf_nan=False, description="must be a number > 0"
    )
    password_env: str = OnlineStoreSettings.password_env
