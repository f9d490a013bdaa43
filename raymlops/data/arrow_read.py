"""Read a pyarrow dataset (Delta version, parquet/CSV files) into Ray Data: one task per file fragment.

Why not ``ray.data.read_parquet``/``read_delta``: on this 2-core machine they took 6.3 s to stream 3M
rows of flights through a no-op, where tasks that each ``fragment.to_table()`` took 2.2 s with the same
statistics work on top. The fragment list comes from the format's own reader (``deltalake`` knows which
files make a version), so what is read is exactly that version's files.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

__all__ = ["read_arrow_dataset"]


class _ReadFragments:
    """Map function: the rows of the fragments whose indexes arrive in the batch."""

    def __init__(self, fragments: list[Any], schema: pa.Schema) -> None:
        self.fragments, self.schema = fragments, schema

    def __call__(self, batch: pa.Table) -> pa.Table:
        tables = [self.fragments[i].to_table(schema=self.schema) for i in batch["id"].to_pylist()]
        return pa.concat_tables(tables) if tables else self.schema.empty_table()


def read_arrow_dataset(dataset: Any, min_blocks: int | None = None):  # -> ray.data.Dataset
    """``dataset`` (a ``pyarrow.dataset.Dataset``) as a Ray Dataset with one block per fragment.

    Files are split into row groups when there are fewer files than ``min_blocks`` (default: two per
    CPU of the cluster), so a one-file table still keeps every CPU busy.
    """
    import ray
    import ray.data

    fragments = list(dataset.get_fragments())
    wanted = min_blocks if min_blocks is not None else 2 * int(ray.cluster_resources().get("CPU", 1))
    if 0 < len(fragments) < wanted and hasattr(fragments[0], "split_by_row_group"):
        fragments = [group for f in fragments for group in f.split_by_row_group()]
    if not fragments:
        return ray.data.from_arrow(dataset.schema.empty_table())
    index = ray.data.range(len(fragments), override_num_blocks=len(fragments))  # column "id"
    return index.map_batches(
        _ReadFragments(fragments, dataset.schema), batch_format="pyarrow", batch_size=None
    )
