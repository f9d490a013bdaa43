"""An append-only log of records as hive-partitioned parquet files, written off the caller's path.

``ParquetLog.append`` only pushes onto an in-memory buffer (a lock and a deque: microseconds, never
I/O); one background thread per log turns the buffer into parquet files when ``flush_rows`` rows are
waiting or ``flush_interval_s`` has passed. Layout, for ``partition_cols=("model", "date")``::

    <root>/model=flights/date=2026-11-26/part-<name_prefix>-000000.parquet
                                        /part-<name_prefix>-000001.parquet

``date`` is the UTC date of ``time_column`` unless the schema has a ``date`` column of its own;
partition columns of the schema are stored in the directory names only (hive style), and
:func:`read_log` puts them back. Each file is written under a hidden temporary name (``.part-...tmp``,
which pyarrow's dataset discovery skips) and then renamed, so a reader never sees half a file.

A failed write is logged and its rows stay buffered for the next try; the buffer is bounded by
``max_buffer_rows``, beyond which the oldest rows are dropped, counted (``stats()["dropped_rows"]``)
and logged. ``close()`` (idempotent; also run at interpreter exit) writes whatever is buffered.
``root`` is a local path or any URI pyarrow's ``FileSystem.from_uri`` understands (``s3://...``).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import re
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias, cast, runtime_checkable
from urllib.parse import quote

import pyarrow as pa

from raymlops.errors import ConfigError, RayMLOpsError

__all__ = ["DATE_PARTITION", "Deferred", "ParquetLog", "read_log", "resolve_root"]

logger = logging.getLogger(__name__)

DATE_PARTITION = "date"  # derived from time_column (UTC) unless the schema has such a column
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DROP_WARN_EVERY_S = 60.0

_OPEN: weakref.WeakSet[ParquetLog] = weakref.WeakSet()


def _close_all() -> None:
    for log in list(_OPEN):
        log.close()


atexit.register(_close_all)


def resolve_root(root: str | os.PathLike[str]) -> tuple[Any, str]:
    """``(pyarrow filesystem, path inside it)`` for a local path or a filesystem URI."""
    from pyarrow import fs

    text = os.fspath(root)
    if "://" in text:
        filesystem, path = fs.FileSystem.from_uri(text)
        return filesystem, path.rstrip("/")
    return fs.LocalFileSystem(), os.path.abspath(text)


@runtime_checkable
class Deferred(Protocol):
    """Rows whose table is built on the writer thread, not by the caller (``to_table`` once, later).

    A class may also define ``combine(chunks) -> pa.Table`` (a static method) to build one table from
    a run of its instances at once; a failed ``combine`` falls back to ``to_table`` one by one.
    """

    @property
    def num_rows(self) -> int: ...

    def to_table(self) -> pa.Table: ...


_Chunk: TypeAlias = pa.Table | Deferred | list[Mapping[str, Any]]


def _chunk_rows(chunk: _Chunk) -> int:
    return len(chunk) if isinstance(chunk, list) else chunk.num_rows


class ParquetLog:
    """Buffered, append-only parquet log under ``root`` (see the module docstring for the layout).

    Args:
        root: Local directory or filesystem URI the log writes under (created as needed).
        schema: Schema of every record; appended tables are cast to it, missing nullable columns
            filled with nulls.
        partition_cols: Hive partition columns, outermost first: schema columns, or ``"date"``.
        flush_rows: Buffered rows that trigger a write.
        flush_interval_s: Longest time rows wait in the buffer (while writes succeed).
        name_prefix: Distinguishes this writer's files from every other writer's under the same
            root (several replicas, restarts): ``part-<name_prefix>-<seq>.parquet``; it must be
            unique per ``ParquetLog`` (a reused one overwrites files). Default: the start time, pid
            and a random suffix.
        max_buffer_rows: Beyond this many buffered rows (writes failing) the oldest are dropped.
        time_column: The timestamp column ``"date"`` is derived from.
        keyring: Encrypt each file (``part-....parquet.enc``, :mod:`raymlops.security.crypto`); default:
            ``crypto.default_keyring()``: the process's keyring, else in a Ray cluster the one its
            deploy published (serving replicas); None when encryption is off.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        schema: pa.Schema,
        partition_cols: Sequence[str] = (DATE_PARTITION,),
        flush_rows: int = 1000,
        flush_interval_s: float = 2.0,
        name_prefix: str | None = None,
        max_buffer_rows: int = 100_000,
        time_column: str = "ts",
        keyring: Any = None,  # raymlops.security.crypto.Keyring
    ) -> None:
        for key, value in (("flush_rows", flush_rows), ("max_buffer_rows", max_buffer_rows)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"parquet_log.{key}", f"must be an integer >= 1, got {value!r}.")
        if max_buffer_rows < flush_rows:
            raise ConfigError(
                "parquet_log.max_buffer_rows", f"must be >= flush_rows ({flush_rows}), got {max_buffer_rows}."
            )
        if isinstance(flush_interval_s, bool) or not (
            isinstance(flush_interval_s, int | float) and flush_interval_s > 0
        ):
            raise ConfigError(
                "parquet_log.flush_interval_s", f"must be a number > 0, got {flush_interval_s!r}."
            )
        prefix = name_prefix or f"{int(time.time())}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if not _PREFIX.match(prefix):
            raise ConfigError(
                "parquet_log.name_prefix",
                f"{prefix!r} must start with a letter or digit and hold only letters, digits, '.', '_', '-'.",
            )
        self._derive_date = DATE_PARTITION in partition_cols and DATE_PARTITION not in schema.names
        for column in partition_cols:
            if column not in schema.names and column != DATE_PARTITION:
                raise ConfigError(
                    "parquet_log.partition_cols", f"{column!r} is not a schema column.", schema.names
                )
        if self._derive_date and not (
            time_column in schema.names and pa.types.is_timestamp(schema.field(time_column).type)
        ):
            raise ConfigError(
                "parquet_log.time_column",
                f"the 'date' partition comes from a timestamp column; {time_column!r} is not one.",
            )
        self.root = os.fspath(root)
        self.schema = schema
        self.partition_cols = tuple(partition_cols)
        self.flush_rows = flush_rows
        self.flush_interval_s = float(flush_interval_s)
        self.name_prefix = prefix
        self.max_buffer_rows = max_buffer_rows
        self.time_column = time_column
        self._fs, self._base = resolve_root(root)
        if keyring is None:
            from raymlops.security.crypto import default_keyring

            # The job's keyring, or in a serving replica the one the deploy published to the cluster.
            keyring = default_keyring()
        self._keyring = keyring
        self._stored = pa.schema([f for f in schema if f.name not in self.partition_cols])

        self._cond = threading.Condition()  # guards the buffer and the counters below
        self._pending: deque[_Chunk] = deque()
        self._pending_rows = 0
        self._stop = False
        self._closed = False
        self._write_lock = threading.Lock()  # one write at a time; file names come from _seq
        self._seq = 0
        self._written_rows = 0
        self._written_files = 0
        self._dropped_rows = 0
        self._rejected_rows = 0
        self._failures = 0
        self._last_drop_warning = 0.0
        self.last_error: str | None = None
        self._paths: list[str] | None = None  # a list: _write records each file it writes (wal.py)
        self._thread = threading.Thread(target=self._run, name=f"parquet-log-{prefix}", daemon=True)
        self._thread.start()
        _OPEN.add(self)

    # -- the caller's side ---------------------------------------------------------------------------

    def append(self, data: pa.Table | pa.RecordBatch | Deferred | Iterable[Mapping[str, Any]]) -> None:
        """Buffer records (mappings), a table, or a :class:`Deferred`; the background thread writes them.

        The cheapest for the caller is a ``Deferred``: even building a small table costs tens of
        microseconds, which the writer thread can pay instead.

        After ``close()`` a straggler append is written at once (I/O on the caller's thread), so
        that nothing handed to a closing log is lost.
        """
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        # hasattr, not isinstance(Deferred): a protocol check costs microseconds on the caller's path.
        chunk = cast(_Chunk, data) if isinstance(data, pa.Table) or hasattr(data, "to_table") else list(data)
        rows = _chunk_rows(chunk)
        if rows == 0:
            return
        with self._cond:
            self._pending.append(chunk)
            self._pending_rows += rows
            if self._pending_rows > self.max_buffer_rows:
                self._drop_oldest()
            if self._pending_rows >= self.flush_rows:
                self._cond.notify()
            closed = self._closed
        if closed:
            self.flush()

    def flush(self) -> int:
        """Write everything buffered now; returns the rows written (0 when a write failed: logged)."""
        with self._write_lock:
            with self._cond:
                chunks, self._pending = self._pending, deque()
                self._pending_rows = 0
            if not chunks:
                return 0
            table = self._to_table(chunks)
            try:
                return self._write(table)
            except Exception as exc:  # not an I/O error (_write keeps those): keep the rows anyway
                with self._cond:
                    self._failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("parquet log write failed root=%s rows=%d", self.root, table.num_rows)
                self._requeue([table])
                return 0

    def close(self) -> None:
        """Stop the background thread and write what is buffered; later calls do nothing."""
        with self._cond:
            if self._closed:
                return
            self._closed = self._stop = True
            self._cond.notify()
        self._thread.join(timeout=30)
        self.flush()
        _OPEN.discard(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, Any]:
        """Counters since this log opened: rows pending, written, dropped (buffer full) and rejected
        (not convertible to the schema), files written, failed writes."""
        with self._cond:
            return {
                "pending_rows": self._pending_rows,
                "written_rows": self._written_rows,
                "written_files": self._written_files,
                "dropped_rows": self._dropped_rows,
                "rejected_rows": self._rejected_rows,
                "failed_writes": self._failures,
                "last_error": self.last_error,
            }

    # -- the background thread -------------------------------------------------------------------------

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_interval_s
        retry_at = 0.0  # after a failed write: no retry before this, however full the buffer
        while True:
            with self._cond:
                while not self._stop:
                    now = time.monotonic()
                    full = self._pending_rows >= self.flush_rows and now >= retry_at
                    if full or now >= next_flush:
                        break
                    self._cond.wait(timeout=next_flush - now)
                if self._stop:
                    return
                has_rows = self._pending_rows > 0
                failures = self._failures
            if has_rows:
                try:
                    self.flush()
                except Exception:  # never let the thread die: later appends would pile up unseen
                    logger.exception("parquet log flush failed root=%s", self.root)
            next_flush = time.monotonic() + self.flush_interval_s
            retry_at = next_flush if self._failures != failures else 0.0

    def _drop_oldest(self) -> None:
        """Called under ``_cond`` when the buffer holds more than ``max_buffer_rows``."""
        excess = self._pending_rows - self.max_buffer_rows
        dropped = 0
        while excess > 0 and self._pending:
            chunk = self._pending[0]
            rows = _chunk_rows(chunk)
            if rows <= excess:
                self._pending.popleft()
                excess -= rows
                dropped += rows
            else:
                self._pending[0] = (
                    chunk[excess:] if isinstance(chunk, list) else self._as_table(chunk).slice(excess)
                )
                dropped += excess
                excess = 0
        self._pending_rows -= dropped
        self._dropped_rows += dropped
        now = time.monotonic()
        if now - self._last_drop_warning >= _DROP_WARN_EVERY_S:
            self._last_drop_warning = now
            logger.warning(
                "parquet log buffer full, dropping the oldest rows root=%s max_buffer_rows=%d "
                "dropped_rows_total=%d last_error=%s",
                self.root,
                self.max_buffer_rows,
                self._dropped_rows,
                self.last_error,
            )

    def _requeue(self, tables: list[pa.Table]) -> None:
        """Put rows that failed to write back in front of the buffer (still bounded)."""
        with self._cond:
            for table in reversed(tables):
                self._pending.appendleft(table)
                self._pending_rows += table.num_rows
            if self._pending_rows > self.max_buffer_rows:
                self._drop_oldest()

    @staticmethod
    def _as_table(chunk: pa.Table | Deferred) -> pa.Table:
        return chunk if isinstance(chunk, pa.Table) else chunk.to_table()

    def _conform(self, chunk: _Chunk) -> pa.Table:
        if isinstance(chunk, list):
            return pa.Table.from_pylist(chunk, schema=self.schema)
        chunk = self._as_table(chunk)
        extra = sorted(set(chunk.column_names) - set(self.schema.names))
        if extra:
            raise ValueError(f"column(s) {extra} are not in the log's schema")
        columns = []
        for field in self.schema:
            if field.name in chunk.column_names:
                column = chunk[field.name]
                columns.append(column if column.type == field.type else column.cast(field.type))
            elif field.nullable:
                columns.append(pa.chunked_array([pa.nulls(chunk.num_rows, field.type)]))
            else:
                raise ValueError(f"non-nullable column {field.name!r} is missing")
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _to_table(self, chunks: Iterable[_Chunk]) -> pa.Table:
        tables = []
        for kind, run in itertools.groupby(chunks, key=type):
            group = list(run)
            combine = getattr(kind, "combine", None)
            if combine is not None and len(group) > 1:
                try:
                    tables.append(self._conform(combine(group)))
                    continue
                except Exception:  # find the chunks at fault one by one, below
                    pass
            for chunk in group:
                try:
                    tables.append(self._conform(chunk))
                except Exception as exc:
                    # Such rows can never be written: drop them now rather than retry forever.
                    rows = _chunk_rows(chunk)
                    with self._cond:
                        self._rejected_rows += rows
                    logger.error(
                        "parquet log rejected rows that do not fit its schema root=%s rows=%d error=%s",
                        self.root,
                        rows,
                        exc,
                    )
        if not tables:
            return self.schema.empty_table()
        return pa.concat_tables(tables).combine_chunks()

    def _partitions(self, table: pa.Table) -> list[tuple[list[tuple[str, str]], pa.Table]]:
        """``[([(column, encoded value), ...], rows without the partition columns), ...]``."""
        import pyarrow.compute as pc

        if not self.partition_cols:
            return [([], table)]
        keys = []
        for column in self.partition_cols:
            if column == DATE_PARTITION and self._derive_date:
                values = pc.cast(table[self.time_column], pa.date32())
            else:
                values = table[column]
            keys.append(pc.fill_null(pc.cast(values, pa.string()), _HIVE_NULL))
        stored = table.select(self._stored.names)
        combined = keys[0] if len(keys) == 1 else pc.binary_join_element_wise(*keys, "\x00")
        encoded = pc.dictionary_encode(combined).combine_chunks()
        parts = []
        for index, key in enumerate(encoded.dictionary.to_pylist()):
            rows = stored.filter(pc.equal(encoded.indices, index))
            values = key.split("\x00")
            parts.append(
                ([(c, quote(v, safe="")) for c, v in zip(self.partition_cols, values, strict=True)], rows)
            )
        return parts

    def _write(self, table: pa.Table) -> int:
        """Write ``table`` (one file per partition); unwritten parts go back to the buffer."""
        import pyarrow.parquet as pq

        if table.num_rows == 0:
            return 0
        parts = self._partitions(table)
        written = 0
        for i, (values, rows) in enumerate(parts):
            directory = "/".join([self._base, *(f"{c}={v}" for c, v in values)])
            name = f"part-{self.name_prefix}-{self._seq:06d}.parquet"
            if self._keyring is not None:
                name += ENCRYPTED_SUFFIX
            temporary = f"{directory}/.{name}.tmp"
            try:
                self._fs.create_dir(directory, recursive=True)
                if self._keyring is None:
                    pq.write_table(rows, temporary, filesystem=self._fs)
                else:  # the whole file encrypted: the feature values never reach the disk in the clear
                    from raymlops.security.crypto import encrypt_bytes

                    buffer = pa.BufferOutputStream()
                    pq.write_table(rows, buffer)
                    with self._fs.open_output_stream(temporary) as out:
                        out.write(encrypt_bytes(buffer.getvalue().to_pybytes(), self._keyring))
                self._fs.move(temporary, f"{directory}/{name}")
                if self._paths is not None:
                    self._paths.append(f"{directory}/{name}")
            except Exception as exc:
                unwritten = [self._attach(v, r) for v, r in parts[i:]]
                with self._cond:
                    self._failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "parquet log write failed, keeping the rows for the next try root=%s path=%s rows=%d "
                    "error=%s",
                    self.root,
                    f"{directory}/{name}",
                    sum(t.num_rows for t in unwritten),
                    self.last_error,
                )
                self._requeue(unwritten)
                return written
            self._seq += 1
            written += rows.num_rows
            with self._cond:
                self._written_rows += rows.num_rows
                self._written_files += 1
        return written

    def _attach(self, values: list[tuple[str, str]], rows: pa.Table) -> pa.Table:
        """A partition's rows with their partition columns back, to requeue them for another try."""
        from urllib.parse import unquote

        out = rows
        for column, value in values:
            if column == DATE_PARTITION and self._derive_date:
                continue  # recomputed from time_column
            raw = unquote(value)
            field = self.schema.field(column)
            scalar = None if raw == _HIVE_NULL else pa.scalar(raw).cast(field.type)
            out = out.append_column(field, pa.array([scalar] * rows.num_rows, field.type))
        return out.select(self.schema.names)


