"""Data references in config -> the backend that resolves and reads them.

``delta:<path>[@<version>]`` (embedded default), ``lakefs://<repo>/<ref>/<path>`` (branch, tag or commit),
``files:<path>[@sha256:<digest>]`` or a bare parquet/CSV path. ``str(DataVersion)`` is itself a reference,
so a recorded version can be pasted back into config to read exactly the same rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from raymlops.data.versioning import DataBackend
from raymlops.errors import ConfigError
from raymlops.security.names import check_ref_path

__all__ = ["REF_FORMATS", "ParsedRef", "open_backend", "parse_ref"]

REF_FORMATS = [
    "delta:<path>[@<version>]",
    "lakefs://<repo>/<branch|tag|commit>/<path>",
    "files:<path>[@sha256:<digest>]",
    "<path>.parquet | <path>.csv | <folder of parquet/csv files>",
]

_DELTA = re.compile(r"^delta:(?P<path>.+?)(?:@(?P<version>\d+))?$")
_LAKEFS = re.compile(r"^lakefs://(?P<repo>[^/]+)/(?P<ref>[^/]+)/(?P<path>.+)$")
_SCHEME = re.compile(r"^[A-Za-z][\w+.-]+:")  # two letters at least: C:\ stays a path
_FILES = re.compile(r"^files:(?P<path>.+?)(?:@sha256:(?P<digest>[0-9a-f]{64}))?$")


@dataclass(frozen=True)
class ParsedRef:
    backend: str  # delta | lakefs | files
    location: str  # table uri / "<repo>/<path>" / file path
    pin: str | None  # delta version, lakeFS ref, files digest
    key: str = "data.ref"  # the config key it came from, for error messages


def parse_ref(ref: str, key: str = "data.ref") -> ParsedRef:
    """Split a reference into backend, location and pin; a malformed one names the formats.

    NUL and control characters, '..' segments and look-alike Unicode are refused (``check_ref_path``).
    """
    check_ref_path(ref, key)
    if ref.startswith("delta:"):
        if match := _DELTA.match(ref):
            return ParsedRef("delta", match["path"], match["version"], key)
    elif ref.startswith("lakefs:"):
        if match := _LAKEFS.match(ref):
            return ParsedRef("lakefs", f"{match['repo']}/{match['path'].strip('/')}", match["ref"], key)
    elif ref.startswith("files:"):
        if match := _FILES.match(ref):
            return ParsedRef("files", match["path"], match["digest"], key)
    elif not _SCHEME.match(ref) and ref.strip():  # a bare path; "s3:..." or "gs://..." are not paths
        return ParsedRef("files", ref, None, key)
    raise ConfigError(key, f"cannot parse data reference {ref!r}.", REF_FORMATS)


def open_backend(ref: str, lakefs: Any = None, key: str = "data.ref") -> DataBackend:
    """The backend for ``ref``; ``lakefs`` is the ``data.lakefs`` config (host and credentials)."""
    parsed = parse_ref(ref, key)
    if parsed.backend == "delta":
        from raymlops.data.delta import DeltaBackend

        return DeltaBackend(parsed.location, int(parsed.pin) if parsed.pin is not None else None)
    if parsed.backend == "files":
        from raymlops.data.files_backend import FilesBackend

        return FilesBackend(parsed.location, parsed.pin)
    from raymlops.data.lakefs_backend import LakeFSBackend

    if lakefs is None or not lakefs.host:
        raise ConfigError("data.lakefs.host", f"{ref!r} is a lakeFS reference but no lakeFS host is set.")
    repo, _, path = parsed.location.partition("/")
    return LakeFSBackend(
        repo,
        parsed.pin or lakefs.main_branch,
        path,
        host=lakefs.host,
        access_key_id=lakefs.access_key_id,
        secret_access_key=lakefs.secret_access_key,
        main_branch=lakefs.main_branch,
        verify_ssl=lakefs.verify_ssl,
    )
