"""Random, stratified and group splits from a seeded content hash, computed in Ray Data over blocks or
on one pyarrow Table in this process (the same kernels: ``raymlops.data.frames``).

A row's split depends on its own values (or its group's), the seed and the fractions, never on where
it lands: the same data version gives the same splits in any block layout and any run, as
``data.sample_fraction`` does (see ``sampling.py``).

- random: the row's hash, read as a number in [0, 1), falls in the train, valid or test range.
- group: the same with the hash of the group column alone, so a group never straddles two splits.
- stratified: exact shares per class without collecting rows. Pass 1 streams, per block, a histogram of
  each class's hashes over ``STRATA_BUCKETS`` buckets (memory: classes x buckets, whatever the rows);
  the cut points are chosen per class where its cumulative count is closest to the fractions; pass 2
  tags each row by its class's cut points. A class's count in a split is off its exact share by at most
  the rows of one bucket (1/4096 of the class), so every split's class shares stay within
  0.025 x share of the whole table's (well inside one percentage point).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlops.data.frames import frame
from raymlops.data.sampling import row_hashes
from raymlops.errors import ConfigError

__all__ = [
    "SPLITS",
    "STRATA_BUCKETS",
    "check_fractions",
    "group_assign",
    "hash_split",
    "random_assign",
    "strata_cuts",
    "strata_histogram",
    "stratified_assign",
]

SPLITS = ("train", "valid", "test")
STRATA_BUCKETS = 1 << 12
_SPLIT_COLUMN = "__raymlops_split"


def check_fractions(fractions: Sequence[float], key: str = "features.split.fractions") -> tuple[float, ...]:
    """Three positive fractions (train, valid, test) that sum to 1."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3:
        raise ConfigError(
            key, f"{list(values)} must have 3 values: train, valid and test, e.g. [0.8, 0.1, 0.1]."
        )
    if any(not math.isfinite(f) or f <= 0 for f in values):
        raise ConfigError(key, f"{list(values)}: every fraction must be > 0 (each split needs rows).")
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ConfigError(key, f"{list(values)} sums to {sum(values):.6g}; the fractions must sum to 1.")
    return values


def _unit(hashes: np.ndarray) -> np.ndarray:
    """64-bit hashes as floats in [0, 1) (the top 53 bits: exact in a double)."""
    return (hashes >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _by_edges(unit: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    edges = np.cumsum(fractions)[:-1]
    return np.searchsorted(edges, unit, side="right").astype(np.int8)


def random_assign(batch: pa.Table, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Each row's split index (0 train, 1 valid, 2 test) from its content hash."""
    return _by_edges(_unit(row_hashes(batch, seed)), fractions)


def group_assign(batch: pa.Table, column: str, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Each row's split index from the hash of its group value: a group's rows share one split."""
    return _by_edges(_unit(row_hashes(batch, seed, [column])), fractions)


def _buckets(batch: pa.Table, seed: int) -> np.ndarray:
    return (row_hashes(batch, seed) >> np.uint64(64 - 12)).astype(np.int64)


def strata_histogram(batch: pa.Table, label: str, seed: int) -> pa.Table:
    """Pass 1 on one block: (class, bucket, rows) for every bucket that holds rows of a class."""
    buckets = _buckets(batch, seed)
    encoded = pc.dictionary_encode(batch[label]).combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    pairs, rows = np.unique(codes.astype(np.int64) * STRATA_BUCKETS + buckets, return_counts=True)
    return pa.table(
        {
            "class": encoded.dictionary.take(pa.array(pairs // STRATA_BUCKETS)),
            "bucket": pa.array(pairs % STRATA_BUCKETS, pa.int32()),
            "rows": pa.array(rows, pa.int64()),
        }
    )


def strata_cuts(histograms: dict[Any, np.ndarray], fractions: Sequence[float]) -> dict[Any, tuple[int, int]]:
    """Per class, the two bucket cut points whose cumulative rows are closest to the fractions' targets."""
    cuts = {}
    for value, counts in histograms.items():
        before = np.concatenate([[0], np.cumsum(counts)])  # rows in buckets < b, for b = 0..BUCKETS
        targets = np.cumsum(fractions)[:-1] * before[-1]
        first, second = (int(np.abs(before - t).argmin()) for t in targets)
        cuts[value] = (first, max(first, second))
    return cuts


def stratified_assign(batch: pa.Table, label: str, seed: int, cuts: dict[Any, tuple[int, int]]) -> np.ndarray:
    """Pass 2 on one block: each row's split index from its class's cut points."""
    classes = list(cuts)
    index = pc.index_in(batch[label], value_set=pa.array(classes, batch.schema.field(label).type))
    codes = index.to_numpy(zero_copy_only=False)
    if np.isnan(codes.astype(np.float64)).any():
        raise ValueError(f"a value of {label!r} was not seen in the split's first pass")
    codes = codes.astype(np.int64)
    first = np.array([cuts[c][0] for c in classes])[codes]
    second = np.array([cuts[c][1] for c in classes])[codes]
    buckets = _buckets(batch, seed)
    return ((buckets >= first).astype(np.int8) + (buckets >= second)).astype(np.int8)


def _tag(batch: pa.Table, assign: Any) -> pa.Table:
    return batch.append_column(_SPLIT_COLUMN, pa.array(assign(batch), pa.int8()))


def _only(batch: pa.Table, index: int) -> pa.Table:
    return batch.filter(pc.equal(batch[_SPLIT_COLUMN], index)).drop_columns([_SPLIT_COLUMN])


def _strata(ds: Any, label: str, seed: int) -> dict[Any, np.ndarray]:
    """Pass 1 over the whole dataset, streamed: one histogram per class, summed in this process."""
    histograms: dict[Any, np.ndarray] = {}
    for part in frame(ds).partials(partial(strata_histogram, label=label, seed=seed)):
        for value, bucket, rows in zip(
            *(part[c].to_pylist() for c in ("class", "bucket", "rows")), strict=True
        ):
            histograms.setdefault(value, np.zeros(STRATA_BUCKETS, np.int64))[bucket] += rows
    return histograms


def hash_split(
    ds: Any,
    kind: str,
    fractions: Sequence[float],
    seed: int,
    *,
    label: str | None = None,
    group_column: str | None = None,
) -> tuple[Any, Any, Any]:
    """(train, valid, test) of a ``ray.data.Dataset`` (or a pyarrow Table) by ``kind``: random, stratified
    (by ``label``) or group (by ``group_column``). Datasets come back lazy; the tagged rows are
    materialized once."""
    fractions = check_fractions(fractions)
    if kind == "random":
        assign: Any = partial(random_assign, fractions=fractions, seed=seed)
    elif kind == "group":
        if not group_column:
            raise ConfigError("features.split.group_column", "is required with features.split.kind=group.")
        assign = partial(group_assign, column=group_column, fractions=fractions, seed=seed)
    elif kind == "stratified":
        if not label:
            raise ConfigError("features.split.kind", "stratified needs a label column to stratify by.")
        cuts = strata_cuts(_strata(ds, label, seed), fractions)
        assign = partial(stratified_assign, label=label, seed=seed, cuts=cuts)
    else:
        raise ConfigError(
            "features.split.kind", f"{kind!r} is not a hash split.", ["random", "stratified", "group"]
        )
    tagged = frame(ds).map(partial(_tag, assign=assign)).materialize()
    return tuple(tagged.map(partial(_only, index=i)).data for i in range(len(SPLITS)))