ENCRYPTED_SUFFIX = ".enc"  # an encrypted part: part-<prefix>-<seq>.parquet.enc


def read_log(
    root: str | os.PathLike[str],
    partitions: Sequence[str],
    *,
    partition_filter: Any = None,
    row_filter: Any = None,
    columns: Sequence[str] | None = None,
) -> pa.Table | None:
    """Read a log written by :class:`ParquetLog` (any number of writers), or None when it is empty.

    ``partitions`` names the hive partition levels under ``root`` (read back as strings).
    Files of different schemas (e.g. versions with other feature columns) are unified: a column
    missing from a file reads as nulls. ``partition_filter`` (on partition columns) prunes
    directories before any file is opened; ``row_filter`` applies to the rows.
    """
    import pyarrow.dataset as ds

    filesystem, base = resolve_root(root)
    from pyarrow import fs

    if filesystem.get_file_info(base).type != fs.FileType.Directory:
        return None
    partitioning = ds.partitioning(pa.schema([(p, pa.string()) for p in partitions]), flavor="hive")
    dataset, encrypted = discover(filesystem, base, partitioning)
    fragments = list(dataset.get_fragments(filter=partition_filter)) if dataset is not None else []
    tables = decrypt_parts(filesystem, base, encrypted, partitioning, partition_filter)
    if not fragments and not tables:
        return None
    try:
        schema = pa.unify_schemas(
            [f.physical_schema for f in fragments] + [t.schema for t in tables] + [partitioning.schema],
            promote_options="permissive",
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise RayMLOpsError(f"The log under {root} holds files whose columns conflict: {exc}") from exc
    selected = list(columns) if columns is not None else None
    parts = []
    if fragments:
        unified = ds.FileSystemDataset(fragments, schema, ds.ParquetFileFormat(), filesystem)
        parts.append(unified.to_table(columns=selected, filter=row_filter))
    if tables:
        held = ds.dataset(
            [t.select([c for c in schema.names if c in t.column_names]) for t in tables], schema=schema
        )
        parts.append(held.to_table(columns=selected, filter=row_filter))
    return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]


