"""A data backend written outside the package: numbered snapshot folders of parquet files.

It is the example of docs/plugins.md: nothing in raymlops names it; a reference names it by its dotted
path, ``tests.plugins.external_backend:SnapshotFolderBackend:<folder>[@<n>]``, and it passes the
conformance suite (tests/conformance/test_data_backends.py) and runs the quickstart from config.

Layout: ``<folder>/v<n>/part-*.parquet`` is version ``n`` (a whole snapshot; an append hard-links the
previous version's parts), ``<folder>/v<n>/_commit.json`` its message, metadata and time. A candidate is
a snapshot under ``<folder>/_candidates/<id>/`` that publishing renames to the next version.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raymlops.data.versioning import Candidate, CommitInfo, DataVersion, SeedableBackend
from raymlops.errors import ConfigError


class SnapshotFolderBackend(SeedableBackend):
    """Versions ``v0, v1, ...`` of a folder; ``pinned``: the ``@<n>`` of the reference, if any."""

    ref_format = "<folder>[@<n>]"  # ``name`` is left unset: the backend is named by its dotted path

    def __init__(self, folder: str, pinned: str | None = None) -> None:
        self.folder = Path(folder).expanduser().resolve()
        self.pinned = pinned

    @classmethod
    def parse_location(cls, rest: str) -> tuple[str, str | None] | None:
        parsed = super().parse_location(rest)
        if parsed is None or (parsed[1] is not None and not parsed[1].isdigit()):
            return None
        return parsed

    @classmethod
    def is_newer(cls, new: DataVersion, old: DataVersion) -> bool | None:
        return int(new.version) > int(old.version)

    # -- helpers

    def _versions(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(p.name[1:]) for p in self.folder.glob("v*") if p.name[1:].isdigit())

    def _version(self, n: int, location: Path | None = None) -> DataVersion:
        return DataVersion(self.name, str(location or self.folder), str(n))

    def _snapshot(self, version: DataVersion) -> Path:
        path = Path(version.location) / f"v{version.version}"
        if version.backend != self.name or not path.is_dir():
            raise ConfigError("data.ref", f"{version} does not exist.")
        return path

    def _parts(self, version: DataVersion) -> list[str]:
        return sorted(str(p) for p in self._snapshot(version).glob("part-*.parquet"))

    def _commit(self, target: Path, parts: list[Path], table: pa.Table, message: str, meta: dict) -> None:
        """Write snapshot ``target``: links to ``parts`` plus ``table`` as a new part, then its commit."""
        staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True)
        for part in parts:
            os.link(part, staging / part.name)
        pq.write_table(table, staging / f"part-{uuid.uuid4().hex}.parquet")
        stamp = datetime.now(timezone.utc).isoformat()
        commit = {"message": message, "metadata": {k: str(v) for k, v in meta.items()}, "timestamp": stamp}
        (staging / "_commit.json").write_text(json.dumps(commit))
        staging.rename(target)  # a version appears whole or not at all

    def _next(self, table: pa.Table, mode: str, message: str, metadata: dict, target_root: Path) -> Path:
        if mode not in ("append", "overwrite"):
            raise ConfigError("mode", f"unknown write mode {mode!r}.", ["append", "overwrite"])
        versions = self._versions()
        base = self.folder / f"v{versions[-1]}" if versions and mode == "append" else None
        parts = sorted(base.glob("part-*.parquet")) if base else []
        target = target_root / f"v{versions[-1] + 1 if versions else 0}"
        self._commit(target, parts, table, message, metadata)
        return target

    # -- the contract

    def exists(self) -> bool:
        return bool(self._versions())

    def create(self, table: pa.Table, message: str) -> DataVersion:
        return self.write(table, message, {}, mode="overwrite")

    def resolve(self) -> DataVersion:
        versions = self._versions()
        if not versions:
            raise ConfigError("data.ref", f"{str(self.folder)!r} holds no version yet (no v<n> folder).")
        if self.pinned is None:
            return self._version(versions[-1])
        if int(self.pinned) not in versions:
            raise ConfigError(
                "data.ref", f"version {self.pinned} of {self.folder} does not exist.", map(str, versions)
            )
        return self._version(int(self.pinned))

    def read(self, version: DataVersion) -> Any:  # -> ray.data.Dataset
        import ray.data

        return ray.data.read_parquet(self._parts(version))

    def schema(self, version: DataVersion) -> pa.Schema:
        return pa.unify_schemas([pq.read_schema(p) for p in self._parts(version)])

    def num_rows(self, version: DataVersion) -> int:
        return sum(pq.read_metadata(p).num_rows for p in self._parts(version))

    def log(self, limit: int = 20) -> list[CommitInfo]:
        entries = []
        for n in reversed(self._versions()[-limit:] if limit > 0 else []):
            commit = json.loads((self.folder / f"v{n}" / "_commit.json").read_text())
            entries.append(
                CommitInfo(self._version(n), commit["timestamp"], commit["message"], commit["metadata"])
            )
        return entries

    def write(
        self, table: pa.Table, message: str, metadata: dict[str, str], mode: str = "append"
    ) -> DataVersion:
        target = self._next(table, mode, message, metadata, self.folder)
        return self._version(int(target.name[1:]))

    def stage(
        self, table: pa.Table, message: str, metadata: dict[str, str], mode: str = "append"
    ) -> Candidate:
        root = self.folder / "_candidates" / uuid.uuid4().hex[:12]
        target = self._next(table, mode, message, metadata, root)
        return Candidate(self._version(int(target.name[1:]), root), str(target))

    def publish(self, candidate: Candidate, message: str, metadata: dict[str, str]) -> DataVersion:
        """The candidate's snapshot becomes the next version (it fails if another write came first)."""
        staged = Path(candidate.handle)
        commit = json.loads((staged / "_commit.json").read_text())
        commit.update(message=message, metadata={**commit["metadata"], **metadata})
        (staged / "_commit.json").write_text(json.dumps(commit))
        target = self.folder / staged.name
        if target.exists():
            raise ConfigError(
                "data.ref", f"{target} was written since the candidate was staged: stage again."
            )
        staged.rename(target)
        self.discard(candidate)
        return self._version(int(target.name[1:]))

    def discard(self, candidate: Candidate) -> None:
        shutil.rmtree(Path(candidate.handle).parent, ignore_errors=True)
