"""One small interface over the data-version backends (Delta Lake, lakeFS, plain files).

A data reference in config (``delta:<path>[@version]``, ``lakefs://<repo>/<ref>/<path>``, or a parquet/CSV
path) resolves to a :class:`DataVersion` before anything reads it. Reading that version later returns
exactly the same rows; every run and registered model records ``str(version)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

if TYPE_CHECKING:
    import ray.data

__all__ = [
    "Candidate",
    "CommitInfo",
    "DataBackend",
    "DataVersion",
    "VersionDiff",
    "diff_schemas",
    "version_diff",
]


@dataclass(frozen=True)
class DataVersion:
    """An immutable version: ``backend`` (delta | lakefs | files), where it lives, and the version id.

    ``str()`` gives the canonical reference, which parses back to the same version:
    ``delta:<uri>@<n>``, ``lakefs://<repo>/<commit>/<path>``, ``files:<path>@sha256:<digest>``.
    """

    backend: str
    location: str  # delta: table uri; lakefs: "<repo>/<path>"; files: the path
    version: str  # delta: version number; lakefs: commit id; files: content digest

    def __str__(self) -> str:
        if self.backend == "delta":
            return f"delta:{self.location}@{self.version}"
        if self.backend == "lakefs":
            repo, _, path = self.location.partition("/")
            return f"lakefs://{repo}/{self.version}/{path}"
        return f"files:{self.location}@sha256:{self.version}"


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


class DataBackend(Protocol):
    """What every backend does. ``ref`` is the reference the backend was opened with."""

    def resolve(self) -> DataVersion:
        """The immutable version the reference names now (latest, pinned, branch head...)."""

    def read(self, version: DataVersion) -> ray.data.Dataset:
        """Exactly the rows of ``version`` as a Ray Dataset."""

    def schema(self, version: DataVersion) -> pa.Schema: ...

    def num_rows(self, version: DataVersion) -> int: ...

    def write(
        self, table: pa.Table, message: str, metadata: dict[str, str], mode: str = "append"
    ) -> DataVersion:
        """Commit ``table`` to the main line (``mode``: append | overwrite) and return the new version."""

    def log(self, limit: int = 20) -> list[CommitInfo]: ...

    def diff(self, old: DataVersion, new: DataVersion) -> VersionDiff: ...

    def stage(
        self, table: pa.Table, message: str, metadata: dict[str, str], mode: str = "append"
    ) -> Candidate:
        """Write ``table`` as a candidate: readable at ``Candidate.version``, invisible on the main line."""

    def publish(self, candidate: Candidate, message: str, metadata: dict[str, str]) -> DataVersion:
        """Make a validated candidate the main line's new version (Delta commit / lakeFS merge)."""

    def discard(self, candidate: Candidate) -> None:
        """Drop a candidate that failed its audit; the main line is untouched."""
