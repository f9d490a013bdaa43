"""A mergeable, JSON-able quantile sketch of one numeric column, built per block with numpy.

A sketch is a model of the column's CDF as a polyline through knots ``(x_i, F_i)``: linear between
knots, with a jump where knots repeat (a value carrying a point mass). Two forms:

- **exact** while there are at most ``MAX_EXACT`` (256) distinct values: value -> count, so discrete
  columns (month, hour, small integer codes) are represented exactly, ties included;
- **summary** above that: ``NUM_POINTS`` (513) points ``x_0 = min <= ... <= x_{K-1} = max`` at the
  ranks ``i / (K-1)``, i.e. the order statistics ``sorted[ceil(n i / (K-1)) - 1]``.

Rank-error bound (``EPSILON = 1/(K-1) = 1/512``): a summary built from data has
``|F_sketch(x) - F_data(x)| <= EPSILON`` for every ``x`` (between two consecutive points both lie in
``[i/(K-1), (i+1)/(K-1)]``). Merging evaluates the count-weighted mixture of the two model CDFs on the
union of their knots (exact: a mixture of polylines is a polyline on the union grid) and inverts it at the
K ranks, which adds at most ``EPSILON`` again; a merge that stays exact adds nothing. So a sketch merged
in a tree whose deepest path has ``d`` summary merges is within ``(d + 1) * EPSILON`` in rank (8 blocks
merged pairwise: ``4/512 ~ 0.8 %``); :meth:`QuantileSketch.quantiles` inherits the same rank error.
Merge in a balanced tree (as :func:`raymlops.data.stats.compute_dataset_stats` does): a left fold over
``B`` blocks has depth ``B - 1``. Measured: normal data, 8 blocks, 0.095 % (merges add almost nothing);
flights delays (integers with heavy ties), 8 blocks pairwise, 0.57 %.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["EPSILON", "MAX_EXACT", "NUM_POINTS", "QuantileSketch", "polyline_cdf", "polyline_inverse"]

MAX_EXACT = 256
NUM_POINTS = 513
EPSILON = 1.0 / (NUM_POINTS - 1)
_RANKS = np.linspace(0.0, 1.0, NUM_POINTS)


def polyline_cdf(knots: np.ndarray, probs: np.ndarray, xs: Any, *, left: bool = False) -> np.ndarray:
    """The polyline CDF through ``(knots, probs)`` at ``xs``: right-continuous, or its left limits.

    ``knots`` is sorted, ``probs`` non-decreasing from the first knot to 1 at the last; a repeated knot is
    a jump. Below the first knot the CDF is 0, from the last knot on it is 1.
    """
    xs = np.asarray(xs, dtype=np.float64)
    if len(knots) == 0:
        return np.zeros_like(xs)
    j = np.searchsorted(knots, xs, side="left" if left else "right") - 1
    inner = (j >= 0) & (j < len(knots) - 1)
    jj = np.clip(j, 0, len(knots) - 2) if len(knots) > 1 else np.zeros_like(j)
    out = np.where(j >= len(knots) - 1, 1.0, 0.0)
    if len(knots) > 1:
        x0, x1, p0, p1 = knots[jj], knots[jj + 1], probs[jj], probs[jj + 1]
        width = np.where(x1 > x0, x1 - x0, 1.0)
        out = np.where(inner, p0 + (xs - x0) / width * (p1 - p0), out)
    return np.clip(out, 0.0, 1.0)


def polyline_inverse(knots: np.ndarray, probs: np.ndarray, qs: Any) -> np.ndarray:
    """The smallest ``x`` with ``polyline_cdf(x) >= q`` for each ``q`` (``q = 0`` gives the first knot)."""
    qs = np.asarray(qs, dtype=np.float64)
    if len(knots) == 0:
        return np.full_like(qs, np.nan)
    k = np.clip(np.searchsorted(probs, qs, side="left"), 0, len(knots) - 1)
    prev = np.maximum(k - 1, 0)
    p0, p1, x0, x1 = probs[prev], probs[k], knots[prev], knots[k]
    step = np.where(p1 > p0, p1 - p0, 1.0)
    frac = np.clip((qs - p0) / step, 0.0, 1.0)
    return np.where(k == 0, knots[0], x0 + frac * (x1 - x0))


def _numeric_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Non-null values as numpy: timestamps and dates as int64 seconds (truncated), booleans as 0/1, NaN
    dropped."""
    dtype = values.type
    if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype):
        values = pc.cast(pc.cast(values, pa.timestamp("s"), safe=False), pa.int64())
    elif pa.types.is_boolean(dtype):
        values = pc.cast(values, pa.int8())
    elif pa.types.is_decimal(dtype):
        values = pc.cast(values, pa.float64())
    if values.null_count:
        values = pc.drop_null(values)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    array = values.to_numpy(zero_copy_only=False)
    if array.dtype.kind == "f":
        nan = np.isnan(array)
        if nan.any():
            array = array[~nan]
    return array


def _order_statistic_indices(n: int) -> np.ndarray:
    """0-based positions of the sorted values at the ranks ``i / (K-1)`` (inverted-CDF definition)."""
    return np.maximum(np.ceil(_RANKS * n - 1e-9).astype(np.int64), 1) - 1


