"""Names that become parts of paths: model names, versions, run ids, app names, view names.

A safe name is 1-128 ASCII characters from ``[A-Za-z0-9._-]``, starts with a letter or digit, and is
not ``.``/``..`` (a leading letter or digit already rules those out). Everything else is refused
before any path is built from it: separators (``/``, ``\\``), ``..``, NUL and control characters,
absolute paths, and Unicode that only looks like ASCII (the fullwidth dot and solidus U+FF0E, U+FF0F,
which NFKC folds to ``../``; dotless or Cyrillic letters; right-to-left overrides).

``safe_join`` builds a path under a root from safe names and checks, after resolving symlinks, that
the result is still under the root (a symlink planted inside the root cannot lead out of it).

Data references are paths by design (``delta:/data/flights``); ``check_ref_path`` refuses only what
has no business in one: NUL and control characters, ``..`` segments, and non-NFKC Unicode.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

from raymlops.errors import UnsafeNameError

__all__ = ["check_ref_path", "safe_join", "safe_name"]

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _problem(value: str) -> str | None:
    if "\x00" in value:
        return "it holds a NUL byte"
    if _CONTROL.search(value):
        return "it holds a control character"
    if unicodedata.normalize("NFKC", value) != value or not value.isascii():
        return "it holds non-ASCII characters (some fold to '/' or '.' or look like other letters)"
    if value.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", value):
        return "it is an absolute path"
    if "/" in value or "\\" in value:
        return "it holds a path separator"
    if ".." in value:
        return "it holds '..'"
    return None


def safe_name(value: object, what: str) -> str:
    """``value`` if it is a safe name (see the module docstring), else ``UnsafeNameError``.

    Args:
        value: The name.
        what: What it names, for the message (``"model name"``, ``"run id"``).
    """
    if not isinstance(value, str) or not value:
        raise UnsafeNameError(what, value, "it must be a non-empty string")
    problem = _problem(value)
    if problem is None and not _SAFE.fullmatch(value):
        problem = "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
    if problem is not None:
        raise UnsafeNameError(what, value, problem)
    return value


def safe_join(root: str | os.PathLike[str], *names: str, what: str = "name") -> Path:
    """``root/name/...`` from safe names; refused if it resolves outside ``root`` (symlinks followed)."""
    base = Path(root).resolve()
    path = base.joinpath(*(safe_name(n, what) for n in names))
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise UnsafeNameError(what, "/".join(names), f"it resolves outside {base} (a symlink?)")
    return path


def check_ref_path(value: str, what: str = "data reference") -> str:
    """A path inside a data reference: refused if it holds NUL/control characters, '..' segments
    or non-NFKC Unicode. Absolute paths and URIs are allowed: that is what a reference is."""
    if "\x00" in value or _CONTROL.search(value):
        raise UnsafeNameError(what, value, "it holds a NUL byte or a control character")
    if unicodedata.normalize("NFKC", value) != value:
        raise UnsafeNameError(what, value, "it holds Unicode that folds to other characters (NFKC)")
    if any(part == ".." for part in re.split(r"[\\/]", value)):
        raise UnsafeNameError(what, value, "it holds a '..' segment; write the path without it")
    return value
