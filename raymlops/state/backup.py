"""One archive of a state root, consistent while a job, a server or the monitor writes to it.

The state root (``state_dir``) holds SQLite databases (the MLflow registry and tracking store, the
online store), Delta tables, MLflow artifacts, the prediction log, keys and the audit log. Each kind
is copied the way that gives a consistent copy of it while writers go on:

* **SQLite** (any file with the SQLite header): SQLite's online backup API, a transactionally
  consistent copy even mid-write; their ``-wal``/``-shm``/``-journal`` and ``.lock`` companions are
  not copied (the backup holds what they would add).
* **Delta tables** (a folder with ``_delta_log``): the latest *committed* version when the table is
  reached (commit files appear atomically), its log up to that version, and the data files that some
  retained version up to it references. Files of a commit still in flight are left out; the restored
  table's latest version is the captured one, and older versions stay readable (time travel, and the
  ``raymlops.data_version`` a registered model names).
* **Everything else**: copied into a spool first, then archived with the size and SHA-256 of that copy;
  ``.jsonl`` files (the audit log) up to their last complete line. Hidden ``*.tmp`` files are skipped:
  they are atomic writes in progress (the prediction log's ``.part-*.tmp``), renamed once complete.

The databases are copied first: a model version is registered only after its artifacts are stored,
and a data version is recorded only after it is committed, so everything the registry snapshot names
is already complete when the artifacts and tables are copied after it.

Archive layout (tar, gzip when the name ends ``.gz``/``.tgz``): ``state/<relative path>`` per file,
then ``MANIFEST.json`` with the source root, the captured Delta versions, and per file its SHA-256 and
size. The archive is written as ``<name>.partial`` (mode 0600: it holds key hashes and salts) and
renamed when complete.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

from raymlops.errors import ConfigError

__all__ = ["FORMAT", "MANIFEST_NAME", "BackupResult", "backup_state", "file_sha256"]

logger = logging.getLogger(__name__)

FORMAT = "raymlops-state/1"
MANIFEST_NAME = "MANIFEST.json"
MEMBER_ROOT = "state"
SQLITE_MAGIC = b"SQLite format 3\x00"
_CHUNK = 1 << 20
_SPOOL_BYTES = 64 << 20  # files up to this size are snapshotted in memory, larger ones in a temp file
# SQLite's companion files (the online backup reads through them) and lock files (process-local).
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".lock")
_COMMIT = re.compile(r"^(\d{20})\.json$")
_LOG_FILE = re.compile(r"^(\d{20})\.(json|crc|checkpoint(\.\d+\.\d+)?\.parquet)$")


@dataclass(frozen=True)
class BackupResult:
    archive: Path
    sha256: str  # of the whole archive: record it, and pass it to `state restore --sha256`
    files: int
    bytes: int  # file contents archived, before compression
    delta_versions: dict[str, int]  # table folder (relative) -> the version captured
    sqlite: tuple[str, ...]  # databases copied with the online backup API
    skipped: tuple[str, ...] = ()  # files that vanished while being read, links, temp files
    outside: dict[str, str] = field(default_factory=dict)  # configured locations outside the root
    seconds: float = 0.0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _plan(root: Path) -> tuple[list[Path], list[Path], list[Path], list[str]]:
    """(SQLite files, Delta table folders, other files, skipped) under ``root``."""
    sqlite_files: list[Path] = []
    tables: list[Path] = []
    files: list[Path] = []
    skipped: list[str] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        if "_delta_log" in dirs:
            tables.append(here)
            dirs[:] = []  # the table's own files come from its log
            continue
        dirs.sort()
        for name in sorted(names):
            path = here / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() or not path.is_file():
                skipped.append(f"{rel} (not a regular file)")
            elif name.endswith(_SKIP_SUFFIXES):
                continue  # companions of a database copied through SQLite, or lock files
            elif name.startswith(".") and name.endswith(".tmp"):
                skipped.append(f"{rel} (a write in progress)")
            elif _is_sqlite(path):
                sqlite_files.append(path)
            else:
                files.append(path)
    return sqlite_files, tables, files, skipped


class _Spool:
    """A file's bytes as they were when read once: size and digest fixed, safe to archive."""

    def __init__(self, source: IO[bytes], limit: int | None = None) -> None:
        # Closed by whoever archives it (backup_state), once tar has read it.
        self.handle: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
        digest, size = hashlib.sha256(), 0
        while limit is None or size < limit:
            chunk = source.read(_CHUNK if limit is None else min(_CHUNK, limit - size))
            if not chunk:
                break
            digest.update(chunk)
            self.handle.write(chunk)
            size += len(chunk)
        self.size, self.sha256 = size, digest.hexdigest()
        self.handle.seek(0)


