"""Restore a state archive (:mod:`raymlops.state.backup`) into a state root.

Nothing in the target changes until the whole archive has been read and checked: every member is
extracted into a hidden staging folder next to the target, its SHA-256 and size compared with the
manifest, and members that are not plain files, leave the root (``..``, absolute names) or are not
in the manifest are refused, as are manifest entries missing from the archive. Only then is the
staging folder renamed into place.

The registry records absolute locations: MLflow's experiment artifact locations, run artifact URIs
and model version sources are ``file:///<old root>/artifacts/...``; tags such as
``raymlops.data_version`` name ``delta:<old root>/data/...``. Every text value in the restored SQLite
databases that names the old root is rewritten to the new one (at a path boundary), so the restored
registry serves its own artifacts and data, not the old root's. Artifacts themselves are not edited
(their digests and signatures must still match).

A target that holds anything but the security audit log is refused unless ``force``; with it, the
current contents are moved aside to ``<target>.pre-restore-<UTC time>``, never deleted. An audit log
already in the target (the CLI records the restore's authorization there first) is kept next to the
restored one as ``<log>.pre-restore-<UTC time>``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import tarfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from raymlops.errors import ConfigError, IntegrityError
from raymlops.security.audit import audit_event
from raymlops.state.backup import FORMAT, MANIFEST_NAME, MEMBER_ROOT, file_sha256

__all__ = ["RestoreResult", "read_manifest", "restore_state", "rewrite_root"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RestoreResult:
    target: Path
    files: int
    bytes: int
    from_root: str  # the state root the archive was taken from
    rewritten: int  # registry values that named the old root, now naming the target
    delta_versions: dict[str, int]
    moved_aside: Path | None  # where --force put the target's previous contents
    outside: dict[str, str]  # locations the archive does not hold (backed up by their own means)
    seconds: float = 0.0


def read_manifest(tar: tarfile.TarFile, archive: Path) -> dict[str, Any]:
    try:
        member = tar.getmember(MANIFEST_NAME)
        handle = tar.extractfile(member)
        manifest = json.loads(handle.read()) if handle is not None else None
    except (KeyError, json.JSONDecodeError, tarfile.TarError) as exc:
        raise IntegrityError(
            f"{archive} holds no readable {MANIFEST_NAME}: it is not a `raymlops state backup` archive, "
            f"or it is damaged ({exc})."
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise IntegrityError(f"{archive}: manifest format {found!r}, expected {FORMAT!r}.")
    return manifest


def _member_path(name: str, archive: Path) -> str:
    """The relative path of a ``state/...`` member, refused if it could land outside the root."""
    prefix = MEMBER_ROOT + "/"
    rel = name.removeprefix(prefix)
    parts = rel.split("/")
    if (
        not name.startswith(prefix)
        or not rel
        or "\\" in rel
        or "\x00" in rel
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise IntegrityError(f"{archive}: member {name!r} would be written outside the state root; refused.")
    return rel


def _extract(
    tar: tarfile.TarFile,
    manifest: Mapping[str, Any],
    staging: Path,
    archive: Path,
    progress: Callable[[int, int | None], None] | None = None,
) -> int:
    """Every member into ``staging``, each checked against the manifest; the bytes written."""
    expected: dict[str, dict[str, Any]] = manifest["files"]
    seen: set[str] = set()
    total = 0
    for member in tar:
        if member.name == MANIFEST_NAME:
            continue
        rel = _member_path(member.name, archive)
        if not member.isfile():
            raise IntegrityError(f"{archive}: member {member.name!r} is not a plain file (a link?); refused.")
        entry = expected.get(rel)
        if entry is None or rel in seen:
            raise IntegrityError(
                f"{archive}: member {member.name!r} is not in the manifest (or twice); refused."
            )
        seen.add(rel)
        path = staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        assert source is not None  # a regular file
        digest, size = hashlib.sha256(), 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, member.mode & 0o777 or 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        if digest.hexdigest() != entry["sha256"] or size != entry["bytes"]:
            raise IntegrityError(
                f"{archive}: {rel} does not match its manifest digest (sha256 {digest.hexdigest()[:16]}..., "
                f"expected {entry['sha256'][:16]}...): the archive is damaged or was altered; refused."
            )
        os.utime(path, (member.mtime, member.mtime))
        total += size
        if progress is not None:
            progress(len(seen), len(expected))
    missing = sorted(set(expected) - seen)
    if missing:
        raise IntegrityError(
            f"{archive}: {len(missing)} file(s) of the manifest are missing, e.g. {missing[0]}; refused."
        )
    return total


def rewrite_root(database: Path, old_root: str, new_root: str) -> int:
    """Replace ``old_root`` by ``new_root`` in every text value of ``database`` that names a path under it
    (plain or as a ``file://`` URI, percent-encoded); primary keys are left alone. Returns the count."""
    pairs = [(old_root, new_root)]
    if quote(old_root) != old_root:
        pairs.append((quote(old_root), quote(new_root)))
    # A path boundary after the root: /old/root2 is another root; '@' ends a `delta:` path before its version.
    patterns = [(re.compile(re.escape(old) + r"(?=[/@\"'\s,;)\]}]|$)"), new) for old, new in pairs]
    changed = 0
    with sqlite3.connect(database) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")') if r[5] == 0]
            for column in columns:
                for (old, _), (pattern, new) in zip(pairs, patterns, strict=True):
                    rows = conn.execute(
                        f'SELECT DISTINCT "{column}" FROM "{table}" WHERE instr("{column}", ?) > 0', (old,)
                    ).fetchall()
                    for (value,) in rows:
                        if not isinstance(value, str):
                            continue
                        updated = pattern.sub(new.replace("\\", "\\\\"), value)
                        if updated != value:
                            cursor = conn.execute(
                                f'UPDATE "{table}" SET "{column}" = ? WHERE "{column}" = ?', (updated, value)
                            )
                            changed += cursor.rowcount
    return changed


def _entries(target: Path, audit_log: Path | None) -> list[str]:
    """What ``target`` holds besides the audit log (and the folders leading to it)."""
    if not target.exists():
        return []
    found = []
    for folder, _, names in os.walk(target):
        for name in names:
            path = Path(folder, name).resolve()
            if path != audit_log and not name.endswith(".lock"):
                found.append(path.relative_to(target).as_posix())
    return sorted(found)


def restore_state(
    archive: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    force: bool = False,
    sha256: str | None = None,
    audit_log: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> RestoreResult:
    """Restore ``archive`` into the state root ``target`` (see the module docstring).

    Args:
        archive: A ``python -m raymlops state backup`` archive.
        target: The state root to restore into: absent, empty, or holding only ``audit_log``.
        force: Restore into a non-empty target, moving its contents aside first.
        sha256: The archive's digest as the backup printed it; checked before anything is read.
        audit_log: The security audit log (``security.audit_log`` of the target's config): the
            restore, and any refusal, is recorded there.
        progress: Called with (files checked and written, files in the archive) after each file.

    Raises:
        ConfigError: The archive does not exist, or the target is not empty and ``force`` is not set.
        IntegrityError: The archive's digest, a member's digest, or its layout is wrong.
    """
    started = time.monotonic()
    source = Path(archive).expanduser().resolve()
    root = Path(target).expanduser().resolve()
    log = Path(audit_log).expanduser().resolve() if audit_log else None

    def refuse(exc: Exception) -> None:
        audit_event(
            "state.restore", str(source), "refused", str(exc), details={"target": str(root)}, path=log
        )

    if not source.is_file():
        raise ConfigError("archive", f"{source} does not exist or is not a file.")
    existing = _entries(root, log)
    if existing and not force:
        exc = ConfigError(
            "state_dir",
            f"the restore target {root} is not empty ({len(existing)} file(s), e.g. {existing[0]}); restore "
            "into an empty state root (state_dir=... or RAYMLOPS_HOME), or pass --force to move its "
            "contents aside first.",
        )
        refuse(exc)
        raise exc
    if sha256 is not None and (actual := file_sha256(source)) != sha256.lower():
        exc2 = IntegrityError(f"{source} has sha256 {actual}, not the expected {sha256}: refused.")
        refuse(exc2)
        raise exc2
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.restore-{uuid.uuid4().hex[:8]}"
    staging.mkdir(mode=0o700)
    try:
        with tarfile.open(source, "r:*") as tar:
            manifest = read_manifest(tar, source)
            total = _extract(tar, manifest, staging, source, progress)
        old_root = str(manifest["state_dir"])
        rewritten = 0
        if old_root != str(root):
            for rel in manifest.get("sqlite", []):
                rewritten += rewrite_root(staging / rel, old_root, str(root))
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, IntegrityError | tarfile.TarError | EOFError | OSError):
            refuse(exc)
        if isinstance(exc, tarfile.TarError | EOFError):
            raise IntegrityError(f"{source} is not a readable archive ({exc}); refused.") from exc
        raise
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    moved_aside = None
    if root.exists():
        if existing:
            moved_aside = root.with_name(f"{root.name}.pre-restore-{stamp}")
            root.rename(moved_aside)
        else:
            if log is not None and log.exists():  # the authorization record of this very restore
                kept = staging / log.relative_to(root)
                kept = kept.with_name(f"{kept.name}.pre-restore-{stamp}")
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(log, kept)
            shutil.rmtree(root)  # nothing but empty folders and lock files is left
    staging.rename(root)
    result = RestoreResult(
        target=root,
        files=len(manifest["files"]),
        bytes=total,
        from_root=old_root,
        rewritten=rewritten,
        delta_versions=dict(manifest.get("delta_versions", {})),
        moved_aside=moved_aside,
        outside=dict(manifest.get("outside_state_dir", {})),
        seconds=time.monotonic() - started,
    )
    details = {
        "target": str(root),
        "from_root": old_root,
        "created": manifest.get("created"),
        "files": result.files,
        "rewritten": rewritten,
        "moved_aside": str(moved_aside) if moved_aside else None,
    }
    audit_event("state.restore", str(source), "ok", "restored a state archive", details=details, path=log)
    logger.info(
        "state restore archive=%s target=%s files=%d rewritten=%d", source, root, result.files, rewritten
    )
    return result
