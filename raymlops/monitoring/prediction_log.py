"""The prediction log and the feedback log: schemas, the router's writer, readers and the join.

Both are :class:`~raymlops.monitoring.parquet_log.ParquetLog` s under one root (a directory or a
filesystem URI; ``PredictionLogSettings.root`` in the router's ``user_config``)::

    <root>/predictions/model=<name>/date=<YYYY-MM-DD, UTC>/part-<writer>-<version>-<n>-<seq>.parquet
    <root>/feedback/model=<name or __HIVE_DEFAULT_PARTITION__>/date=<YYYY-MM-DD>/part-<writer>-<seq>.parquet

``<writer>`` is unique per router replica start (unix time, pid, random), ``<n>`` counts the logs
the writer opened (a version's log reopened after a reconfigure never reuses a file name).

Prediction rows (one per scored row; ``model`` lives in the directory name)::

    prediction_id  string          the request's id (the ``prediction-id`` header)
    row            int32           index of the row within the request
    ts             timestamp[us, UTC]  when the answer was made
    model          string
    version        string
    route          string          "served" (answered the client) | "shadow" (mirrored, discarded)
    probability    float64         binary: exactly the probability answered (float32 widened);
                                   multiclass: the likeliest class's probability; regression: null
    label          int8            binary: probability >= the version's threshold; else null
    latency_ms     float64         the request's handler time (served) or the shadow model's time
    probabilities  list<float64>   multiclass only: every class's probability, in the task's class
                                   order (what log loss and the class shares need)
    class_index    int32           multiclass only: the answered class, its index in the task's classes
    value          float64         regression only: exactly the value answered
    f_<column>     float64 | string  each raw input column as sent (``f_distance``, ``f_origin``);
                   a PII column (``data.columns.<c>.pii``) as its HMAC hex string, or left out
                   (``data.pii.action``): see :mod:`raymlops.security.pii`

A version's files hold the output columns of its task's ``prediction_kind()`` only (:data:`OUTPUTS`): a
binary version's files are exactly what they were before tasks existed, and old files read as they did.
Feedback rows: see :mod:`raymlops.monitoring.feedback`. :func:`join_feedback` matches them to predictions
by ``prediction_id`` and ``row``; the latest feedback for a key wins.

Versions with different input columns write files with different ``f_`` columns; the readers unify
them (a column a version lacks reads as null).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from raymlops.errors import ConfigError
from raymlops.monitoring.feedback import (
    FEEDBACK_SCHEMA,
    LEGACY_FEEDBACK_SCHEMA,
    TIMESTAMP,
    Feedback,
    feedback_table,
    parse_feedback,
)
from raymlops.monitoring.parquet_log import ParquetLog, read_log
from raymlops.monitoring.wal import DurableParquetLog, check_fsync, recover_wal

if TYPE_CHECKING:
    from raymlops.security.pii import PIIMasker
    from raymlops.serving.spec import ModelSpec
    from raymlops.tasks.base import Task

__all__ = [
    "BASE_SCHEMA",
    "FEATURE_PREFIX",
    "FEEDBACK_DIR",
    "FEEDBACK_SCHEMA",
    "LEGACY_FEEDBACK_SCHEMA",
    "OUTPUTS",
    "PREDICTIONS_DIR",
    "ROUTES",
    "Feedback",
    "PredictionLogger",
    "ScoredRequest",
    "feedback_table",
    "join_feedback",
    "log_pred",
    "parse_feedback",
    "prediction_kind",
    "prediction_schema",
    "read_feedback",
    "read_predictions",
]

PREDICTIONS_DIR = "predictions"
WAL_DIR = "_wal"  # <root>/_wal/<predictions|feedback>/: write-ahead segments (monitoring/wal.py)
FEEDBACK_DIR = "feedback"
ROUTES = ("served", "shadow")
FEATURE_PREFIX = "f_"
_WIRE_TYPES = {"float": pa.float64(), "string": pa.string()}
_PARTITIONS = ("model", "date")
BASE_SCHEMA = pa.schema(
    [
        ("prediction_id", pa.string()),
        ("row", pa.int32()),
        ("ts", TIMESTAMP),
        ("model", pa.string()),
        ("version", pa.string()),
        ("route", pa.string()),
        ("probability", pa.float64()),
        ("label", pa.int8()),
        ("latency_ms", pa.float64()),
    ]
)
# The columns a task's prediction adds to the base ones, by ``Task.prediction_kind()``.
OUTPUTS: dict[str, tuple[pa.Field, ...]] = {
    "probability": (),
    "classes": (pa.field("probabilities", pa.list_(pa.float64())), pa.field("class_index", pa.int32())),
    "value": (pa.field("value", pa.float64()),),
}
OUTPUT_NAMES = tuple(f.name for fields in OUTPUTS.values() for f in fields)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def prediction_kind(task: Task | None) -> str:
    """The task's ``prediction_kind()``; None (a spec without a task) is the legacy binary task's."""
    kind = "probability" if task is None else task.prediction_kind()
    if kind not in OUTPUTS:
        raise ConfigError("task", f"prediction kind {kind!r} has no prediction-log columns.", list(OUTPUTS))
    return kind


def _task_of(spec: Any) -> Task | None:
    return getattr(spec, "task_obj", None)


def prediction_schema(input_columns: Mapping[str, str], task: Task | None = None) -> pa.Schema:
    """The prediction log's schema for a version with these raw input columns (``f_`` + column) and
    task (None: the legacy binary task)."""
    return pa.schema(
        [
            *BASE_SCHEMA,
            *OUTPUTS[prediction_kind(task)],
            *((FEATURE_PREFIX + c, _WIRE_TYPES[kind]) for c, kind in input_columns.items()),
        ]
    )


def _output_arrays(kind: str, pred: np.ndarray, threshold: np.ndarray) -> list[pa.Array]:
    """probability, label and the kind's own columns (``OUTPUTS``) of stacked predictions."""
    rows = len(pred)
    if kind == "classes":
        chosen = pred.argmax(axis=1) if rows else np.empty(0, np.int64)
        flat = pa.array(pred.reshape(-1))
        offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * pred.shape[1])
        return [
            pa.array(pred[np.arange(rows), chosen] if rows else np.empty(0)),
            pa.nulls(rows, pa.int8()),
            pa.ListArray.from_arrays(offsets, flat),
            pa.array(chosen.astype(np.int32)),
        ]
    if kind == "value":
        return [pa.nulls(rows, pa.float64()), pa.nulls(rows, pa.int8()), pa.array(pred)]
    return [pa.array(pred), pa.array((pred >= threshold).astype(np.int8))]


