"""Where a data step's kernels run: Ray Data over blocks, or one process over one pyarrow Table.

Every step of the features stage is a kernel on one pyarrow batch: a filter, a tag, a target, a partial
statistic merged afterwards. :func:`frame` wraps the step's input so the step is written once:

- a ``ray.data.Dataset`` -> :class:`RayFrame`: the kernel runs in Ray tasks over the blocks
  (``map_batches`` with the whole block as the batch);
- a ``pyarrow.Table`` -> :class:`LocalFrame`: the kernel runs once, in this process, on the whole table.

A step hands back what it was given (a Dataset for a Dataset, a Table for a Table), so a caller picks the
path once, for its input, with :func:`plan_execution` (``execution.*``): on data that fits one process,
each Ray Data execution pays task and executor start-up that costs more than the work (RAY-NOTES).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from raymlops.errors import ConfigError

__all__ = [
    "EXECUTION_MODES",
    "ExecutionPlan",
    "Frame",
    "LocalFrame",
    "RayFrame",
    "collect",
    "frame",
    "plan_execution",
    "xy_dataset",
]

logger = logging.getLogger(__name__)

EXECUTION_MODES = ("auto", "local", "distributed")
Kernel = Callable[[pa.Table], Any]  # one pyarrow batch -> a pyarrow Table (or a dict of numpy arrays)
_BATCH: dict[str, Any] = {"batch_format": "pyarrow", "batch_size": None, "zero_copy_batch": True}
_LOCAL_BLOCK_ROWS = 8192  # rows per block of the Datasets built from local results (as map_batches makes)


class LocalFrame:
    """One pyarrow Table in this process: each kernel is called once, on the whole table."""

    def __init__(self, table: pa.Table) -> None:
        self.data = table

    def map(self, kernel: Kernel) -> LocalFrame:
        return LocalFrame(kernel(self.data))

    def partials(self, kernel: Kernel) -> Iterator[pa.Table]:
        """The kernel's output for the one block there is (a partial result for the caller to merge)."""
        yield kernel(self.data)

    def materialize(self) -> LocalFrame:
        return self

    def count(self) -> int:
        return self.data.num_rows

    def column_names(self) -> list[str]:
        return list(self.data.column_names)

    def head(self, rows: int) -> pa.Table:
        return self.data.slice(0, rows)


class RayFrame:
    """A ``ray.data.Dataset``: each kernel runs in Ray tasks, one call per block."""

    def __init__(self, ds: Any) -> None:
        self.data = ds

    def map(self, kernel: Kernel) -> RayFrame:
        return RayFrame(self.data.map_batches(kernel, **_BATCH))

    def partials(self, kernel: Kernel) -> Iterator[pa.Table]:
        """The kernel's output per block, streamed here (partial results for the caller to merge)."""
        yield from self.data.map_batches(kernel, **_BATCH).iter_batches(
            batch_format="pyarrow", batch_size=None
        )

    def materialize(self) -> RayFrame:
        return RayFrame(self.data.materialize())

    def count(self) -> int:
        return int(self.data.count())

    def column_names(self) -> list[str]:
        schema = self.data.schema()
        return list(schema.names) if schema is not None else []

    def head(self, rows: int) -> pa.Table:
        return self.data.take_batch(rows, batch_format="pyarrow")


Frame = LocalFrame | RayFrame


def frame(data: Any) -> Frame:
    """``data`` (a pyarrow Table or a Ray Dataset, or a Frame already) as a Frame."""
    if isinstance(data, LocalFrame | RayFrame):
        return data
    if isinstance(data, pa.Table):
        return LocalFrame(data)
    return RayFrame(data)


def collect(ds: Any) -> pa.Table:
    """A Ray Dataset's rows as one pyarrow Table in this process (its blocks fetched, not re-executed)."""
    import ray

    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    if not tables:
        schema = ds.schema()
        return pa.table({}) if schema is None else schema.base_schema.empty_table()
    return pa.concat_tables(tables, promote_options="default").combine_chunks()


def _from_blocks(blocks: list[pa.Table]) -> Any:
    """A materialized Dataset of these blocks. ``from_blocks`` reads their metadata here, where
    ``from_arrow`` starts a Ray task per block for it (0.7 s of the quickstart's 1.9 s on a cold cluster)."""
    import ray

    return ray.data.from_blocks(blocks)


def to_dataset(data: Any) -> Any:
    """``data`` as a ``ray.data.Dataset``: a Dataset as it is, a Table cut into materialized blocks."""
    if not isinstance(data, pa.Table):
        return data
    blocks = [data.slice(start, _LOCAL_BLOCK_ROWS) for start in range(0, data.num_rows, _LOCAL_BLOCK_ROWS)]
    return _from_blocks(blocks or [data])


def xy_dataset(x: np.ndarray, y: np.ndarray) -> Any:
    """``{"x": rows x features, "y": rows}`` as a materialized Dataset with the blocks ``map_batches`` makes
    of the same batch (a tensor column x), so a later stage cannot tell which path built it."""
    from ray.data.block import BlockAccessor

    starts = range(0, len(y), _LOCAL_BLOCK_ROWS) if len(y) else range(1)
    blocks = [
        BlockAccessor.batch_to_block({"x": x[s : s + _LOCAL_BLOCK_ROWS], "y": y[s : s + _LOCAL_BLOCK_ROWS]})
        for s in starts
    ]
    return _from_blocks(blocks)


@dataclass(frozen=True)
class ExecutionPlan:
    """Which path a step runs on (``local`` or ``distributed``) and why, for the run summary."""

    path: str
    reason: str

    @property
    def local(self) -> bool:
        return self.path == "local"


def plan_execution(cfg: Any, rows: int, size_bytes: int | None) -> ExecutionPlan:
    """The path for an input of ``rows`` rows and ``size_bytes`` bytes under ``execution`` (``cfg``).

    Raises:
        ConfigError: ``execution.mode`` is not one of :data:`EXECUTION_MODES`, or a limit is negative.
    """
    mode = str(cfg.mode)
    if mode not in EXECUTION_MODES:
        raise ConfigError("execution.mode", f"{mode!r} is not an execution mode.", EXECUTION_MODES)
    max_rows, max_bytes = int(cfg.local_max_rows), int(cfg.local_max_bytes)
    for key, value in (("local_max_rows", max_rows), ("local_max_bytes", max_bytes)):
        if value < 0:
            raise ConfigError(f"execution.{key}", f"{value} is negative: use 0 to never run locally.")
    measured = f"{rows} rows and {'unknown' if size_bytes is None else size_bytes} bytes"
    if mode != "auto":
        return ExecutionPlan(mode, f"execution.mode={mode} ({measured})")
    if rows > max_rows:
        return ExecutionPlan("distributed", f"{rows} rows > execution.local_max_rows={max_rows}")
    if size_bytes is None:
        return ExecutionPlan("distributed", f"{measured}: the size is not known without reading the data")
    if size_bytes > max_bytes:
        return ExecutionPlan("distributed", f"{size_bytes} bytes > execution.local_max_bytes={max_bytes}")
    return ExecutionPlan(
        "local",
        f"{rows} rows <= execution.local_max_rows={max_rows} and {size_bytes} bytes <= "
        f"local_max_bytes={max_bytes}",
    )
