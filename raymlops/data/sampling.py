"""Reproducible row sampling: a row is kept by a hash of its own values, not by where it lands.

``Dataset.random_sample(seed=...)`` seeds per read task, so the rows it keeps change with how the
read is split into blocks (seen: 24,674 / 24,540 / 24,521 rows from three identical runs). A content
hash keeps exactly the same rows for the same data version, seed and fraction, whatever the layout.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pyarrow as pa

from raymlops.errors import ConfigError

__all__ = ["keep_mask", "row_hashes", "sample_rows"]

_BUCKETS = 1 << 32


def row_hashes(batch: pa.Table, seed: int, columns: list[str] | None = None) -> np.ndarray:
    """A seeded 64-bit hash of each row's values (of ``columns`` only, when given): the same row gets the
    same hash in any block layout, which is what makes sampling and splits reproducible."""
    import pandas as pd

    table = batch.select(columns) if columns is not None else batch
    hashes = pd.util.hash_pandas_object(table.to_pandas(), index=False, hash_key=f"{seed:016d}"[-16:])
    return hashes.to_numpy(dtype=np.uint64)


def keep_mask(batch: pa.Table, fraction: float, seed: int) -> np.ndarray:
    """True for the rows whose (seeded) content hash falls in the first ``fraction`` of the hash space."""
    return (row_hashes(batch, seed) % _BUCKETS) < int(fraction * _BUCKETS)


def _keep(batch: pa.Table, fraction: float, seed: int) -> pa.Table:
    return batch.filter(pa.array(keep_mask(batch, fraction, seed)))


def sample_rows(ds, fraction: float, seed: int):  # ray.data.Dataset | pa.Table -> the same type
    """The rows of ``ds`` (a Ray Dataset or a pyarrow Table) kept by ``keep_mask``; ``fraction`` in (0, 1]."""
    from raymlops.data.frames import frame

    if not 0.0 < fraction <= 1.0:
        raise ConfigError("data.sample_fraction", f"{fraction} is not in (0, 1].")
    if fraction == 1.0:
        return ds
    return frame(ds).map(partial(_keep, fraction=fraction, seed=seed)).data
