"""Plain parquet/CSV files as data: versioned by a digest of their content, read-only.

Files can change under us, so the version is a SHA-256 of every file's relative path and bytes, hashed
in parallel pieces (``raymlops.data.file_digest``). A read of a version re-checks the digest and fails if
the files changed since, rather than returning other rows. A digest of the earlier, sequential form still
names the same files.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from raymlops.data.file_digest import content_digest, legacy_digest
from raymlops.data.versioning import CommitInfo, DataBackend, DataVersion
from raymlops.errors import ConfigError, DataVersionError

__all__ = ["FilesBackend"]

_SUFFIXES = (".parquet", ".csv")
_LOCATION = re.compile(r"^(?P<path>.+?)(?:@sha256:(?P<digest>[0-9a-f]{64}))?$")


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _SUFFIXES)
    if not files:
        raise ConfigError("data.ref", f"{str(path)!r} holds no {' or '.join(_SUFFIXES)} files.")
    return files


class FilesBackend(DataBackend):
    """A parquet/CSV file or a folder of them; ``pinned`` is an expected digest from the reference.

    Read-only: writes, candidates and publishing keep ``DataBackend``'s refusals.
    """

    name = "files"
    ref_format = "<path>[@sha256:<digest>]"

    def __init__(self, path: str, pinned: str | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        self.pinned = pinned
        if not self.path.exists():
            raise ConfigError("data.ref", f"{path!r} does not exist.")

    @classmethod
    def parse_location(cls, rest: str) -> tuple[str, str | None] | None:
        match = _LOCATION.match(rest)
        return (match["path"], match["digest"]) if match else None

    @classmethod
    def format_version(cls, version: DataVersion) -> str:
        return f"files:{version.location}@sha256:{version.version}"

    def _digest(self) -> str:
        """The content digest, re-hashed only when a file's size or mtime changed since the last hash:
        ``data show`` alone would otherwise read every byte three times (resolve, schema, num_rows)."""
        stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in _files(self.path))
        if getattr(self, "_stamp", None) != stamp:
            self._stamp, self._hash = stamp, content_digest(self.path, _files(self.path))
            self._legacy: str | None = None
        return self._hash

    def _names_current(self, digest: str) -> bool:
        """Whether ``digest`` names the files as they are now: the digest, or its earlier sequential form
        (hashed only when the digest does not match, once per content)."""
        if digest == self._digest():
            return True
        if self._legacy is None:
            self._legacy = legacy_digest(self.path, _files(self.path))
        return digest == self._legacy

    def resolve(self) -> DataVersion:
        if self.pinned is not None and self._names_current(self.pinned):
            return DataVersion("files", str(self.path), self.pinned)  # the reference's own form
        version = DataVersion("files", str(self.path), self._digest())
        if self.pinned is not None:
            raise DataVersionError(
                f"files:{self.path}@sha256:{self.pinned}", f"the files now have digest {version.version}."
            )
        return version

    def _check(self, version: DataVersion) -> list[Path]:
        if (
            version.backend != self.name
            or version.location != str(self.path)
            or not self._names_current(version.version)
        ):
            raise DataVersionError(
                str(version), f"cannot be read any more: the files now have digest {self._digest()}."
            )
        return _files(self.path)

    def read(self, version: DataVersion):  # -> ray.data.Dataset
        from raymlops.data.arrow_read import read_arrow_dataset

        return read_arrow_dataset(self.arrow_dataset(version))

    def arrow_dataset(self, version: DataVersion):  # -> pyarrow.dataset.Dataset
        import pyarrow.dataset as pads

        files = [str(f) for f in self._check(version)]
        formats = {Path(f).suffix for f in files}
        if len(formats) > 1:
            raise ConfigError(
                "data.ref", f"{self.path} mixes {' and '.join(sorted(formats))} files: keep one format."
            )
        return pads.dataset(files, format=formats.pop().lstrip("."))

    def schema(self, version: DataVersion) -> pa.Schema:
        return self.arrow_dataset(version).schema

    def num_rows(self, version: DataVersion) -> int:
        return self.arrow_dataset(version).count_rows()

    def log(self, limit: int = 20) -> list[CommitInfo]:
        """Plain files have one version: their current content."""
        modified = max(f.stat().st_mtime for f in _files(self.path))
        stamp = datetime.fromtimestamp(modified, tz=timezone.utc).isoformat()
        return [CommitInfo(self.resolve(), stamp, "current content of the files")][:limit]

    def _read_only(self, action: str) -> ConfigError:
        return ConfigError(
            "data.ref",
            f"cannot {action} plain files ({self.path}): they keep no history. "
            "Use a delta:<path> or lakefs://<repo>/<branch>/<path> reference to write versions.",
        )