def _complete_lines(path: Path) -> int:
    """Bytes of ``path`` up to and including its last newline: an appender's half line stays out."""
    with path.open("rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        position = end
        while position > 0:
            step = min(65536, position)
            position -= step
            handle.seek(position)
            cut = handle.read(step).rfind(b"\n")
            if cut >= 0:
                return position + cut + 1
    return 0


def _delta_members(table: Path) -> tuple[int, list[Path]]:
    """The latest committed version of the Delta table at ``table`` and the files that make it up."""
    log = table / "_delta_log"
    names = sorted(os.listdir(log))
    versions = [int(m.group(1)) for n in names if (m := _COMMIT.match(n))]
    if not versions:
        raise ConfigError(f"delta table {table}", "its _delta_log holds no commit; is it a Delta table?")
    version = max(versions)  # commit files appear atomically: a listed one is complete
    members: list[Path] = []
    data: set[str] = set()
    for name in names:
        match = _LOG_FILE.match(name)
        if match and int(match.group(1)) <= version:
            members.append(log / name)
            if name.endswith(".json"):
                for line in (log / name).read_text().splitlines():
                    action = json.loads(line) if line.strip() else {}
                    for kind in ("add", "cdc"):
                        if kind in action:
                            data.add(action[kind]["path"])
            elif ".checkpoint" in name:
                import pyarrow.parquet as pq

                adds = pq.read_table(log / name, columns=["add"]).column("add").to_pylist()
                data.update(a["path"] for a in adds if a)
        elif (
            name == "_last_checkpoint"
            and json.loads((log / name).read_text()).get("version", version + 1) <= version
        ):
            members.append(log / name)  # readers start from the checkpoint it names: only if captured
    for path in sorted(data):
        if urlparse(path).scheme:
            logger.warning("delta file outside the table not archived table=%s path=%s", table, path)
            continue
        local = table / unquote(path)  # the log stores paths URL-encoded (partition values)
        if local.is_file():
            members.append(local)  # absent: removed and vacuumed, so no retained version needs it
    return version, members


def _outside(state_dir: Path, locations: Mapping[str, str]) -> dict[str, str]:
    """Configured locations (key -> path or URI) that are not under the state root."""
    found = {}
    for key, value in locations.items():
        path = str(value).removeprefix("sqlite:///").removeprefix("delta:").removeprefix("file://")
        path = path.split("@", 1)[0] if str(value).startswith("delta:") else path
        if "://" in path or not Path(path).is_absolute():
            found[key] = str(value)
            continue
        resolved = Path(path).resolve()
        if resolved != state_dir and state_dir not in resolved.parents:
            found[key] = str(value)
    return found


def _add(tar: tarfile.TarFile, rel: str, spool: _Spool, mode: int, mtime: float) -> None:
    info = tarfile.TarInfo(f"{MEMBER_ROOT}/{rel}")
    info.size, info.mode, info.mtime = spool.size, mode & 0o777, int(mtime)
    tar.addfile(info, spool.handle)


def _sqlite_snapshot(path: Path, scratch: Path) -> _Spool:
    copy = scratch / "snapshot.sqlite"
    copy.unlink(missing_ok=True)
    source = sqlite3.connect(path, timeout=60)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)  # one consistent snapshot, even while other connections write
    finally:
        target.close()
        source.close()
    with copy.open("rb") as handle:
        return _Spool(handle)


