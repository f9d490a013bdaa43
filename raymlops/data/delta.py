"""Delta Lake backend (the embedded default): versions are Delta commits, read with Ray Data.

Write-audit-publish: a candidate is a sibling Delta table (``<table>.candidates/<id>``) that readers of
the main table never see; publishing is one atomic Delta commit of its rows to the main table.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from raymlops.data.versioning import Candidate, CommitInfo, DataVersion, Rows, SeedableBackend
from raymlops.errors import ConfigError

__all__ = ["DeltaBackend", "ensure_table", "storage_options"]

logger = logging.getLogger(__name__)

_META_PREFIX = "raymlops."  # our keys in a commit's custom metadata, next to delta-rs's own
_LOCATION = re.compile(r"^(?P<path>.+?)(?:@(?P<version>\d+))?$")


def storage_options(uri: str) -> dict[str, str] | None:
    """The deltalake storage options ``uri`` needs beyond the standard environment, or None.

    Credentials, region and endpoint come from the AWS environment variables (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``), never from config files. One
    difference remains: pyarrow (the prediction log) talks plain HTTP to an ``http://`` endpoint
    (MinIO, a local test endpoint) while deltalake refuses it ("URL scheme is not allowed") unless
    ``AWS_ALLOW_HTTP`` is set; the endpoint the operator named is allowed here. Only this flag is
    passed (it travels with the table to Ray workers), never a credential.
    """
    if not uri.startswith(("s3://", "s3a://")) or "AWS_ALLOW_HTTP" in os.environ:
        return None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL", "")
    return {"AWS_ALLOW_HTTP": "true"} if endpoint.startswith("http://") else None


def _commit_properties(message: str, metadata: dict[str, str]):  # -> deltalake.CommitProperties
    from deltalake import CommitProperties

    custom = {f"{_META_PREFIX}{k}": str(v) for k, v in metadata.items()}
    return CommitProperties(custom_metadata={**custom, f"{_META_PREFIX}message": message})


def ensure_table(uri: str, source_table: Rows, message: str) -> int:
    """Create the table from ``source_table`` (a table, or a stream written batch by batch) if it does not
    exist; return its latest version."""
    from deltalake import DeltaTable, write_deltalake

    options = storage_options(uri)
    if DeltaTable.is_deltatable(uri, storage_options=options):
        return DeltaTable(uri, storage_options=options).version()
    rows = source_table.num_rows if isinstance(source_table, pa.Table) else "streamed"
    logger.info("creating delta table uri=%s rows=%s", uri, rows)
    write_deltalake(
        uri,
        source_table,
        mode="error",
        commit_properties=_commit_properties(message, {}),
        storage_options=options,
    )
    return DeltaTable(uri, storage_options=options).version()


class DeltaBackend(SeedableBackend):
    """One Delta table at ``uri``; ``pinned`` is the ``@version`` of the reference, if any."""

    name = "delta"
    ref_format = "<path>[@<version>]"
    streams_writes = True  # deltalake writes a RecordBatchReader batch by batch

    def __init__(self, uri: str, pinned: int | None = None) -> None:
        self.uri = uri
        self.pinned = pinned

    @classmethod
    def parse_location(cls, rest: str) -> tuple[str, str | None] | None:
        match = _LOCATION.match(rest)
        return (match["path"], match["version"]) if match else None

    @classmethod
    def open(cls, location: str, pin: str | None, settings: object = None) -> DeltaBackend:
        return cls(location, int(pin) if pin is not None else None)

    @classmethod
    def is_newer(cls, new: DataVersion, old: DataVersion) -> bool | None:
        """Delta versions are commit numbers: a larger one is newer."""
        return int(new.version) > int(old.version)

    def exists(self) -> bool:
        from deltalake import DeltaTable

        return bool(DeltaTable.is_deltatable(self.uri, storage_options=storage_options(self.uri)))

    def create(self, table: Rows, message: str) -> DataVersion:
        return self._version(ensure_table(self.uri, table, message))

    def _table(self):  # -> deltalake.DeltaTable, latest version
        from deltalake import DeltaTable

        options = storage_options(self.uri)
        if not DeltaTable.is_deltatable(self.uri, storage_options=options):
            raise ConfigError("data.ref", f"{self.uri!r} is not a Delta table (no _delta_log).")
        return DeltaTable(self.uri, storage_options=options)

    def _version(self, n: int) -> DataVersion:
        return DataVersion("delta", self.uri, str(n))

    @staticmethod
    def _at(version: DataVersion):  # -> deltalake.DeltaTable
        """The table at ``version``: of this table or one of its candidates (they are read for audit)."""
        from deltalake import DeltaTable

        if version.backend != DeltaBackend.name:
            raise ConfigError("data.ref", f"{version} is not a Delta version.")
        options = storage_options(version.location)
        return DeltaTable(version.location, version=int(version.version), storage_options=options)

    def resolve(self) -> DataVersion:
        latest = self._table().version()
        if self.pinned is None:
            return self._version(latest)
        if not 0 <= self.pinned <= latest:
            raise ConfigError(
                "data.ref", f"version {self.pinned} does not exist in delta:{self.uri}: valid 0..{latest}."
            )
        return self._version(self.pinned)

    def read(self, version: DataVersion):  # -> ray.data.Dataset
        """Exactly the files of ``version`` (deltalake decides which), one Ray task per file or row group."""
        from raymlops.data.arrow_read import read_arrow_dataset

        return read_arrow_dataset(self.arrow_dataset(version))

    def arrow_dataset(self, version: DataVersion):  # -> pyarrow.dataset.Dataset
        return self._at(version).to_pyarrow_dataset()

    def schema(self, version: DataVersion) -> pa.Schema:
        return pa.schema(self._at(version).schema().to_arrow())

    def num_rows(self, version: DataVersion) -> int:
        files = self._at(version).get_add_actions(flatten=True)
        return int(sum(files.column("num_records").to_pylist()))

    def write(self, table: Rows, message: str, metadata: dict[str, str], mode: str = "append") -> DataVersion:

        _check_mode(mode)
        _write(self.uri, table, mode, _commit_properties(message, metadata))
        return self._version(self._table().version())

    def log(self, limit: int = 20) -> list[CommitInfo]:
        entries = []
        for entry in self._table().history(limit):
            ours = {k[len(_META_PREFIX) :]: str(v) for k, v in entry.items() if k.startswith(_META_PREFIX)}
            message = ours.pop("message", entry.get("operation", ""))
            stamp = datetime.fromtimestamp(entry["timestamp"] / 1000, tz=timezone.utc).isoformat()
            entries.append(CommitInfo(self._version(entry["version"]), stamp, message, ours))
        return entries

    # write-audit-publish

    def stage(self, table: Rows, message: str, metadata: dict[str, str], mode: str = "append") -> Candidate:
        from deltalake import write_deltalake

        _check_mode(mode)
        handle = f"{self.uri.rstrip('/')}.candidates/{uuid.uuid4().hex[:12]}"
        props = _commit_properties(message, {**metadata, "publish_mode": mode})
        write_deltalake(
            handle, table, mode="error", commit_properties=props, storage_options=storage_options(handle)
        )
        return Candidate(DataVersion("delta", handle, "0"), handle)

    def publish(self, candidate: Candidate, message: str, metadata: dict[str, str]) -> DataVersion:
        """One Delta commit of the candidate's rows, streamed (not collected) into the main table."""
        from deltalake import DeltaTable

        staged = DeltaTable(candidate.handle, storage_options=storage_options(candidate.handle))
        mode = staged.history(1)[0].get(f"{_META_PREFIX}publish_mode", "append")
        reader = staged.to_pyarrow_dataset().scanner().to_reader()
        props = _commit_properties(message, {**metadata, "candidate": candidate.handle})
        _write(self.uri, reader, mode, props)
        self.discard(candidate)
        return self._version(self._table().version())

    def discard(self, candidate: Candidate) -> None:
        if "://" not in candidate.handle:  # local disk; object stores expire candidates by lifecycle rule
            shutil.rmtree(Path(candidate.handle), ignore_errors=True)


def _write(uri: str, data, mode: str, props) -> None:  # data: pa.Table | RecordBatchReader
    """Append may add columns (schema evolution, shown by ``diff``); overwrite replaces the schema too."""
    from deltalake import write_deltalake

    _check_mode(mode)
    schema_mode = "merge" if mode == "append" else "overwrite"
    write_deltalake(  # type: ignore[call-overload]
        uri,
        data,
        mode=mode,
        schema_mode=schema_mode,
        commit_properties=props,
        storage_options=storage_options(uri),
    )


def _check_mode(mode: str) -> None:
    if mode not in ("append", "overwrite"):
        raise ConfigError("mode", f"unknown write mode {mode!r}.", ["append", "overwrite"])
