"""Distributed evaluation: the held-out split scored per block in Ray tasks; only mergeable partials reach
the driver, never the rows.

Each block (``map_batches``, pyarrow, the whole block as the batch) runs the preprocessor's transform and
the trained model's predict (both travel in the task's closure), the champion's ONNX graph when there is
one, and returns one pickled record of:

- the task's metric partials (``Task.metric_partials``) of the candidate, of the constant baseline and of
  the champion on the same rows;
- the same partials per slice value ``(column, value)``, for the values chosen beforehand from merged
  counts (:func:`slice_values`: the ``max_values`` most frequent, as the local path's rule);
- the prediction statistic's column statistics (``ColumnStats``: moments and a mergeable quantile sketch)
  for the prediction profile;
- a bounded sample for a picture of rows (the regression scatter): the ``picture_sample_rows`` rows with
  the smallest hash of their content, so the sample does not depend on how rows fall into blocks.

Sparse arrays (the AUC histograms of a block fill few of their bins) travel as their non-zero entries.
What the driver holds is bounded by the number of chosen slices, not by the rows.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["ChampionGraph", "Merged", "score_partials", "slice_values"]

_NULL = "<null>"
_SESSIONS: dict[str, Any] = {}  # onnxruntime sessions per graph digest, per worker process


@dataclass(frozen=True)
class ChampionGraph:
    """The champion's registered graph, what it reads, and the output that answers the task."""

    graph: bytes
    columns: dict[str, str]
    output: str


@dataclass
class Merged:
    """All blocks' partials merged (see the module's docstring)."""

    metrics: dict[str, np.ndarray] | None = None
    baseline: dict[str, np.ndarray] | None = None
    champion: dict[str, np.ndarray] | None = None
    slices: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    prediction_stats: Any = None  # ColumnStats of the prediction statistic
    sample: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (key, actual, predicted)
    blocks: int = 0
    bytes_received: int = 0


def _strings(column: pa.ChunkedArray) -> np.ndarray:
    """A slice column's values as the local path names them: text, nulls as ``<null>``."""
    return pc.cast(column, pa.string()).fill_null(_NULL).to_numpy(zero_copy_only=False)


def _count_block(batch: pa.Table, columns: list[str]) -> pa.Table:
    counts = {c: pc.value_counts(pa.array(_strings(batch[c]))).to_pylist() for c in columns}
    return pa.table({"partial": [_blob(counts)]})


def slice_values(ds: Any, columns: list[str], max_values: int) -> dict[str, list[tuple[str, int]]]:
    """Per slice column, its ``max_values`` most frequent values and their counts over the whole Dataset
    (ties by value, as ``slice_metrics``); each block counts its own values, merged here.

    Exact while a column has at most ``MAX_EXACT_DISTINCT`` values; beyond that (an id-like slice column)
    the driver keeps DataSketches frequent items instead (``raymlops.data.value_counts``: counts within
    0.17 % of the rows), so what it holds stays bounded whatever the rows."""
    from raymlops.data.value_counts import MAX_EXACT_DISTINCT, merge_sketches, sketch_top, to_sketches

    totals: dict[str, dict[str, int]] = {c: {} for c in columns}
    sketches: dict[str, tuple[bytes, bytes]] = {}
    if not columns:
        return {}
    for record in _records(ds, functools.partial(_count_block, columns=columns)):
        for column, entries in record.items():
            pairs = [(entry["values"], int(entry["counts"])) for entry in entries]
            if column in sketches:
                sketches[column] = merge_sketches(sketches[column], to_sketches(pairs))
                continue
            seen = totals[column]
            for value, rows in pairs:
                seen[value] = seen.get(value, 0) + rows
            if len(seen) > MAX_EXACT_DISTINCT:
                sketches[column] = to_sketches(seen.items())
                totals[column] = {}
    return {
        c: sketch_top(sketches[c][0], max_values)
        if c in sketches
        else sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_values]
        for c, counts in totals.items()
    }


def _blob(record: Any) -> bytes:
    """A block's record as it travels: pickled, then zlib at its fastest level (the sparse histograms'
    sorted indices and small counts shrink about 2x for a few ms per block)."""
    return zlib.compress(pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL), 1)


def _records(ds: Any, kernel: Any, merged: Merged | None = None) -> Iterator[Any]:
    for batch in ds.map_batches(
        kernel, batch_format="pyarrow", batch_size=None, zero_copy_batch=True
    ).iter_batches(batch_format="pyarrow", batch_size=None):
        for blob in batch["partial"].to_pylist():
            if merged is not None:
                merged.blocks += 1
                merged.bytes_received += len(blob)
            yield pickle.loads(zlib.decompress(blob))


def _champion_pred(champion: ChampionGraph, batch: pa.Table) -> np.ndarray:
    import onnxruntime as ort

    from raymlops.models.export import onnx_feeds, providers_for

    key = hashlib.sha256(champion.graph).hexdigest()
    session = _SESSIONS.get(key)
    if session is None:  # once per worker process, not per block
        session = _SESSIONS[key] = ort.InferenceSession(champion.graph, providers=providers_for(False))
    pred = session.run([champion.output], onnx_feeds(batch, champion.columns))[0]
    return pred.reshape(-1) if pred.ndim == 1 or pred.shape[1] == 1 else pred


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a row's sample key from the bits of its values."""
    x = x.copy()
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _sample(y: np.ndarray, statistic: np.ndarray, rows: int, seed: int) -> tuple[np.ndarray, ...]:
    with np.errstate(over="ignore"):
        key = _mix(y.astype(np.float64).view(np.uint64) + np.uint64(seed))
        key = _mix(key ^ statistic.astype(np.float64).view(np.uint64))
    keep = np.argsort(key, kind="stable")[:rows]
    return key[keep], y[keep], statistic[keep]


