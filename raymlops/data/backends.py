"""The data backends, kept as data: a reference's scheme -> the class that reads it (``module:Class``).

``delta:...``, ``lakefs://...`` and ``files:...`` name the shipped backends. A scheme that is not listed
here may be a backend's own dotted path, so a backend written outside the package is named in config
without editing it: ``data.ref=my_pkg.backends:ParquetFolder:/data/flights``. Every backend implements
:class:`raymlops.data.versioning.DataBackend` and passes ``tests/conformance/test_data_backends.py``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from raymlops.plugins import resolve_plugin

if TYPE_CHECKING:
    from raymlops.data.versioning import DataBackend

__all__ = ["BACKENDS", "BARE_PATH_BACKEND", "backend_class"]

BACKENDS: dict[str, str] = {
    "delta": "raymlops.data.delta:DeltaBackend",  # the embedded default: versions are Delta commits
    "lakefs": "raymlops.data.lakefs_backend:LakeFSBackend",  # versions are lakeFS commits
    "files": "raymlops.data.files_backend:FilesBackend",  # read-only; versions are content digests
}
BARE_PATH_BACKEND = "files"  # a reference without a scheme is a path of parquet/CSV files


@functools.lru_cache(maxsize=64)
def backend_class(name: str, key: str = "data.ref") -> type[DataBackend]:
    """The backend class ``name`` stands for: a scheme of :data:`BACKENDS`, else a ``module:Class`` path.

    Raises:
        ConfigError: Neither, or the class is not a ``DataBackend``.
    """
    from raymlops.data.versioning import DataBackend
    from raymlops.errors import ConfigError

    found = resolve_plugin(name, BACKENDS, "data backend", key)
    if not (isinstance(found, type) and issubclass(found, DataBackend)):
        raise ConfigError(
            key, f"{name!r} is {found!r}, not a subclass of raymlops.data.versioning.DataBackend."
        )
    return found
