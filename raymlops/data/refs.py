"""Data references in config -> the backend that resolves and reads them.

``<scheme>:<location>``: ``delta:<path>[@<version>]`` (embedded default), ``lakefs://<repo>/<ref>/<path>``
(branch, tag or commit), ``files:<path>[@sha256:<digest>]`` or a bare parquet/CSV path; the schemes are
the backends of ``raymlops.data.versioning.BACKENDS``. A backend outside the package is named by its dotted
path in place of the scheme: ``my_pkg.backends:ParquetFolder:/data/flights``. ``str(DataVersion)`` is
itself a reference, so a recorded version can be pasted back into config to read exactly the same rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from raymlops.data.versioning import BACKENDS, BARE_PATH_BACKEND, DataBackend, DataVersion, backend_class
from raymlops.errors import ConfigError
from raymlops.plugins import DOTTED_PATH
from raymlops.security.names import check_ref_path

__all__ = ["ParsedRef", "open_backend", "parse_ref", "parse_version", "ref_formats"]

_SCHEME = re.compile(r"^[A-Za-z][\w+.-]+:")  # two letters at least: C:\ stays a path
# A backend's dotted path in place of the scheme: "<package.module:Class>:<location>".
_PLUGIN = re.compile(rf"^(?P<name>{DOTTED_PATH.pattern[1:-1]}):(?P<rest>.*)$")


@dataclass(frozen=True)
class ParsedRef:
    backend: str  # a scheme of BACKENDS (delta | lakefs | files) or a backend's dotted path
    location: str  # table uri / "<repo>/<path>" / file path
    pin: str | None  # delta version, lakeFS ref, files digest
    key: str = "data.ref"  # the config key it came from, for error messages


def ref_formats() -> list[str]:
    """Every reference format, for error messages."""
    formats = [f"{name}:{backend_class(name).ref_format}" for name in BACKENDS]
    return [
        *formats,
        "<path>.parquet | <path>.csv | <folder of parquet/csv files>",
        "<package.module:Class>:<location> (a backend of your own)",
    ]


def _scheme(ref: str) -> tuple[str, str] | None:
    """(backend name, the rest) of a reference with a scheme; None for a bare path (or no scheme known)."""
    head, colon, rest = ref.partition(":")
    if colon and head in BACKENDS:
        return head, rest
    if match := _PLUGIN.match(ref):
        return match["name"], match["rest"]
    return None


def parse_ref(ref: str, key: str = "data.ref") -> ParsedRef:
    """Split a reference into backend, location and pin; a malformed one names the formats.

    NUL and control characters, '..' segments and look-alike Unicode are refused (``check_ref_path``).
    """
    check_ref_path(ref, key)
    if found := _scheme(ref):
        name, rest = found
        if parsed := backend_class(name, key).parse_location(rest):
            return ParsedRef(name, parsed[0], parsed[1], key)
    elif not _SCHEME.match(ref) and ref.strip():  # a bare path; "s3:..." or "gs://..." are not paths
        return ParsedRef(BARE_PATH_BACKEND, ref, None, key)
    raise ConfigError(key, f"cannot parse data reference {ref!r}.", ref_formats())


def parse_version(text: str, key: str) -> DataVersion:
    """A recorded version (``str(DataVersion)``, e.g. a registry tag) back as the version it names."""
    parsed = parse_ref(text, key)
    if parsed.pin is None:
        raise ConfigError(key, f"{text!r} names no version: a recorded data version carries its pin.")
    return DataVersion(parsed.backend, parsed.location, parsed.pin)


def open_backend(ref: str, settings: Any = None, key: str = "data.ref") -> DataBackend:
    """The backend for ``ref``; ``settings`` is the backend's config section (``data.lakefs`` for lakeFS)."""
    parsed = parse_ref(ref, key)
    return backend_class(parsed.backend, key).open(parsed.location, parsed.pin, settings)