def discover(filesystem: Any, base: str, partitioning: Any) -> tuple[Any, list[str]]:
    """(a parquet dataset of the plaintext files under ``base`` or None, the encrypted files' paths).

    One listing, as ``ds.dataset(base)`` would make: the plaintext path costs what it did before
    encryption existed. Files starting with ``.`` or ``_`` (in-flight temporaries) are skipped.
    """
    import pyarrow.dataset as ds
    from pyarrow import fs

    plain: list[str] = []
    encrypted: list[str] = []
    # Sorted: a listing comes in directory order, and the unified schema's column order (the
    # feature columns readers see) follows the first file that has each column.
    infos = sorted(filesystem.get_file_info(fs.FileSelector(base, recursive=True)), key=lambda i: i.path)
    for info in infos:
        name = info.base_name
        if info.type != fs.FileType.File or name.startswith((".", "_")):
            continue
        (encrypted if name.endswith(ENCRYPTED_SUFFIX) else plain).append(info.path)
    if not plain:
        return None, encrypted
    dataset = ds.dataset(
        plain, format="parquet", filesystem=filesystem, partitioning=partitioning, partition_base_dir=base
    )
    return dataset, encrypted


def decrypt_parts(
    filesystem: Any, base: str, paths: Sequence[str], partitioning: Any, partition_filter: Any = None
) -> list[pa.Table]:
    """The encrypted files among ``paths`` whose partition passes ``partition_filter``, decrypted into
    tables with their partition columns (with the process's, environment's or cluster's keyring)."""
    import posixpath

    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from raymlops.security.crypto import decrypt_bytes, keyring_for

    tables = []
    for path in paths:
        relative = posixpath.relpath(posixpath.dirname(path), base)
        values = ds.get_partition_keys(partitioning.parse(relative + "/")) if relative != "." else {}
        keys = {f.name: values.get(f.name) for f in partitioning.schema}
        if partition_filter is not None:
            probe = pa.table({k: pa.array([v], pa.string()) for k, v in keys.items()})
            if probe.filter(partition_filter).num_rows == 0:
                continue
        with filesystem.open_input_file(path) as handle:
            data = handle.read()
        table = pq.read_table(pa.BufferReader(decrypt_bytes(data, keyring_for(data, path), path)))
        for name, value in keys.items():
            if name not in table.column_names:
                table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
        tables.append(table)
    return tables
