"""Scoring a Ray dataset with a pool of onnxruntime actors (the map behind :mod:`raymlops.serving.batch`).

``map_batches`` over a pool of actors, each holding one onnxruntime session (``intra_op_num_threads`` =
the CPUs the actor reserved; the CUDA provider and a reserved GPU when ``use_gpu``). The model travels as
bytes, so actors on other nodes need not see the driver's disk. :func:`score_to_parquet` has the actors
write the parquet parts themselves: the read tasks fuse into the same actors, so rows go file -> actor ->
part file without another trip through the object store.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from raymlops.errors import ConfigError
from raymlops.models.export import onnx_feeds, providers_for
from raymlops.security.integrity import read_artifact
from raymlops.serving.providers import check_providers

if TYPE_CHECKING:
    import ray.data


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "LABEL_OUTPUT",
    "check_threshold",
    "output_columns",
    "output_filesystem",
    "score_dataset",
    "score_to_parquet",
]

logger = logging.getLogger(__name__)

LABEL_OUTPUT = "label"  # binary and multiclass: the answer's label
DEFAULT_BATCH_SIZE = 65_536  # rows per onnxruntime call: large enough that per-call overhead vanishes
_PROGRESS_EVERY_S = 5.0
_IN_FLIGHT = 2  # blocks per scoring actor (see _pool)


def check_threshold(threshold: float) -> None:
    """Raise ConfigError unless the label threshold is a probability, in [0, 1]."""
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError("threshold", f"must be in [0, 1], got {threshold!r}.")


def output_columns(task: Mapping[str, Any] | None = None) -> pa.Schema:
    """The columns scoring adds for a version of ``task`` (its ``describe()``; None or {}: the legacy
    binary task): binary ``probability``, ``label``; multiclass ``label`` and ``probability_<class>``
    per class; regression ``value`` (``Task.output_columns``)."""
    from raymlops.tasks.codec import task_from_dict

    spec = task_from_dict(task or {})
    empty = np.zeros((0, spec.output().width), np.float32)
    return pa.schema([pa.field(n, a.type) for n, a in spec.output_columns(empty).items()])


def output_filesystem(output: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path on it): a URI (s3://, gs://, file://) or a local path (made absolute)."""
    from pyarrow import fs

    if "://" in output:
        return fs.FileSystem.from_uri(output)
    return fs.LocalFileSystem(), str(Path(output).expanduser().resolve())


class _OnnxScorer:
    """Map function (a callable class: one instance per actor): a pyarrow block in, scored block out."""

    def __init__(
        self,
        model: bytes,
        input_columns: dict[str, str],
        threshold: float,
        use_gpu: bool,
        num_threads: int,
        batch_size: int,
        keep_columns: list[str] | None,
        task: dict[str, Any] | None = None,
    ) -> None:
        import onnxruntime as ort

        from raymlops.tasks.codec import task_from_dict

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads  # the CPUs Ray reserved for this actor, no more
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, sess_options=options, providers=providers_for(use_gpu))
        check_providers(self.session, use_gpu, "use_gpu", "a batch scoring actor")  # no silent CPU fallback
        self.input_columns, self.threshold = input_columns, threshold
        self.batch_size, self.keep_columns = batch_size, keep_columns
        self.task = task_from_dict(task or {})
        self.added = output_columns(task).names

    def __call__(self, batch: pa.Table) -> pa.Table:
        missing = [
            c for c in [*self.input_columns, *(self.keep_columns or [])] if c not in batch.column_names
        ]
        if missing:
            raise ConfigError(
                "input",
                f"the data lacks column(s) {', '.join(missing)}; it has {', '.join(batch.column_names)}.",
            )
        kept = batch.column_names if self.keep_columns is None else self.keep_columns
        clash = [c for c in self.added if c in kept]
        if clash:
            raise ConfigError(
                "keep_columns",
                f"the data already has column(s) {', '.join(map(repr, clash))}, which scoring adds: "
                "keep the other columns only.",
            )
        output = self.task.output()
        name, width = output.name, output.width
        parts = [
            self.session.run([name], onnx_feeds(chunk, self.input_columns))[0].reshape(-1, width)
            for chunk in (batch.slice(s, self.batch_size) for s in range(0, batch.num_rows, self.batch_size))
        ]
        pred = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, width), np.float32)
        out = batch if self.keep_columns is None else batch.select(self.keep_columns)
        for column, values in self.task.output_columns(pred, self.threshold).items():
            out = out.append_column(column, values)
        return out