def _stacked(kind: str, pred: np.ndarray) -> np.ndarray:
    """One request's prediction as float64 rows: [N] for one number per row, [N, K] for classes."""
    values = np.asarray(pred, dtype=np.float64)
    return values.reshape(len(values), -1) if kind == "classes" else values.reshape(-1)


def log_pred(rows: pa.Table, task: Task | None) -> np.ndarray:
    """The predictions of logged rows of one version, float64 in the task's shape ([N] or [N, K]):
    what ``task.metrics`` and ``task.prediction_statistic`` take."""
    kind = prediction_kind(task)
    if kind == "classes":
        if "probabilities" not in rows.column_names or not rows.num_rows:
            return np.empty((0, task.output().width if task is not None else 0))
        column = rows["probabilities"].combine_chunks()
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
        return values.reshape(len(column), -1)
    name = "value" if kind == "value" else "probability"
    if name not in rows.column_names:
        return np.empty(0)
    return rows[name].to_numpy().astype(np.float64)


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class ScoredRequest:
    """One scored request as the router hands it to the log: a ``Deferred`` for ``ParquetLog``.

    The router only builds this (microseconds); the log's writer thread turns a run of them into
    one table at once (:meth:`combine`).
    """

    spec: ModelSpec
    route: str
    prediction_id: str
    features: pa.Table  # the request's raw input columns, as validated (float64 / string)
    probabilities: np.ndarray
    latency_ms: float
    ts_us: int
    pii: PIIMasker | None = None  # hashes or drops PII columns here, on the writer thread

    @property
    def num_rows(self) -> int:
        return len(self.probabilities)

    def to_table(self) -> pa.Table:
        return self.combine([self])

    def wal_record(self) -> bytes:
        """This request as one write-ahead record (JSON: ~10 us, where building its table costs ~10x);
        PII columns hashed or dropped first, so that raw values never reach the file."""
        features = self.pii.apply(self.features) if self.pii else self.features
        kinds = {f.name: "string" if pa.types.is_string(f.type) else "float" for f in features.schema}
        probabilities = np.asarray(self.probabilities)
        record = [
            self.route,
            self.prediction_id,
            self.latency_ms,
            self.ts_us,
            self.spec.threshold,
            kinds,
            features.to_pydict(),
            probabilities.dtype.str,
            list(probabilities.shape),
            probabilities.reshape(-1).tolist(),
        ]
        return json.dumps(record, separators=(",", ":")).encode()

    @staticmethod
    def from_wal_record(data: bytes, context: Mapping[str, Any]) -> ScoredRequest:
        """Inverse of :meth:`wal_record`; ``context["spec"]``: the log's ``ModelSpec.to_dict()``."""
        from raymlops.serving.spec import ModelSpec

        route, prediction_id, latency_ms, ts_us, threshold, kinds, columns, dtype, shape, values = json.loads(
            data
        )
        spec = ModelSpec.from_dict({**context["spec"], "input_columns": kinds, "threshold": threshold})
        features = pa.table({c: pa.array(v, _WIRE_TYPES[kinds[c]]) for c, v in columns.items()})
        probabilities = np.asarray(values, dtype=np.dtype(dtype)).reshape(shape)
        return ScoredRequest(spec, route, prediction_id, features, probabilities, latency_ms, ts_us)

    @staticmethod
    def combine(requests: Sequence[ScoredRequest]) -> pa.Table:
        """The log rows of requests to one (model, version, input columns), built vectorised."""
        counts = np.fromiter((len(r.probabilities) for r in requests), dtype=np.int64, count=len(requests))
        total = int(counts.sum())

        def each(values: list[Any], dtype: Any = object) -> np.ndarray:
            return np.repeat(np.asarray(values, dtype=dtype), counts)

        kind = prediction_kind(_task_of(requests[0].spec))
        pred = np.concatenate([_stacked(kind, r.probabilities) for r in requests])
        threshold = each([r.spec.threshold for r in requests], np.float64)
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        columns = list(requests[0].spec.input_columns)
        features = pa.concat_tables(
            [r.features.select(columns) for r in requests], promote_options="permissive"
        )
        pii = requests[0].pii
        if pii:  # before anything is written: the raw values never reach a file
            features = pii.apply(features)
            columns = features.column_names
        outputs = _output_arrays(kind, pred, threshold)
        arrays = [
            pa.array(each([r.prediction_id for r in requests]), pa.string()),
            pa.array((np.arange(total) - starts).astype(np.int32)),
            pa.array(each([r.ts_us for r in requests], np.int64).astype("datetime64[us]")).cast(TIMESTAMP),
            pa.array(each([r.spec.name for r in requests]), pa.string()),
            pa.array(each([r.spec.version for r in requests]), pa.string()),
            pa.array(each([r.route for r in requests]), pa.string()),
            outputs[0],
            outputs[1],
            pa.array(each([r.latency_ms for r in requests], np.float64)),
            *outputs[2:],
            *(features.column(c) for c in columns),
        ]
        names = [
            *BASE_SCHEMA.names,
            *(f.name for f in OUTPUTS[kind]),
            *(FEATURE_PREFIX + c for c in columns),
        ]
        return pa.Table.from_arrays(arrays, names=names)


