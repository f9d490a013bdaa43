"""One small interface over the data-version backends (Delta Lake, lakeFS, plain files, your own).

A data reference in config (``delta:<path>[@version]``, ``lakefs://<repo>/<ref>/<path>``, a parquet/CSV
path, or ``<package.module:Class>:<location>`` for a backend outside the package) resolves to a
:class:`DataVersion` before anything reads it. Reading that version later returns exactly the same
rows; every run and registered model records ``str(version)``, which parses back to the same version.
"""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

import pyarrow as pa

from raymlops.errors import ConfigError
from raymlops.plugins import resolve_plugin

if TYPE_CHECKING:
    import ray.data

__all__ = [
    "BACKENDS",
    "BARE_PATH_BACKEND",
    "Candidate",
    "CommitInfo",
    "DataBackend",
    "DataVersion",
    "Rows",
    "SeedableBackend",
    "VersionDiff",
    "backend_class",
    "diff_schemas",
    "rows_for",
    "version_diff",
]

# Rows to write: one table in memory, or a stream of record batches (a raw source much larger than memory,
# :func:`raymlops.data.sources.open_source`). Backends that take streams say so (``streams_writes``).
Rows: TypeAlias = "pa.Table | pa.RecordBatchReader"


# The data backends, kept as data: a reference's scheme -> the class that reads it (``module:Class``). A
# scheme that is not listed may be a backend's own dotted path, so a backend written outside the package
# is named in config without editing it: ``data.ref=my_pkg.backends:ParquetFolder:/data/flights``.
BACKENDS: dict[str, str] = {
    "delta": "raymlops.data.delta:DeltaBackend",  # the embedded default: versions are Delta commits
    "lakefs": "raymlops.data.lakefs_backend:LakeFSBackend",  # versions are lakeFS commits
    "files": "raymlops.data.files_backend:FilesBackend",  # read-only; versions are content digests
}
BARE_PATH_BACKEND = "files"  # a reference without a scheme is a path of parquet/CSV files


@dataclass(frozen=True)
class DataVersion:
    """An immutable version: ``backend`` (its ``DataBackend.name``), where it lives, and the version id.

    ``str()`` gives the canonical reference, which parses back to the same version:
    ``delta:<uri>@<n>``, ``lakefs://<repo>/<commit>/<path>``, ``files:<path>@sha256:<digest>``,
    ``<module:Class>:<location>@<version>``.
    """

    backend: str
    location: str  # delta: table uri; lakefs: "<repo>/<path>"; files: the path
    version: str  # delta: version number; lakefs: commit id; files: content digest

    def __str__(self) -> str:
        try:
            return backend_class(self.backend).format_version(self)
        except ConfigError:  # a backend this process cannot import: still a readable reference
            return f"{self.backend}:{self.location}@{self.version}"


@dataclass(frozen=True)
class CommitInfo:
    """One entry of a backend's log, newest first."""

    version: DataVersion
    timestamp: str  # ISO 8601, UTC
    message: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionDiff:
    """What changed between two versions: row counts and schema."""

    old: DataVersion
    new: DataVersion
    old_rows: int
    new_rows: int
    added_columns: dict[str, str]  # name -> type
    removed_columns: dict[str, str]
    changed_types: dict[str, tuple[str, str]]  # name -> (old type, new type)

    def as_dict(self) -> dict[str, Any]:
        return {
            "old": str(self.old),
            "new": str(self.new),
            "old_rows": self.old_rows,
            "new_rows": self.new_rows,
            "row_delta": self.new_rows - self.old_rows,
            "added_columns": self.added_columns,
            "removed_columns": self.removed_columns,
            "changed_types": {k: list(v) for k, v in self.changed_types.items()},
        }


def diff_schemas(old: pa.Schema, new: pa.Schema) -> tuple[dict[str, str], dict[str, str], dict[str, tuple]]:
    """(added, removed, changed types) between two Arrow schemas, by column name."""
    old_types = {f.name: str(f.type) for f in old}
    new_types = {f.name: str(f.type) for f in new}
    added = {k: v for k, v in new_types.items() if k not in old_types}
    removed = {k: v for k, v in old_types.items() if k not in new_types}
    changed = {k: (old_types[k], v) for k, v in new_types.items() if k in old_types and old_types[k] != v}
    return added, removed, changed


def version_diff(backend: DataBackend, old: DataVersion, new: DataVersion) -> VersionDiff:
    """Row counts and schema changes between two versions, from any backend's schema and num_rows."""
    added, removed, changed = diff_schemas(backend.schema(old), backend.schema(new))
    return VersionDiff(old, new, backend.num_rows(old), backend.num_rows(new), added, removed, changed)


@dataclass(frozen=True)
class Candidate:
    """New data written where readers of the main version cannot see it (write-audit-publish)."""

    version: DataVersion  # readable like any version, for the audit
    handle: str  # backend-specific: the candidate table uri, or the lakeFS branch name


