"""Online feature stores: the latest feature row per entity, for serving (SQLite embedded, Redis at scale).

``open_online_store(settings)`` returns the store ``settings.kind`` names (a key of ``STORES``, or a
store's dotted path ``module:Class``); every store implements ``OnlineStore`` (``base``).
``raymlops.features.materialize`` fills them, the serving router reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raymlops.features.online.base import (
    STORES,
    TS_FIELD,
    FeatureRow,
    MaterializationState,
    OnlineStore,
    OnlineStoreSettings,
    entity_key,
    store_class,
)

__all__ = [
    "STORES",
    "TS_FIELD",
    "FeatureRow",
    "MaterializationState",
    "OnlineStore",
    "OnlineStoreSettings",
    "entity_key",
    "open_online_store",
    "store_class",
]


def open_online_store(settings: OnlineStoreSettings | Mapping[str, Any]) -> OnlineStore:
    """The store ``settings`` describe (a mapping is checked as ``OnlineStoreSettings.from_dict``).

    Raises:
        ConfigError: An unknown kind (naming the valid ones) or a bad setting.
        OnlineStoreError: The SQLite file cannot be opened. (A Redis server is first contacted on use.)
    """
    settings = OnlineStoreSettings.from_dict(settings)
    return store_class(settings.kind).from_settings(settings)