def _log_key(spec: ModelSpec) -> tuple[str, str, tuple[tuple[str, str], ...], str]:
    """One log per (model, version, input columns, prediction kind): every file has one schema."""
    return (spec.name, spec.version, tuple(spec.input_columns.items()), prediction_kind(_task_of(spec)))


# -- the router's writer ---------------------------------------------------------------------------


class PredictionLogger:
    """The prediction and feedback logs of one router replica.

    One :class:`ParquetLog` per (model, version, input columns), so every file has one schema;
    opened on first use, closed (written out) when :meth:`retain` no longer lists the version.
    A row logged for a version already closed (a request that raced a reconfigure) opens its log
    again, so nothing is dropped. Every method is thread-safe; :meth:`log` and :meth:`log_feedback`
    only buffer.
    """

    def __init__(
        self,
        root: str,
        *,
        flush_rows: int = 1000,
        flush_interval_s: float = 2.0,
        writer_id: str | None = None,
        pii: PIIMasker | None = None,
        wal: bool = True,
        fsync_interval_ms: float = 100.0,
        fsync_rows: int = 0,
    ) -> None:
        self.root = root.rstrip("/") if "://" in root else os.fspath(root)
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        # Write-ahead segments (monitoring/wal.py) under <root>/_wal/: local roots only (flock).
        self.wal = wal and "://" not in self.root
        self.recovered_rows = 0  # rows of dead writers' segments this logger wrote into the logs
        self.recovery: threading.Thread | None = None  # the recovery its start runs
        self._durability: dict[str, Any] = {"fsync_interval_ms": fsync_interval_ms, "fsync_rows": fsync_rows}
        if self.wal:
            check_fsync(fsync_interval_ms, fsync_rows, "serving.prediction_log")
            # The segments of replicas that died (SIGKILL, a lost node) become parquet, off the start path.
            self.recovery = threading.Thread(target=self.recover, name="prediction-log-recover", daemon=True)
            self.recovery.start()
        self.writer_id = writer_id or f"{int(time.time())}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.pii = pii if pii else None  # hashes or drops the f_ columns of PII columns
        self._lock = threading.Lock()
        self._logs: dict[tuple[str, str, tuple[tuple[str, str], ...], str], ParquetLog] = {}
        self._feedback: ParquetLog | None = None
        self._closed = False
        self._opened = 0  # logs opened so far: a reopened version must not reuse a file name

    def settings(self) -> tuple[str, int, float]:
        return self.root, self.flush_rows, self.flush_interval_s

    def recover(self) -> int:
        """Write the write-ahead segments no live writer holds into the logs; returns the rows."""
        rows = sum(
            recover_wal(f"{self.root}/{WAL_DIR}/{d}", f"{self.root}/{d}")
            for d in (PREDICTIONS_DIR, FEEDBACK_DIR)
        )
        self.recovered_rows += rows
        return rows

    def _parquet_log(self, directory: str, context: dict[str, Any] | None, **kwargs: Any) -> ParquetLog:
        """A plain log, or with ``wal`` one whose rows are on disk before ``log`` returns."""
        if not self.wal:
            return ParquetLog(f"{self.root}/{directory}", **kwargs)
        return DurableParquetLog(
            f"{self.root}/{directory}",
            wal_dir=f"{self.root}/{WAL_DIR}/{directory}",
            wal_codec=ScoredRequest if context is not None else None,
            wal_context=context,
            **self._durability,
            **kwargs,
        )

    def _open(self, key: tuple[str, str, tuple[tuple[str, str], ...], str], spec: ModelSpec) -> ParquetLog:
        _, version, columns, _ = key
        task = _task_of(spec)
        self._opened += 1
        schema = prediction_schema(dict(columns), task)
        if self.pii is not None:
            schema = self.pii.schema(schema, prefix=FEATURE_PREFIX)
        return self._parquet_log(
            PREDICTIONS_DIR,
            {"spec": spec.to_dict()},
            schema=schema,
            partition_cols=_PARTITIONS,
            flush_rows=self.flush_rows,
            flush_interval_s=self.flush_interval_s,
            name_prefix=f"{self.writer_id}-{_UNSAFE.sub('_', version)}-{self._opened}",
        )

    def log(
        self,
        spec: ModelSpec,
        route: str,
        prediction_id: str,
        features: pa.Table,
        probabilities: np.ndarray,
        latency_ms: float,
    ) -> None:
        """Buffer one scored request's rows (a few microseconds: the table is built when written)."""
        rows = ScoredRequest(
            spec, route, prediction_id, features, probabilities, latency_ms, _now_us(), self.pii
        )
        key = _log_key(spec)
        with self._lock:
            log = self._logs.get(key)
            if log is None:
                log = self._logs[key] = self._open(key, spec)
            log.append(rows)  # a buffer push under the log's own lock: microseconds
            straggler = self._closed
        if straggler:  # logged after close(): write it out now
            self.close()

    def log_feedback(self, items: Sequence[Feedback]) -> int:
        """Buffer feedback items; returns how many."""
        rows = feedback_table(items, ts_us=_now_us())
        with self._lock:
            if self._feedback is None:
                self._feedback = self._parquet_log(
                    FEEDBACK_DIR,
                    None,
                    schema=FEEDBACK_SCHEMA,
                    partition_cols=_PARTITIONS,
                    flush_rows=self.flush_rows,
                    flush_interval_s=self.flush_interval_s,
                    name_prefix=self.writer_id,
                )
            self._feedback.append(rows)
            straggler = self._closed
        if straggler:
            self.close()
        return len(items)

    def retain(self, specs: Iterable[ModelSpec]) -> None:
        """Close (write out) the logs of versions not in ``specs``."""
        keep = {_log_key(s) for s in specs}
        with self._lock:
            gone = [self._logs.pop(k) for k in list(self._logs) if k not in keep]
        for log in gone:
            log.close()

    def flush(self) -> int:
        """Write everything buffered now; returns the rows written."""
        with self._lock:
            logs = [*self._logs.values(), *([self._feedback] if self._feedback is not None else [])]
        return sum(log.flush() for log in logs)

    def close(self) -> None:
        """Write everything buffered and stop the writer threads (idempotent)."""
        with self._lock:
            self._closed = True
            logs = [*self._logs.values(), *([self._feedback] if self._feedback is not None else [])]
            self._logs, self._feedback = {}, None
        for log in logs:
            log.close()

    def stats(self) -> dict[str, int]:
        """Rows pending, written, dropped and rejected, summed over this writer's open logs."""
        with self._lock:
            logs = [*self._logs.values(), *([self._feedback] if self._feedback is not None else [])]
        total = {"pending_rows": 0, "written_rows": 0, "dropped_rows": 0, "rejected_rows": 0}
        for log in logs:
            stats = log.stats()
            for key in total:
                total[key] += stats[key]
        return total


