"""Whether a data version is small enough to read in this process, known from file footers before reading.

Ingest picks its path as the features stage does (``raymlops.data.frames.plan_execution``), but before any
row is read: the rows and the uncompressed bytes of a version's parquet files are in their footers. Data
that fits one process is then read straight into one pyarrow Table (``pyarrow.dataset``'s own reader)
and the validate and features stages run their kernels on it; Ray Data's read tasks, executor start and
object transfers cost more than the read itself there (20k flights: 4.5 s through Ray Data on 2 cores).
"""

from __future__ import annotations

from typing import Any

from raymlops.data.frames import ExecutionPlan, plan_execution

__all__ = ["parquet_footprint", "plan_read"]


def parquet_footprint(dataset: Any) -> tuple[int, int] | None:
    """(rows, uncompressed bytes) of a ``pyarrow.dataset.Dataset`` from its parquet footers; None when a
    file is not parquet (a CSV's rows are known only by reading it)."""
    rows = size = 0
    for fragment in dataset.get_fragments():
        metadata = getattr(fragment, "metadata", None)
        if metadata is None:
            return None
        rows += metadata.num_rows
        size += sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    return rows, size


def plan_read(execution: Any, dataset: Any) -> ExecutionPlan:
    """The path for reading ``dataset`` (a ``pyarrow.dataset.Dataset``, or None when the backend reads
    through Ray Data only) under ``execution`` (``execution.*``)."""
    if dataset is None:
        return ExecutionPlan("distributed", "the data backend reads through Ray Data only")
    footprint = parquet_footprint(dataset)
    if footprint is None:
        if str(execution.mode) == "local":
            return ExecutionPlan("local", "execution.mode=local (the size is not in the files' footers)")
        return ExecutionPlan("distributed", "the size is not known without reading the data (not parquet)")
    return plan_execution(execution, *footprint)
