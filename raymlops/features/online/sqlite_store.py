"""The embedded online store: one SQLite file (WAL), zero setup.

One table holds every view's rows, keyed by ``(view, entity)``; a lookup of a request batch is one
statement whatever the number of views: per view ``view = ? AND entity IN (...)``, joined by ``UNION ALL``
(each part a primary-key search; a row-value ``(view, entity) IN (VALUES ...)`` scans the whole table).
WAL lets the router read while ``features materialize`` writes. Connections are per thread (sqlite3
objects may not cross threads), opened on first use.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from raymlops.errors import ConfigError, OnlineStoreError
from raymlops.features.online.base import (
    FeatureRow,
    MaterializationState,
    OnlineStore,
    OnlineStoreSettings,
    encode_payload,
)

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feature_rows (
    view TEXT NOT NULL,
    entity TEXT NOT NULL,
    event_ts INTEGER NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (view, entity)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS materializations (view TEXT PRIMARY KEY, state TEXT NOT NULL);
"""
# Newest wins: an upsert never replaces a row with an older one (a late or repeated write is harmless).
_UPSERT = """
INSERT INTO feature_rows (view, entity, event_ts, payload) VALUES (?, ?, ?, ?)
ON CONFLICT (view, entity) DO UPDATE SET event_ts = excluded.event_ts, payload = excluded.payload
WHERE excluded.event_ts >= feature_rows.event_ts
"""
# SQLite allows 32766 bound variables per statement: one per entity, one per view part.
_MAX_VARIABLES = 30_000
_PART = "SELECT view, entity, payload FROM feature_rows WHERE view = ? AND entity IN ({})"


class SQLiteStore(OnlineStore):
    """``OnlineStore`` on a SQLite file (created with its parent folders when missing)."""

    @classmethod
    def check_settings(cls, settings: OnlineStoreSettings) -> None:
        if not (isinstance(settings.path, str) and settings.path):
            raise ConfigError(
                "features.online_store.path", "is empty: name the SQLite file of the online store."
            )

    @classmethod
    def from_settings(cls, settings: OnlineStoreSettings) -> SQLiteStore:
        return cls(settings.path, timeout_s=settings.timeout_s)

    def __init__(self, path: str | Path, *, timeout_s: float = 0.5) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._connect()  # fail at open, not on the first request, when the file cannot be made

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, safe on crash
            connection.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise OnlineStoreError(str(self.path), str(exc)) from exc
        self._local.connection = connection
        return connection

    def write(self, view: str, rows: Iterable[FeatureRow]) -> int:
        connection = self._connect()
        values = [(view, key, ts, encode_payload(ts, features)) for key, ts, features in rows]
        try:
            with connection:  # one transaction per batch
                connection.execute("BEGIN")
                connection.executemany(_UPSERT, values)
        except sqlite3.Error as exc:
            raise OnlineStoreError(str(self.path), str(exc)) from exc
        return len(values)

    def lookup(self, keys: Mapping[str, Sequence[str | None]]) -> dict[str, list[dict[str, Any] | None]]:
        wanted = {view: sorted({k for k in entities if k is not None}) for view, entities in keys.items()}
        found: dict[tuple[str, str], str] = {}
        try:
            connection = self._connect()
            for query, args in _statements(wanted):
                found.update(((v, e), p) for v, e, p in connection.execute(query, args))
        except sqlite3.Error as exc:
            raise OnlineStoreError(str(self.path), str(exc)) from exc
        decoded = {pair: json.loads(payload) for pair, payload in found.items()}
        return {
            view: [None if key is None else decoded.get((view, key)) for key in entities]
            for view, entities in keys.items()
        }

    def expire(self, view: str, before_us: int) -> int:
        connection = self._connect()
        with connection:
            cursor = connection.execute(
                "DELETE FROM feature_rows WHERE view = ? AND event_ts < ?", (view, before_us)
            )
        return cursor.rowcount

    def clear(self, view: str) -> None:
        connection = self._connect()
        with connection:
            connection.execute("BEGIN")
            connection.execute("DELETE FROM feature_rows WHERE view = ?", (view,))
            connection.execute("DELETE FROM materializations WHERE view = ?", (view,))

    def count(self, view: str) -> int:
        row = self._connect().execute("SELECT COUNT(*) FROM feature_rows WHERE view = ?", (view,)).fetchone()
        return int(row[0])

    def get_state(self, view: str) -> MaterializationState | None:
        row = self._connect().execute("SELECT state FROM materializations WHERE view = ?", (view,)).fetchone()
        return None if row is None else MaterializationState.from_json(row[0])

    def put_state(self, state: MaterializationState) -> None:
        connection = self._connect()
        with connection:
            connection.execute(
                "INSERT INTO materializations (view, state) VALUES (?, ?) "
                "ON CONFLICT (view) DO UPDATE SET state = excluded.state",
                (state.view, state.to_json()),
            )

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _statements(wanted: Mapping[str, list[str]]) -> list[tuple[str, list[str]]]:
    """``UNION ALL`` statements covering every (view, entity): one unless the batch exceeds SQLite's
    bound-variable limit."""
    statements: list[tuple[str, list[str]]] = []
    parts: list[str] = []
    args: list[str] = []
    for view, entities in wanted.items():
        for start in range(0, len(entities), _MAX_VARIABLES - 1):
            chunk = entities[start : start + _MAX_VARIABLES - 1]
            if parts and len(args) + len(chunk) + 1 > _MAX_VARIABLES:
                statements.append((" UNION ALL ".join(parts), args))
                parts, args = [], []
            parts.append(_PART.format(",".join("?" * len(chunk))))
            args += [view, *chunk]
    if parts:
        statements.append((" UNION ALL ".join(parts), args))
    return statements