# -- readers ---------------------------------------------------------------------------------------


def _timestamp(value: dt.datetime | str, what: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise ConfigError(what, f"is not an ISO date-time: {value!r}.") from exc
    if not isinstance(value, dt.datetime):
        raise ConfigError(what, f"must be a datetime or an ISO string, got {value!r}.")
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _window(since: dt.datetime | str | None, until: dt.datetime | str | None) -> tuple[Any, Any]:
    """(partition filter on ``date``, row filter on ``ts``) for ``since <= ts < until``."""
    import pyarrow.dataset as ds

    partition = row = None
    if since is not None:
        start = _timestamp(since, "since")
        partition = ds.field("date") >= start.date().isoformat()
        row = ds.field("ts") >= pa.scalar(start, TIMESTAMP)
    if until is not None:
        end = _timestamp(until, "until")
        upper = ds.field("date") <= end.date().isoformat()
        before = ds.field("ts") < pa.scalar(end, TIMESTAMP)
        partition = upper if partition is None else partition & upper
        row = before if row is None else row & before
    return partition, row


def _and(left: Any, right: Any) -> Any:
    return right if left is None else left if right is None else left & right


def read_predictions(
    root: str | os.PathLike[str],
    model: str,
    since: dt.datetime | str | None = None,
    until: dt.datetime | str | None = None,
) -> pa.Table:
    """The logged rows of ``model`` with ``since <= ts < until`` (naive datetimes are UTC).

    Columns: the base schema (see the module docstring), the output columns of the versions' tasks
    (``OUTPUTS``: null in another task's rows), then every ``f_`` column any version wrote; sorted by
    ``ts``, ``prediction_id``, ``route``, ``row``. Empty (base schema) when nothing was logged.
    """
    import pyarrow.dataset as ds

    partition, row = _window(since, until)
    table = read_log(
        f"{os.fspath(root).rstrip('/')}/{PREDICTIONS_DIR}",
        _PARTITIONS,
        partition_filter=_and(ds.field("model") == model, partition),
        row_filter=row,
    )
    if table is None or table.num_rows == 0:
        return BASE_SCHEMA.empty_table()
    features = [n for n in table.column_names if n.startswith(FEATURE_PREFIX)]
    # The output columns some version wrote (multiclass, regression); a binary-only log has none.
    outputs = [f for fields in OUTPUTS.values() for f in fields if f.name in table.column_names]
    table = table.select([*BASE_SCHEMA.names, *(f.name for f in outputs), *features]).cast(
        pa.schema([*BASE_SCHEMA, *outputs, *(table.schema.field(n) for n in features)])
    )
    return table.sort_by(
        [("ts", "ascending"), ("prediction_id", "ascending"), ("route", "ascending"), ("row", "ascending")]
    )


def read_feedback(
    root: str | os.PathLike[str],
    model: str | None = None,
    since: dt.datetime | str | None = None,
    until: dt.datetime | str | None = None,
) -> pa.Table:
    """Feedback received with ``since <= ts < until``; for ``model``, its own plus feedback that
    named no model (the prediction id still matches it in :func:`join_feedback`)."""
    import pyarrow.dataset as ds

    partition, row = _window(since, until)
    if model is not None:
        partition = _and((ds.field("model") == model) | ds.field("model").is_null(), partition)
    table = read_log(
        f"{os.fspath(root).rstrip('/')}/{FEEDBACK_DIR}",
        _PARTITIONS,
        partition_filter=partition,
        row_filter=row,
    )
    if table is None or table.num_rows == 0:
        return FEEDBACK_SCHEMA.empty_table()
    if "outcome_text" not in table.column_names:  # files written before outcomes of every task
        table = table.append_column("outcome_text", pa.nulls(table.num_rows, pa.string()))
    table = table.select(FEEDBACK_SCHEMA.names).cast(FEEDBACK_SCHEMA)
    return table.sort_by([("ts", "ascending"), ("prediction_id", "ascending"), ("row", "ascending")])


def join_feedback(predictions: pa.Table, feedback: pa.Table, *, join_type: str = "inner") -> pa.Table:
    """Predictions with their outcome: ``outcome``, ``outcome_text`` and ``feedback_ts`` added, matched on
    ``prediction_id`` + ``row``; of several feedbacks for one key the latest (by ``ts``) wins.

    ``join_type="inner"`` keeps the predictions that got feedback; ``"left outer"`` keeps all
    (``outcome`` null where none came). Shadow rows share their request's id and get the outcome too.
    """
    import pyarrow.compute as pc

    if join_type not in ("inner", "left outer"):
        raise ConfigError("join_type", f"must be 'inner' or 'left outer', got {join_type!r}.")
    keys = ["prediction_id", "row"]
    texts = feedback["outcome_text"] if "outcome_text" in feedback.column_names else None
    ordered = feedback.select([*keys, "outcome", "ts"]).append_column(
        "outcome_text", texts if texts is not None else pa.nulls(feedback.num_rows, pa.string())
    )
    # A stable sort by arrival, then the last row of each key in that order (by position: an
    # aggregate's "last" would skip a null outcome, the number of a text outcome).
    ordered = ordered.take(pc.sort_indices(ordered, sort_keys=[("ts", "ascending")]))
    ordered = ordered.append_column("_position", pa.array(np.arange(ordered.num_rows, dtype=np.int64)))
    last = ordered.group_by(keys, use_threads=False).aggregate([("_position", "max")])
    latest = ordered.take(last["_position_max"]).drop_columns(["_position"])
    latest = latest.rename_columns({"ts": "feedback_ts"})
    # Acero joins no list column (a multiclass row's probabilities): those follow by row position.
    nested = [f.name for f in predictions.schema if pa.types.is_nested(f.type)]
    flat = predictions.drop_columns(nested).append_column(
        "_position", pa.array(np.arange(predictions.num_rows, dtype=np.int64))
    )
    joined = flat.join(latest, keys=keys, join_type=join_type, use_threads=False)
    for name in nested:
        joined = joined.append_column(name, predictions[name].take(joined["_position"]))
    joined = joined.drop_columns(["_position"])
    order = [
        ("ts", "ascending"),
        ("prediction_id", "ascending"),
        ("route", "ascending"),
        ("row", "ascending"),
    ]
    return joined.sort_by([o for o in order if o[0] in joined.column_names])