class DataBackend(abc.ABC):
    """What every data backend does; ``tests/conformance/test_data_backends.py`` checks it.

    A backend is opened from a reference (``open``) and answers for the data it names: the immutable
    version the reference names now (``resolve``), that version's rows, schema and row count, and its
    history. Backends that keep history also write: to the main line, or as a candidate that is
    audited and then published or discarded (write-audit-publish). A read-only backend keeps the
    defaults below, which refuse every write with a ConfigError that names the fix.

    The class-level half is the backend's reference grammar: ``name`` is the scheme of its references
    (a key of ``raymlops.data.versioning.BACKENDS``; a backend outside the package leaves it unset and
    is named by its dotted path ``package.module:Class``); ``parse_location`` reads what follows
    ``<name>:``, ``format_version`` writes a version back as a reference that parses to it again.
    """

    name: ClassVar[str]
    ref_format: ClassVar[str] = "<location>[@<version>]"  # what follows "<name>:", for error messages
    # True: ``write``, ``stage`` and ``create`` also take a ``pa.RecordBatchReader`` and write it batch by
    # batch. A backend that leaves it False is handed one table (:func:`rows_for` reads the stream whole).
    streams_writes: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:  # a backend outside the package is named by its dotted path
            cls.name = f"{cls.__module__}:{cls.__qualname__}"

    # -- the reference grammar (no I/O)

    @classmethod
    def parse_location(cls, rest: str) -> tuple[str, str | None] | None:
        """``(location, pin)`` from the reference after ``<name>:``; None when it is malformed."""
        location, at, pin = rest.rpartition("@") if "@" in rest else (rest, "", "")
        if not location.strip() or (at and not pin):
            return None
        return location, pin or None

    @classmethod
    def format_version(cls, version: DataVersion) -> str:
        """The reference that names exactly ``version`` (``parse_location`` reads it back)."""
        return f"{cls.name}:{version.location}@{version.version}"

    @classmethod
    def open(cls, location: str, pin: str | None, settings: Any = None) -> DataBackend:
        """The backend for a parsed reference; ``settings``: its config section, when it has one."""
        return cls(location, pin)  # type: ignore[call-arg]

    @classmethod
    def is_newer(cls, new: DataVersion, old: DataVersion) -> bool | None:
        """Whether ``new`` comes after ``old`` on the same data; None when versions carry no order."""
        return None

    # -- reading

    @abc.abstractmethod
    def resolve(self) -> DataVersion:
        """The immutable version the reference names now (latest, pinned, branch head...)."""

    @abc.abstractmethod
    def read(self, version: DataVersion) -> ray.data.Dataset:
        """Exactly the rows of ``version`` as a Ray Dataset."""

    def arrow_dataset(self, version: DataVersion) -> Any:  # -> pyarrow.dataset.Dataset | None
        """The rows of ``version`` as a ``pyarrow.dataset.Dataset`` (the same rows, columns and types as
        :meth:`read`), so data that fits one process is read there without Ray tasks (adaptive ingest,
        ``execution.*``). This default: None, the data is read through :meth:`read` only."""
        return None

    @abc.abstractmethod
    def schema(self, version: DataVersion) -> pa.Schema: ...

    @abc.abstractmethod
    def num_rows(self, version: DataVersion) -> int: ...

    @abc.abstractmethod
    def log(self, limit: int = 20) -> list[CommitInfo]:
        """The versions of the main line, newest first."""

    def diff(self, old: DataVersion, new: DataVersion) -> VersionDiff:
        return version_diff(self, old, new)

    # -- writing (read-only backends keep these defaults)

    def _read_only(self, action: str) -> Exception:
        return ConfigError(
            "data.ref",
            f"cannot {action} {self.name} data: it keeps no history. "
            "Use a delta:<path> or lakefs://<repo>/<branch>/<path> reference to write versions.",
        )

    def write(self, table: Rows, message: str, metadata: dict[str, str], mode: str = "append") -> DataVersion:
        """Commit ``table`` to the main line (``mode``: append | overwrite) and return the new version.

        ``table`` is a ``pa.Table``, or a ``pa.RecordBatchReader`` only when ``streams_writes`` is True."""
        raise self._read_only("write")

    def stage(self, table: Rows, message: str, metadata: dict[str, str], mode: str = "append") -> Candidate:
        """Write ``table`` as a candidate: readable at ``Candidate.version``, invisible on the main line."""
        raise self._read_only("stage a candidate on")

    def publish(self, candidate: Candidate, message: str, metadata: dict[str, str]) -> DataVersion:
        """Make a validated candidate the main line's new version (Delta commit / lakeFS merge)."""
        raise self._read_only("publish to")

    def discard(self, candidate: Candidate) -> None:
        """Drop a candidate that failed its audit; the main line is untouched."""
        raise self._read_only("discard a candidate of")


class SeedableBackend(DataBackend):
    """A backend whose data may not exist yet, and is then created from a raw source (``data.source``).

    ``raymlops.data.seed.open_seeded`` is the one place that does it; Delta tables are seeded this way.
    """

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the data the reference names exists (no I/O beyond a metadata check)."""

    @abc.abstractmethod
    def create(self, table: Rows, message: str) -> DataVersion:
        """Write ``table`` as the first version of data that does not exist yet (a stream only when
        ``streams_writes`` is True)."""


def rows_for(backend: DataBackend, rows: Rows) -> Rows:
    """``rows`` as ``backend`` takes them: a stream stays a stream only for a backend that writes streams."""
    if isinstance(rows, pa.RecordBatchReader) and not backend.streams_writes:
        return rows.read_all()
    return rows


@functools.lru_cache(maxsize=64)
def backend_class(name: str, key: str = "data.ref") -> type[DataBackend]:
    """The backend class ``name`` stands for: a scheme of :data:`BACKENDS`, else a ``module:Class`` path.

    Raises:
        ConfigError: Neither, or the class is not a ``DataBackend``.
    """
    found = resolve_plugin(name, BACKENDS, "data backend", key)
    if not (isinstance(found, type) and issubclass(found, DataBackend)):
        where = f"{DataBackend.__module__}.DataBackend"
        raise ConfigError(key, f"{name!r} is {found!r}, not a subclass of {where}.")
    return found
