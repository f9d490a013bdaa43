"""Online feature stores: the latest feature row per entity, for serving (SQLite embedded, Redis at scale).

``open_online_store(settings)`` returns the backend ``settings.kind`` names; both implement
``OnlineStore`` (``base``). ``raymlops.features.materialize`` fills them, the serving router reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raymlops.features.online.base import (
    STORE_KINDS,
    TS_FIELD,
    FeatureRow,
    MaterializationState,
    OnlineStore,
    OnlineStoreSettings,
    entity_key,
)

__all__ = [
    "STORE_KINDS",
    "TS_FIELD",
    "FeatureRow",
    "MaterializationState",
    "OnlineStore",
    "OnlineStoreSettings",
    "entity_key",
    "open_online_store",
]


def open_online_store(settings: OnlineStoreSettings | Mapping[str, Any]) -> OnlineStore:
    """The store ``settings`` describe (a mapping is checked as ``OnlineStoreSettings.from_dict``).

    Raises:
        ConfigError: An unknown kind (naming the valid ones) or a bad setting.
        OnlineStoreError: The SQLite file cannot be opened. (A Redis server is first contacted on use.)
    """
    settings = OnlineStoreSettings.from_dict(settings)
    if settings.kind == "redis":
        import os

        from raymlops.features.online.redis_store import RedisStore

        return RedisStore(
            settings.url,
            key_prefix=settings.key_prefix,
            timeout_s=settings.timeout_s,
            password=os.environ.get(settings.password_env) or None,
        )
    from raymlops.features.online.sqlite_store import SQLiteStore

    return SQLiteStore(settings.path, timeout_s=settings.timeout_s)
