"""A write-ahead file for a :class:`~raymlops.monitoring.parquet_log.ParquetLog`: nothing lost to a kill.

:class:`DurableParquetLog` appends every batch of rows to a write-ahead segment *on the caller's thread,
before it returns* (the router answers its client only after that), then buffers them like a plain
``ParquetLog``. Each flush seals the segment it wrote from; once the parquet files holding those rows
are written and fsynced, the sealed segments are deleted. Layout, next to the log it protects::

    <wal_dir>/<name_prefix>.000000.wal   header frame (JSON), schema frame, one frame per record batch
    <wal_dir>/<name_prefix>.000001.wal   ...

A frame is ``<u32 length><u32 crc32><payload>`` (little-endian), written with one ``write()``; the
payload of a row frame is an Arrow IPC record batch (encrypted with the log's keyring when it has one).

**Durability bound.** A row whose ``append`` returned is in the kernel's page cache: a killed process
(``SIGKILL``, OOM killer, a crashed replica) loses none of them. Against power loss or a kernel crash the
segment is fsynced: with ``fsync_interval_ms=0`` before every ``append`` returns (nothing answered is
lost), otherwise at most the rows appended in the last ``fsync_interval_ms`` (and, with ``fsync_rows``,
no more than that many rows) may be lost. Parquet files are fsynced before their segment is deleted.

**Recovery.** A live writer holds an exclusive ``flock`` on each of its segments until it deletes it;
:func:`recover_wal` (run by every new writer over the same ``wal_dir``) takes the segments no process
holds, writes their rows into the log under deterministic file names (a recovery interrupted halfway
and run again overwrites the same files: no duplicates) and deletes them. A torn last frame (power loss
mid-write) fails its CRC and is skipped with a warning. A flush that failed and was partly written
keeps its segments: if the process then dies, the recovered log may hold those rows twice (at least
once, never lost). Local files only: ``flock`` is not reliable on network filesystems.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pyarrow as pa

from raymlops.errors import ConfigError
from raymlops.monitoring.parquet_log import Deferred, ParquetLog

__all__ = ["DurableParquetLog", "WriteAheadLog", "check_fsync", "read_segment", "recover_wal"]

logger = logging.getLogger(__name__)

SUFFIX = ".wal"
_FRAME = struct.Struct("<II")
_FORMAT = "raymlops-wal/1"


def check_fsync(fsync_interval_ms: Any, fsync_rows: Any, key: str) -> None:
    """ConfigError unless ``fsync_interval_ms`` is a number >= 0 and ``fsync_rows`` an integer >= 0."""
    if isinstance(fsync_interval_ms, bool) or not (
        isinstance(fsync_interval_ms, int | float) and 0 <= fsync_interval_ms < float("inf")
    ):
        raise ConfigError(
            f"{key}.fsync_interval_ms",
            f"must be a number >= 0 (0: fsync before every answer), got {fsync_interval_ms!r}.",
        )
    if isinstance(fsync_rows, bool) or not isinstance(fsync_rows, int) or fsync_rows < 0:
        raise ConfigError(
            f"{key}.fsync_rows", f"must be an integer >= 0 (0: by time only), got {fsync_rows!r}."
        )


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriteAheadLog:
    """The segments of one writer (see the module docstring). Thread-safe.

    Args:
        directory: Local directory of the segments (created).
        prefix: Unique per writer: segment names are ``<prefix>.<seq>.wal``.
        schema: Schema of every appended table.
        meta: What recovery needs to write the rows back (``partition_cols``, ``time_column``), as JSON.
        fsync_interval_ms: 0: fsync in every ``append``; else a background thread fsyncs this often.
        fsync_rows: Also fsync in ``append`` once this many rows are unsynced (0: by time only).
        keyring: Encrypt each row frame (:mod:`raymlops.security.crypto`); None: plaintext.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        prefix: str,
        schema: pa.Schema,
        *,
        meta: Mapping[str, Any],
        fsync_interval_ms: float = 100.0,
        fsync_rows: int = 0,
        keyring: Any = None,
    ) -> None:
        check_fsync(fsync_interval_ms, fsync_rows, "prediction_log")
        self.directory = os.path.abspath(os.fspath(directory))
        os.makedirs(self.directory, exist_ok=True)
        self.prefix = prefix
        self.fsync_interval_ms = float(fsync_interval_ms)
        self.fsync_rows = fsync_rows
        self._keyring = keyring
        header = {"format": _FORMAT, "encrypted": keyring is not None, **meta}
        self._header = _frame(json.dumps(header).encode()) + _frame(schema.serialize().to_pybytes())
        self._lock = threading.Lock()
        self._seq = 0
        self._fd: int | None = None  # the open segment (flocked), None until the next append
        self._sealed: deque[tuple[int, int, str]] = deque()  # (seq, fd, path): locked until released
        self._unsynced = 0  # rows appended since the last fsync (open or sealed segments)
        self._dir_dirty = False
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.fsync_interval_ms > 0:
            self._thread = threading.Thread(target=self._run, name=f"wal-fsync-{prefix}", daemon=True)
            self._thread.start()

    def append_table(self, table: pa.Table) -> None:
        """Write ``table`` (a frame per record batch) to the open segment."""
        self.append([b"T" + batch.serialize().to_pybytes() for batch in table.to_batches()], table.num_rows)

    def append(self, payloads: Sequence[bytes], rows: int) -> None:
        """Write frames (one ``write()``: ``b"T"`` + IPC batch, or ``b"R"`` + a codec's record) to the open
        segment; fsync now if the policy says so."""
        body = b"".join(_frame(self._seal_payload(p)) for p in payloads)
        with self._lock:
            if self._closed:
                raise ValueError("write-ahead log is closed")
            if self._fd is None:
                self._fd = self._open()
            view = memoryview(body)
            while view:  # a regular file takes it whole; the loop only guards a short write
                view = view[os.write(self._fd, view) :]
            self._unsynced += rows
            due = self.fsync_interval_ms == 0 or (self.fsync_rows and self._unsynced >= self.fsync_rows)
            if due:
                self._sync_locked()

    def seal(self) -> int:
        """End the open segment (the next append opens another); returns the last sequence number used.
        Call with the rows buffered so far taken for writing; :meth:`release` it once they are written."""
        with self._lock:
            if self._fd is not None:
                self._sealed.append((self._seq - 1, self._fd, self._path(self._seq - 1)))
                self._fd = None
            return self._seq - 1

    def release(self, upto: int) -> None:
        """Delete the sealed segments up to ``upto`` (their rows are durable elsewhere)."""
        with self._lock:
            while self._sealed and self._sealed[0][0] <= upto:
                _, fd, path = self._sealed.popleft()
                os.unlink(path)  # before close: a recoverer that locks it next sees st_nlink == 0
                os.close(fd)

    def sync(self) -> None:
        """fsync what is unsynced now (the open and the sealed segments, and new names in the directory)."""
        with self._lock:
            self._sync_locked()

    def close(self, *, delete: bool) -> None:
        """Stop the fsync thread, fsync, and close every segment; ``delete``: the rows are written elsewhere,
        remove the segments; else leave them (unlocked) for :func:`recover_wal`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._sync_locked()
            if self._fd is not None:
                self._sealed.append((self._seq - 1, self._fd, self._path(self._seq - 1)))
                self._fd = None
            while self._sealed:
                _, fd, path = self._sealed.popleft()
                if delete:
                    os.unlink(path)
                os.close(fd)

    def segments(self) -> list[str]:
        """Paths of this writer's segments still on disk (open or sealed)."""
        with self._lock:
            paths = [p for _, _, p in self._sealed]
            return paths + ([self._path(self._seq - 1)] if self._fd is not None else [])

    # -- internals -----------------------------------------------------------------------------------

    def _seal_payload(self, data: bytes) -> bytes:
        if self._keyring is None:
            return data
        from raymlops.security.crypto import encrypt_bytes

        return encrypt_bytes(data, self._keyring)

    def _path(self, seq: int) -> str:
        return f"{self.directory}/{self.prefix}.{seq:06d}{SUFFIX}"

    def _open(self) -> int:
        """A new segment, locked *before* it gets its final name: a recoverer never sees it unlocked."""
        import fcntl

        final = self._path(self._seq)
        draft = f"{self.directory}/.{self.prefix}.{self._seq:06d}.tmp"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, self._header)
        os.rename(draft, final)
        self._seq += 1
        self._dir_dirty = True
        return fd

    def _sync_locked(self) -> None:
        if self._unsynced:
            for _, fd, _ in self._sealed:
                os.fdatasync(fd)
            if self._fd is not None:
                os.fdatasync(self._fd)
            self._unsynced = 0
        if self._dir_dirty:  # the segment's name itself, for power loss
            _fsync_path(self.directory, directory=True)
            self._dir_dirty = False

    def _run(self) -> None:
        while not self._stop.wait(self.fsync_interval_ms / 1000):
            try:
                self.sync()
            except Exception:  # never let the thread die; the next round tries again
                logger.exception("wal fsync failed dir=%s prefix=%s", self.directory, self.prefix)