class QuantileSketch:
    """Mergeable CDF/quantile summary of numeric values (see the module docstring for the error bound).

    Build one per block with :meth:`of`, combine with :meth:`merge`, ship as :meth:`to_dict`.
    """

    __slots__ = ("count", "counts", "points", "values")

    def __init__(
        self,
        count: int,
        *,
        values: np.ndarray | None = None,
        counts: np.ndarray | None = None,
        points: np.ndarray | None = None,
    ) -> None:
        self.count = int(count)
        self.values = values  # exact form: sorted distinct values ...
        self.counts = counts  # ... and their counts
        self.points = points  # summary form: NUM_POINTS values at ranks i / (K-1)

    # construction -----------------------------------------------------------------------------------
    @classmethod
    def of(cls, values: pa.Array | pa.ChunkedArray) -> QuantileSketch:
        """Sketch of a pyarrow array's non-null values, in O(n) for narrow integers, else one numpy sort."""
        return cls._of_numpy(_numeric_numpy(values))

    @classmethod
    def _of_numpy(cls, array: np.ndarray) -> QuantileSketch:
        n = len(array)
        if n == 0:
            return cls(0, values=np.empty(0), counts=np.empty(0, dtype=np.int64))
        if array.dtype.kind in "iu":
            lo, hi = int(array.min()), int(array.max())
            if hi - lo < 2 * n + 65_536:  # dense enough: counting beats sorting
                offset = 0 if 0 <= lo < 65_536 else lo  # skip the subtraction's copy where it costs little
                bins = np.bincount(array - offset if offset else array)[lo - offset :]
                present = np.flatnonzero(bins)
                if len(present) <= MAX_EXACT:
                    return cls(n, values=(present + lo).astype(np.float64), counts=bins[present])
                ranks = _order_statistic_indices(n) + 1
                positions = np.searchsorted(np.cumsum(bins), ranks, side="left")
                return cls(n, points=(positions + lo).astype(np.float64))
        # Data often arrives in time order; checking costs one pass, a sort several.
        ordered = array if bool(np.all(array[1:] >= array[:-1])) else np.sort(array)
        starts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
        if len(starts) < MAX_EXACT:
            starts = np.concatenate(([0], starts))
            counts = np.diff(np.append(starts, n))
            return cls(n, values=ordered[starts].astype(np.float64), counts=counts)
        return cls(n, points=ordered[_order_statistic_indices(n)].astype(np.float64))

    # the CDF model ----------------------------------------------------------------------------------
    @property
    def exact(self) -> bool:
        return self.points is None

    def _polyline(self) -> tuple[np.ndarray, np.ndarray]:
        if self.points is not None:
            return self.points, _RANKS
        assert self.values is not None and self.counts is not None
        cum = np.cumsum(self.counts) / max(self.count, 1)
        knots = np.repeat(self.values, 2)  # a jump at every value, flat in between
        probs = np.empty(2 * len(cum))
        probs[0::2] = np.concatenate(([0.0], cum[:-1]))
        probs[1::2] = cum
        return knots, probs

    @property
    def min(self) -> float | None:
        knots = self.points if self.points is not None else self.values
        return float(knots[0]) if knots is not None and len(knots) else None

    @property
    def max(self) -> float | None:
        knots = self.points if self.points is not None else self.values
        return float(knots[-1]) if knots is not None and len(knots) else None

    def cdf(self, xs: Any, *, left: bool = False) -> np.ndarray:
        """P(X <= x) for each x (``left=True``: P(X < x)); exact in the exact form."""
        return polyline_cdf(*self._polyline(), xs, left=left)

    def quantiles(self, qs: Any) -> np.ndarray:
        """The smallest x with ``cdf(x) >= q`` for each q; NaN for an empty sketch."""
        return polyline_inverse(*self._polyline(), qs)

    # merging ----------------------------------------------------------------------------------------
    def merge(self, other: QuantileSketch) -> QuantileSketch:
        """The sketch of both inputs' values together (a new sketch; the inputs are unchanged)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        total = self.count + other.count
        if self.counts is not None and other.counts is not None:  # both exact
            assert self.values is not None and other.values is not None
            values, inverse = np.unique(np.concatenate((self.values, other.values)), return_inverse=True)
            if len(values) <= MAX_EXACT:
                counts = np.bincount(inverse, weights=np.concatenate((self.counts, other.counts)))
                return QuantileSketch(total, values=values, counts=counts.astype(np.int64))
        grid = np.union1d(self._polyline()[0], other._polyline()[0])
        weight = self.count / total
        right = weight * self.cdf(grid) + (1 - weight) * other.cdf(grid)
        left = weight * self.cdf(grid, left=True) + (1 - weight) * other.cdf(grid, left=True)
        probs = np.empty(2 * len(grid))
        probs[0::2], probs[1::2] = left, right
        probs = np.maximum.accumulate(probs)  # guard against rounding in the weighted sum
        points = polyline_inverse(np.repeat(grid, 2), probs, _RANKS)
        points[0], points[-1] = grid[0], grid[-1]
        return QuantileSketch(total, points=points)

    # serialisation ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: ``{"count", "values", "counts"}`` (exact) or ``{"count", "points"}``."""
        if self.points is not None:
            return {"count": self.count, "points": self.points.tolist()}
        assert self.values is not None and self.counts is not None
        return {"count": self.count, "values": self.values.tolist(), "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantileSketch:
        if "points" in data:
            return cls(data["count"], points=np.asarray(data["points"], dtype=np.float64))
        return cls(
            data["count"],
            values=np.asarray(data["values"], dtype=np.float64),
            counts=np.asarray(data["counts"], dtype=np.int64),
        )

    def __repr__(self) -> str:
        form = "exact" if self.exact else "summary"
        return f"QuantileSketch({form}, count={self.count}, min={self.min}, max={self.max})"