def _pack(value: Any) -> Any:
    """Arrays mostly of zeros as (shape, indices, values): a block's AUC histograms fill few bins."""
    if isinstance(value, dict):
        return {k: _pack(v) for k, v in value.items()}
    if isinstance(value, np.ndarray) and value.size >= 64:
        flat = value.reshape(-1)
        nonzero = np.flatnonzero(flat)
        if 2 * len(nonzero) < flat.size:
            return ("sparse", value.shape, nonzero.astype(np.int32), flat[nonzero])
    return value


def _unpack(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unpack(v) for k, v in value.items()}
    if isinstance(value, tuple) and len(value) == 4 and value[0] == "sparse":
        _, shape, index, values = value
        flat = np.zeros(int(np.prod(shape)), values.dtype)
        flat[index] = values
        return flat.reshape(shape)
    return value


def _score_block(
    batch: pa.Table,
    *,
    task: Any,
    pre: Any,
    model: Any,
    constant: np.ndarray,
    champion: ChampionGraph | None,
    slices: dict[str, list[str]],
    seed: int,
) -> pa.Table:
    from raymlops.data.stats import table_stats
    from raymlops.monitoring.version_info import prediction_statistic_table

    if not batch.num_rows:  # an empty block sends nothing (a model need not predict no rows)
        return pa.table({"partial": pa.array([], pa.binary())})
    y = batch["label"].to_numpy().astype(np.float64)
    pred = model.predict(pre.transform(batch))
    fixed = np.repeat(constant.reshape(1, -1), len(y), axis=0)
    record: dict[str, Any] = {
        "metrics": task.metric_partials(y, pred),
        "baseline": task.metric_partials(y, fixed[:, 0] if task.output().width == 1 else fixed),
        "slices": {},
    }
    if champion is not None:
        record["champion"] = task.metric_partials(y, _champion_pred(champion, batch))
    for column, wanted in slices.items():
        values = _strings(batch[column])
        for value in set(wanted) & set(np.unique(values).tolist()):
            mask = values == value
            record["slices"][(column, value)] = task.metric_partials(y[mask], pred[mask])
    statistic = prediction_statistic_table(pred, task)
    record["stats"] = table_stats(statistic)[statistic.column_names[0]]
    if task.picture_sample_rows:
        record["sample"] = _sample(y, task.prediction_statistic(pred), task.picture_sample_rows, seed)
    return pa.table({"partial": [_blob(_pack(record))]})


def _merge_maybe(task: Any, a: dict[str, np.ndarray] | None, b: dict[str, np.ndarray] | None) -> Any:
    if a is None or b is None:
        return a if b is None else b
    return task.merge_partials(a, b)


def _push_stats(stack: list[tuple[int, Any]], stats: Any) -> None:
    """A binary counter of merges: each sketch passes through log2(blocks) merges (data/sketch.py), and
    the driver holds log2(blocks) statistics, not one per block."""
    level = 0
    while stack and stack[-1][0] == level:
        stats = stack.pop()[1].merge(stats)
        level += 1
    stack.append((level, stats))


def score_partials(
    ds: Any,
    *,
    task: Any,
    pre: Any,
    model: Any,
    constant: np.ndarray,
    champion: ChampionGraph | None,
    slices: dict[str, list[str]],
    seed: int = 0,
) -> Merged:
    """Score every block of ``ds`` (a ``ray.data.Dataset`` of the held-out split with its ``label``
    target) and merge the partials (see the module's docstring)."""
    kernel = functools.partial(
        _score_block,
        task=task,
        pre=pre,
        model=model,
        constant=np.asarray(constant, np.float64),
        champion=champion,
        slices=slices,
        seed=seed,
    )
    merged = Merged()
    stack: list[tuple[int, Any]] = []
    for packed in _records(ds, kernel, merged):
        record = _unpack(packed)
        merged.metrics = _merge_maybe(task, merged.metrics, record["metrics"])
        merged.baseline = _merge_maybe(task, merged.baseline, record["baseline"])
        merged.champion = _merge_maybe(task, merged.champion, record.get("champion"))
        for key, parts in record["slices"].items():
            merged.slices[key] = _merge_maybe(task, merged.slices.get(key), parts)
        _push_stats(stack, record["stats"])
        if "sample" in record:
            merged.sample = _merge_sample(merged.sample, record["sample"], task.picture_sample_rows)
    while len(stack) > 1:
        _, top = stack.pop()
        level, below = stack.pop()
        stack.append((level, below.merge(top)))
    merged.prediction_stats = stack[0][1] if stack else None
    return merged


def _merge_sample(
    a: tuple[np.ndarray, ...] | None, b: tuple[np.ndarray, ...], rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = [b] if a is None else [a, b]
    key, actual, predicted = (np.concatenate([p[i] for p in parts]) for i in range(3))
    keep = np.argsort(key, kind="stable")[:rows]
    return key[keep], actual[keep], predicted[keep]