class DurableParquetLog(ParquetLog):
    """A :class:`ParquetLog` whose rows are in a write-ahead segment before :meth:`append` returns.

    Rows are checked against the schema (and a ``Deferred`` built) on the caller's thread, not the
    writer's: the segment holds exactly the rows the parquet files will. Args as ``ParquetLog``, plus
    ``wal_dir`` (local), ``fsync_interval_ms`` and ``fsync_rows`` (:class:`WriteAheadLog`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        wal_dir: str | os.PathLike[str],
        fsync_interval_ms: float = 100.0,
        fsync_rows: int = 0,
        wal_codec: type | None = None,
        wal_context: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self._codec = wal_codec
        codec = f"{wal_codec.__module__}:{wal_codec.__qualname__}" if wal_codec is not None else None
        self._wal = WriteAheadLog(
            wal_dir,
            self.name_prefix,
            self.schema,
            meta={
                "partition_cols": list(self.partition_cols),
                "time_column": self.time_column,
                "codec": codec,
                "context": dict(wal_context or {}),
            },
            fsync_interval_ms=fsync_interval_ms,
            fsync_rows=fsync_rows,
            keyring=self._keyring,
        )
        self._paths: list[str] | None = []  # ParquetLog._write records the files it wrote here
        self._wal_errors = 0

    def append(self, data: pa.Table | pa.RecordBatch | Deferred | Iterable[Mapping[str, Any]]) -> None:
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        chunk: Any = data if isinstance(data, pa.Table) or hasattr(data, "to_table") else list(data)
        rows = len(chunk) if isinstance(chunk, list) else chunk.num_rows
        if rows == 0:
            return
        try:
            if self._codec is not None and isinstance(chunk, self._codec):
                # A compact record; the table is built later on the writer thread, as without a WAL.
                item, payloads = chunk, [b"R" + cast(Any, chunk).wal_record()]
            else:
                item = self._conform(chunk)
                payloads = [b"T" + b.serialize().to_pybytes() for b in item.to_batches()]
        except Exception as exc:  # as the writer thread would: such rows can never be written
            with self._cond:
                self._rejected_rows += rows
            logger.error("parquet log rejected rows root=%s rows=%d error=%s", self.root, rows, exc)
            return
        with self._cond:
            closed = self._closed
            if not closed:
                try:
                    self._wal.append(payloads, rows)  # under _cond: a flush's seal() never splits them
                except Exception as exc:  # the rows still go to parquet; only their crash safety is lost
                    self._wal_errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    logger.warning("wal append failed root=%s rows=%d error=%s", self.root, rows, exc)
                self._pending.append(item)
                self._pending_rows += rows
                if self._pending_rows > self.max_buffer_rows:
                    self._drop_oldest()
                if self._pending_rows >= self.flush_rows:
                    self._cond.notify()
        if closed:  # a straggler: ParquetLog writes it at once
            super().append(item)

    def flush(self) -> int:
        with self._write_lock:
            with self._cond:
                chunks, self._pending = self._pending, deque()
                self._pending_rows = 0
                sealed = self._wal.seal()
            self._wal.sync()
            if not chunks:
                self._wal.release(sealed)
                return 0
            table = self._to_table(chunks)
            self._paths = []
            try:
                written = self._write(table)
            except Exception as exc:  # as ParquetLog.flush: keep the rows, and the segments
                with self._cond:
                    self._failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("parquet log write failed root=%s rows=%d", self.root, table.num_rows)
                self._requeue([table])
                return 0
            if written == table.num_rows:
                _fsync_written(self._fs, self._paths)
                self._wal.release(sealed)
            return written

    def close(self) -> None:
        super().close()
        with self._cond:
            pending = self._pending_rows
        self._wal.close(delete=pending == 0)

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "wal_errors": self._wal_errors, "wal_segments": len(self._wal.segments())}


def _fsync_written(filesystem: Any, paths: Sequence[str] | None) -> None:
    """fsync parquet files just written (and their directories) before the segments holding their rows go."""
    from pyarrow import fs

    if not paths or not isinstance(filesystem, fs.LocalFileSystem):
        return  # an object store's PUT is durable when it returns
    for path in paths:
        _fsync_path(path)
    for directory in sorted({os.path.dirname(p) for p in paths}):
        _fsync_path(directory, directory=True)


def read_segment(path: str | os.PathLike[str], data: bytes | None = None) -> tuple[dict[str, Any], list[Any]]:
    """(header with the ``schema``, chunks: tables and codec records rebuilt) of a segment, in order; a
    torn or corrupt tail is skipped with a warning."""
    path = os.fspath(path)
    if data is None:
        data = Path(path).read_bytes()
    frames: list[bytes] = []
    offset = 0
    while offset + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, offset)
        payload = data[offset + _FRAME.size : offset + _FRAME.size + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            break
        frames.append(payload)
        offset += _FRAME.size + length
    if offset != len(data):
        logger.warning("wal segment has a torn tail path=%s skipped_bytes=%d", path, len(data) - offset)
    if len(frames) < 2:
        raise ValueError(f"{path} is not a write-ahead segment (no header)")
    header = json.loads(frames[0])
    if header.get("format") != _FORMAT:
        raise ValueError(f"{path} has format {header.get('format')!r}, expected {_FORMAT!r}")
    schema = pa.ipc.read_schema(pa.py_buffer(frames[1]))
    codec = _codec(header.get("codec"))
    chunks: list[Any] = []
    for payload in frames[2:]:
        if header.get("encrypted"):
            from raymlops.security.crypto import decrypt_bytes, keyring_for

            payload = decrypt_bytes(payload, keyring_for(payload, path), path)
        if payload[:1] == b"R" and codec is not None:
            chunks.append(codec.from_wal_record(payload[1:], header.get("context") or {}))
        elif payload[:1] == b"T":
            chunks.append(
                pa.Table.from_batches([pa.ipc.read_record_batch(pa.py_buffer(payload[1:]), schema)])
            )
        else:
            raise ValueError(f"{path}: a frame of unknown kind {payload[:1]!r}")
    return {**header, "schema": schema}, chunks


def _codec(path: str | None) -> Any:
    """The class a segment's records were written by (``module:Class``; raymlops' own only)."""
    if not path:
        return None
    import importlib

    module, _, name = path.partition(":")
    if not module.startswith("raymlops."):
        raise ValueError(f"write-ahead codec {path!r} is not a raymlops class")
    return getattr(importlib.import_module(module), name)


def recover_wal(
    wal_dir: str | os.PathLike[str], log_root: str | os.PathLike[str], keyring: Any = None
) -> int:
    """Write the rows of every segment under ``wal_dir`` that no live writer holds into the log at
    ``log_root``, then delete the segment; returns the rows recovered. Safe to run from many processes
    at once (a segment is locked while it is recovered) and again after a crash (same file names)."""
    import fcntl

    directory = os.fspath(wal_dir)
    if not os.path.isdir(directory):
        return 0
    recovered = 0
    for name in sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX) and not n.startswith(".")):
        path = f"{directory}/{name}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # released by its writer, or recovered by another process, meanwhile
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            if os.fstat(fd).st_nlink == 0:
                continue  # deleted after we opened it: its rows are written
            with os.fdopen(os.dup(fd), "rb") as handle:
                header, chunks = read_segment(path, handle.read())
            rows = sum(c.num_rows for c in chunks)
            if rows:
                written = _write_recovered(log_root, name.removesuffix(SUFFIX), header, chunks, keyring)
                if written < rows:
                    logger.error("wal recovery incomplete, segment kept path=%s rows=%d", path, rows)
                    continue
            os.unlink(path)
            recovered += rows
            logger.warning("wal recovered rows of a dead writer path=%s rows=%d", path, rows)
        except Exception:
            logger.exception("wal recovery failed, segment kept path=%s", path)
        finally:
            os.close(fd)
    return recovered


def _write_recovered(
    log_root: str | os.PathLike[str], stem: str, header: Mapping[str, Any], chunks: list[Any], keyring: Any
) -> int:
    """A recovered segment's rows as parquet files named after the segment (``part-<stem>-r-<seq>``)."""
    rows = sum(c.num_rows for c in chunks)
    log = ParquetLog(
        log_root,
        schema=header["schema"],
        partition_cols=tuple(header["partition_cols"]),
        time_column=str(header["time_column"]),
        flush_rows=rows,
        flush_interval_s=3600.0,
        max_buffer_rows=rows,
        name_prefix=f"{stem.replace('.', '-')}-r",
        keyring=keyring,
    )
    log._paths = []
    try:
        for chunk in chunks:
            log.append(chunk)
        written = log.flush()
    finally:
        log.close()
    if written == rows:
        _fsync_written(log._fs, log._paths)
    return written
