"""Hash partitioning of Ray Datasets by entity keys: the shuffle under point-in-time joins and windowed
aggregations. Rows with the same keys land in the same partition, in every process and block layout."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import ray.data

__all__ = ["default_partitions", "hash_partition", "partition_ids"]


def partition_ids(table: pa.Table, entities: tuple[str, ...], num_partitions: int) -> np.ndarray:
    """A partition per row from a stable hash of the keys (the same in every process)."""
    import pandas as pd

    combined = np.zeros(table.num_rows, dtype=np.uint64)
    if table.num_rows == 0:
        return combined.astype(np.int64)
    for name in entities:
        # Hash each distinct value once, then spread by the dictionary indices.
        encoded = pc.dictionary_encode(table[name]).combine_chunks()
        values = encoded.dictionary.to_numpy(zero_copy_only=False)
        hashes = np.append(pd.util.hash_array(np.asarray(values, dtype=object)), np.uint64(0))
        index = pc.fill_null(encoded.indices, len(values)).to_numpy(zero_copy_only=False)
        combined = combined * np.uint64(1_000_003) + hashes[index]
    return (combined % np.uint64(num_partitions)).astype(np.int64)


def hash_partition(ds: ray.data.Dataset, entities: tuple[str, ...], num_partitions: int) -> list[list[Any]]:
    """Per block of ``ds``, ``num_partitions`` object refs of its rows split by key hash (Ray tasks)."""
    import ray

    split = ray.remote(_split).options(num_returns=num_partitions)
    return [_as_list(split.remote(ref, entities, num_partitions)) for ref in ds.to_arrow_refs()]


def default_partitions() -> int:
    """Two partitions per CPU of the cluster: every CPU busy, stragglers evened out."""
    import ray

    return max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))


def _split(table: pa.Table, entities: tuple[str, ...], num_partitions: int) -> list[pa.Table]:
    part = partition_ids(table, entities, num_partitions)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(num_partitions + 1))
    ordered = table.take(order)
    return [ordered.slice(bounds[i], bounds[i + 1] - bounds[i]) for i in range(num_partitions)]


def _as_list(refs: Any) -> list[Any]:
    return refs if isinstance(refs, list) else [refs]
