"""An online store written outside the package: every row in one JSON file, rewritten on each change.

It is the example of docs/plugins.md: nothing in raymlops names it; ``features.online_store.kind`` names
it by its dotted path, ``tests.plugins.external_store:JsonFileStore``, with ``path`` its file, and it
passes the conformance suite (tests/conformance/test_online_stores.py). Fine for a test; a real store
would not rewrite a whole file per write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from raymlops.errors import ConfigError
from raymlops.features.online.base import (
    TS_FIELD,
    FeatureRow,
    MaterializationState,
    OnlineStore,
    OnlineStoreSettings,
)


class JsonFileStore(OnlineStore):
    """``{"rows": {view: {entity: payload}}, "states": {view: state}}`` in the file ``path``."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    @classmethod
    def check_settings(cls, settings: OnlineStoreSettings) -> None:
        if not settings.path:
            raise ConfigError("features.online_store.path", "is empty: name the JSON file of the store.")

    @classmethod
    def from_settings(cls, settings: OnlineStoreSettings) -> JsonFileStore:
        return cls(settings.path)

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"rows": {}, "states": {}}
        data: dict[str, Any] = json.loads(self.path.read_text())
        return data

    def _save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(data))
        os.replace(partial, self.path)  # readers see the old file or the new one, never half of one

    def write(self, view: str, rows: Iterable[FeatureRow]) -> int:
        data, given = self._load(), 0
        stored = data["rows"].setdefault(view, {})
        for entity, ts, features in rows:
            given += 1
            if entity not in stored or ts >= stored[entity][TS_FIELD]:  # the newer row wins
                stored[entity] = {**features, TS_FIELD: ts}
        self._save(data)
        return given

    def lookup(self, keys: Mapping[str, Sequence[str | None]]) -> dict[str, list[dict[str, Any] | None]]:
        rows = self._load()["rows"]  # one read of the file: one round trip
        return {
            view: [rows.get(view, {}).get(k) if k is not None else None for k in ks]
            for view, ks in keys.items()
        }

    def expire(self, view: str, before_us: int) -> int:
        data = self._load()
        stored = data["rows"].get(view, {})
        old = [entity for entity, row in stored.items() if row[TS_FIELD] < before_us]
        for entity in old:
            del stored[entity]
        self._save(data)
        return len(old)

    def clear(self, view: str) -> None:
        data = self._load()
        data["rows"].pop(view, None)
        data["states"].pop(view, None)
        self._save(data)

    def count(self, view: str) -> int:
        return len(self._load()["rows"].get(view, {}))

    def get_state(self, view: str) -> MaterializationState | None:
        text = self._load()["states"].get(view)
        return MaterializationState.from_json(text) if text is not None else None

    def put_state(self, state: MaterializationState) -> None:
        data = self._load()
        data["states"][state.view] = state.to_json()
        self._save(data)

    def close(self) -> None:
        """Nothing stays open between calls."""