class _ScoreToParquet(_OnnxScorer):
    """Scores a block and writes it as one parquet part; returns one row: the part's path and rows."""

    def __init__(self, *args: Any, filesystem: Any, folder: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filesystem, self.folder = filesystem, folder
        self.prefix, self.parts = uuid.uuid4().hex[:12], 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow.parquet as pq

        scored = super().__call__(batch)
        if scored.num_rows == 0:
            return pa.table({"file": pa.array([], pa.string()), "rows": pa.array([], pa.int64())})
        path = f"{self.folder}/part-{self.prefix}-{self.parts:05d}.parquet"
        self.parts += 1
        pq.write_table(scored, path, filesystem=self.filesystem)
        return pa.table({"file": [path], "rows": pa.array([scored.num_rows], pa.int64())})


def _pool(
    concurrency: int | tuple[int, int] | None,
    use_gpu: bool,
    num_cpus: float,
    num_gpus: float,
    most_useful: int | None = None,
    start_full: bool = False,
) -> Any:  # -> ray.data.ActorPoolStrategy
    """Ray Data's actor pool; default (1, N): N actors fit the cluster's CPUs (GPUs), capped at
    ``most_useful`` (no more actors than there are onnxruntime batches of work). ``start_full``: start
    all N at once (see below)."""
    import ray
    import ray.data

    if concurrency is None:
        resources = ray.cluster_resources()
        have, each = (resources.get("GPU", 0), num_gpus) if use_gpu else (resources.get("CPU", 1), num_cpus)
        if use_gpu and have < each:
            raise ConfigError(
                "use_gpu", f"the Ray cluster has {have:g} GPU(s); one scoring actor needs {each:g}."
            )
        most = max(1, int(have // each)) if each > 0 else 1
        concurrency = (1, max(1, min(most, most if most_useful is None else most_useful)))
    if isinstance(concurrency, int):
        if concurrency < 1:
            raise ConfigError("concurrency", f"must be >= 1, got {concurrency}.")
        return ray.data.ActorPoolStrategy(size=concurrency, max_tasks_in_flight_per_actor=_IN_FLIGHT)
    low, high = concurrency
    if not 1 <= low <= high:
        raise ConfigError("concurrency", f"must be (min, max) with 1 <= min <= max, got {concurrency}.")
    # By default the pool grows from ``low`` while blocks queue up, within Ray Data's resource budget:
    # the second actor starts only once the first runs (measured: 8-10 s later on 2 busy cores).
    # ``start_full`` starts them all at once. Only safe when nothing but the actors needs CPUs (the
    # reads fused into them, see ``_all_inside_actors``): started full after a step that runs tasks
    # of its own (a repartition, a map that does not fuse), the actors hold every CPU those tasks wait
    # for, forever (seen here). Two blocks in flight per actor: enough for the autoscaler to see a
    # backlog (it grows the pool at 1.75 per actor), few enough that the actor that started first does
    # not hoard the queue.
    return ray.data.ActorPoolStrategy(
        min_size=low,
        max_size=high,
        initial_size=high if start_full else low,
        max_tasks_in_flight_per_actor=_IN_FLIGHT,
    )


def _map(
    ds: ray.data.Dataset,
    scorer: type[_OnnxScorer],
    onnx_path: str | Path,
    input_columns: Mapping[str, str],
    *,
    threshold: float,
    use_gpu: bool,
    concurrency: int | tuple[int, int] | None,
    batch_size: int,
    keep_columns: Sequence[str] | None,
    num_cpus: float,
    num_gpus: float | None,
    extra: dict[str, Any] | None = None,
    expected_rows: int | None = None,
    task: Mapping[str, Any] | None = None,
) -> ray.data.Dataset:
    check_threshold(threshold)
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be >= 1, got {batch_size}.")
    if num_cpus <= 0 and not use_gpu:
        raise ConfigError("num_cpus", f"must be > 0 for CPU scoring, got {num_cpus}.")
    gpus = (1.0 if num_gpus is None else num_gpus) if use_gpu else 0.0
    useful = -(-expected_rows // batch_size) if expected_rows is not None else None
    kwargs = {
        "model": read_artifact(onnx_path),  # decrypted when encrypted at rest
        "input_columns": dict(input_columns),
        "threshold": float(threshold),
        "use_gpu": use_gpu,
        "num_threads": max(1, int(num_cpus)),
        "batch_size": batch_size,
        "keep_columns": None if keep_columns is None else list(keep_columns),
        "task": dict(task or {}),
        **(extra or {}),
    }

    def scored(start_full: bool) -> ray.data.Dataset:
        # batch_size=None: whole blocks, so the read tasks before this step fuse into the actors (a
        # fixed Ray Data batch size would bundle many blocks per call); the actor slices each block
        # into ``batch_size``-row onnxruntime calls itself.
        return ds.map_batches(
            scorer,
            fn_constructor_kwargs=kwargs,
            batch_format="pyarrow",
            batch_size=None,
            compute=_pool(concurrency, use_gpu, num_cpus, gpus, useful, start_full),
            num_cpus=num_cpus,
            num_gpus=gpus,
            udf_modifying_row_count=scorer is _ScoreToParquet,
        )

    mapped = scored(start_full=False)
    return scored(start_full=True) if _all_inside_actors(mapped) else mapped


def _all_inside_actors(ds: ray.data.Dataset) -> bool:
    """Whether Ray Data will run the whole plan inside the actor pool of its last step (the reads fused
    into the actors: ``InputDataBuffer -> ActorPoolMapOperator``), so that starting every actor at once
    cannot starve another step of CPUs. Asks Ray Data's planner, as ``Dataset.explain`` does (an
    internal API): False whenever it cannot tell.
    """
    try:
        from ray.data._internal.execution.operators.actor_pool_map_operator import ActorPoolMapOperator
        from ray.data._internal.execution.operators.input_data_buffer import InputDataBuffer
        from ray.data._internal.logical.optimizers import LogicalOptimizer, PhysicalOptimizer
        from ray.data._internal.planner import create_planner

        optimized: Any = LogicalOptimizer().optimize(ds._logical_plan)
        physical, _ = create_planner().plan(optimized)
        dag = PhysicalOptimizer().optimize(physical).dag
    except Exception:  # a Ray version with another planner: keep the safe, growing pool
        logger.debug("batch scoring: cannot inspect the Ray Data plan", exc_info=True)
        return False
    inputs = dag.input_dependencies
    return isinstance(dag, ActorPoolMapOperator) and all(isinstance(d, InputDataBuffer) for d in inputs)


def score_dataset(
    ds: ray.data.Dataset,
    onnx_path: str | Path,
    input_columns: Mapping[str, str],
    *,
    threshold: float = 0.5,
    use_gpu: bool = False,
    concurrency: int | tuple[int, int] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    keep_columns: Sequence[str] | None = None,
    num_cpus: float = 1.0,
    num_gpus: float | None = None,
    task: Mapping[str, Any] | None = None,
) -> ray.data.Dataset:
    """Append the task's columns (``output_columns``) to ``ds``: for the legacy binary task ``probability``
    (float32) and ``label`` (int8, ``probability >= threshold``).

    Lazy, like every Ray Data transform: nothing runs until the result is consumed or written.

    Args:
        ds: Rows holding the model's raw input columns (and whatever else).
        onnx_path: The composed graph (preprocessing + model) with the task's output.
        input_columns: Raw column -> ``"float"`` or ``"string"``, as the graph's inputs expect.
        threshold: Decision threshold for ``label``.
        use_gpu: onnxruntime's CUDA provider, and ``num_gpus`` reserved per actor.
        concurrency: Actor pool size: ``n`` fixed, or ``(min, max)``; default ``(1, N)`` with ``N`` the
            actors the cluster's CPUs (GPUs when ``use_gpu``) hold.
        batch_size: Rows per onnxruntime call inside an actor.
        keep_columns: Columns of ``ds`` to keep beside the new ones; None keeps every column.
        num_cpus: CPUs reserved per actor; also its onnxruntime ``intra_op_num_threads``.
        num_gpus: GPUs reserved per actor when ``use_gpu`` (default 1).
        task: The version's task (``Task.describe()``, the ``raymlops.task`` tag); None: legacy binary.
    """
    return _map(
        ds,
        _OnnxScorer,
        onnx_path,
        input_columns,
        threshold=threshold,
        use_gpu=use_gpu,
        concurrency=concurrency,
        batch_size=batch_size,
        keep_columns=keep_columns,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        task=task,
    )


def score_to_parquet(
    ds: ray.data.Dataset,
    onnx_path: str | Path,
    input_columns: Mapping[str, str],
    output: str,
    *,
    threshold: float = 0.5,
    use_gpu: bool = False,
    concurrency: int | tuple[int, int] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    keep_columns: Sequence[str] | None = None,
    num_cpus: float = 1.0,
    num_gpus: float | None = None,
    expected_rows: int | None = None,
    task: Mapping[str, Any] | None = None,
) -> tuple[int, list[str]]:
    """``score_dataset`` whose actors write each scored block as a parquet part under ``output``.

    The scored rows never come back to the driver; it logs progress every few seconds (against
    ``expected_rows`` when given, which also caps the actor pool at one actor per ``batch_size`` rows).
    Returns (rows written, part paths). The other arguments are ``score_dataset``'s.
    """
    filesystem, folder = output_filesystem(output)
    filesystem.create_dir(folder, recursive=True)
    written = _map(
        ds,
        _ScoreToParquet,
        onnx_path,
        input_columns,
        threshold=threshold,
        use_gpu=use_gpu,
        concurrency=concurrency,
        batch_size=batch_size,
        keep_columns=keep_columns,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        extra={"filesystem": filesystem, "folder": folder},
        expected_rows=expected_rows,
        task=task,
    )
    rows, files = 0, []
    started = last = time.monotonic()
    for batch in written.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0):
        assert isinstance(batch, pa.Table)
        rows += sum(batch["rows"].to_pylist())
        files += batch["file"].to_pylist()
        if time.monotonic() - last >= _PROGRESS_EVERY_S:
            last = time.monotonic()
            share = f" of {expected_rows:,} ({100 * rows / expected_rows:.0f}%)" if expected_rows else ""
            logger.info(
                "batch_score progress rows=%s%s parts=%d rows_per_s=%.0f",
                f"{rows:,}",
                share,
                len(files),
                rows / (last - started),
            )
    return rows, sorted(files)