def _items(
    root: Path, scratch: Path, skipped: list[str]
) -> Iterator[tuple[str, str, Path, _Spool | None, dict[str, Any]]]:
    """(kind, relative path, source, snapshot or None if it vanished, extra manifest fields), in the
    order that keeps the archive consistent: databases, then Delta tables, then the other files."""
    sqlite_files, tables, files, found_skipped = _plan(root)
    skipped.extend(found_skipped)
    for path in sqlite_files:
        yield "sqlite", path.relative_to(root).as_posix(), path, _sqlite_snapshot(path, scratch), {}
    for table in tables:
        version, members = _delta_members(table)
        rel_table = table.relative_to(root).as_posix()
        for path in members:
            with path.open("rb") as handle:  # committed files are immutable: read as they are
                spool = _Spool(handle)
            yield (
                "delta",
                path.relative_to(root).as_posix(),
                path,
                spool,
                {"table": rel_table, "version": version},
            )
    for path in files:
        snapshot: _Spool | None = None  # None: removed between the listing and the read (a temp file)
        with contextlib.suppress(FileNotFoundError):
            limit = _complete_lines(path) if path.suffix == ".jsonl" else None
            with path.open("rb") as handle:
                snapshot = _Spool(handle, limit)
        yield "file", path.relative_to(root).as_posix(), path, snapshot, {}


def backup_state(
    state_dir: str | os.PathLike[str],
    archive: str | os.PathLike[str],
    *,
    locations: Mapping[str, str] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> BackupResult:
    """Archive the state root ``state_dir`` into ``archive`` (see the module docstring).

    Args:
        state_dir: The state root (the job's ``state_dir``).
        archive: The archive to write; ``.tar.gz``/``.tgz`` compresses. Must not exist, nor lie
            inside ``state_dir``.
        locations: Configured places (config key -> path or URI) the state lives in; those outside
            ``state_dir`` (an S3 artifact root, an MLflow server) are not in the archive: they are
            listed in its manifest and in the result, to be backed up by their own means.
        progress: Called with (files archived, None) after each file (the total is not known ahead).

    Raises:
        ConfigError: ``state_dir`` is not a folder, or ``archive`` exists or lies inside it.
    """
    started = time.monotonic()
    root = Path(state_dir).expanduser().resolve()
    target = Path(archive).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(
            "state_dir", f"{root} is not a folder; point state_dir (or RAYMLOPS_HOME) at the state root."
        )
    if target.exists():
        raise ConfigError(
            "archive", f"{target} exists; choose a new file name (backups are never overwritten)."
        )
    if root in target.parents:
        raise ConfigError("archive", f"{target} lies inside the state root {root}; write it elsewhere.")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    compress = target.name.endswith((".gz", ".tgz"))
    manifest_files: dict[str, dict[str, Any]] = {}
    delta_versions: dict[str, int] = {}
    sqlite: list[str] = []
    skipped: list[str] = []
    total = 0
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # gzip level 1: parquet and ONNX hardly compress, and level 9 would triple the time.
        options: dict[str, Any] = {"mode": "w:gz", "compresslevel": 1} if compress else {"mode": "w"}
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, **options) as tar,
            tempfile.TemporaryDirectory(prefix="raymlops-backup-") as scratch,
        ):
            for kind, rel, source, spool, extra in _items(root, Path(scratch), skipped):
                if spool is None:
                    skipped.append(f"{rel} (removed while the backup ran)")
                    continue
                stat = source.stat() if source.exists() else None
                _add(tar, rel, spool, stat.st_mode if stat else 0o600, stat.st_mtime if stat else time.time())
                spool.handle.close()
                manifest_files[rel] = {"sha256": spool.sha256, "bytes": spool.size, "kind": kind}
                total += spool.size
                if kind == "sqlite":
                    sqlite.append(rel)
                if kind == "delta":
                    delta_versions[extra["table"]] = extra["version"]
                if progress is not None:
                    progress(len(manifest_files), None)
            outside = _outside(root, locations or {})
            manifest = {
                "format": FORMAT,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "state_dir": str(root),
                "delta_versions": delta_versions,
                "sqlite": sqlite,
                "outside_state_dir": outside,
                "skipped": skipped,
                "files": manifest_files,
            }
            body = json.dumps(manifest, indent=1, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST_NAME)
            info.size, info.mode, info.mtime = len(body), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(body))
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    digest = file_sha256(target)
    result = BackupResult(
        archive=target,
        sha256=digest,
        files=len(manifest_files),
        bytes=total,
        delta_versions=delta_versions,
        sqlite=tuple(sqlite),
        skipped=tuple(skipped),
        outside=outside,
        seconds=time.monotonic() - started,
    )
    logger.info("state backup archive=%s files=%d bytes=%d sha256=%s", target, result.files, total, digest)
    return result
