"""A mergeable, JSON-able quantile sketch of one numeric column, built per block with numpy.

Three forms, told apart by their keys in :meth:`QuantileSketch.to_dict`:

- **exact** while there are at most ``MAX_EXACT`` (256) distinct values: value -> count, so discrete
  columns (month, hour, small integer codes) are represented exactly, ties included; merging two exact
  sketches stays exact while the union has at most 256 values;
- **kll** above that: Apache DataSketches' KLL sketch (``K = 400``), whose rank error does not grow with
  the number of merges: ``|F_sketch(x) - F_data(x)| <= EPSILON = 0.0068`` for any one ``x`` or rank,
  with 99 % confidence, whatever the merge tree (the hand-written polyline summary it replaces added up to
  ``1/512`` a merge level: about 2 % after 1,000 merged log files). KLL compacts at random, so two
  sketches of the same data can differ within that bound;
- **points** (read only): the polyline summary of raymlops <= 0.1 (``NUM_POINTS`` values at ranks
  ``i / 512``), so statistics and reports saved before still load; merged with anything it is turned
  into a KLL sketch.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["EPSILON", "MAX_EXACT", "NUM_POINTS", "K", "QuantileSketch", "polyline_cdf", "polyline_inverse"]

MAX_EXACT = 256
K = 400  # KLL's accuracy parameter: about 10 KB serialised, 3x less rank error than DataSketches' 200
# KLL's single-rank error at K, 99 % confidence: kll_doubles_sketch.get_normalized_rank_error(K, False).
EPSILON = 0.0068
NUM_POINTS = 513  # the read-only "points" form of older releases
_RANKS = np.linspace(0.0, 1.0, NUM_POINTS)
# Merging a non-KLL sketch with a KLL one feeds the KLL this many values at most (mid-rank quantiles of
# the exact or polyline model): 1/65,536 of rank error, where feeding every repeated value costs O(n).
_MAX_FEED = 65_536


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


def _new_kll() -> Any:
    from datasketches import kll_doubles_sketch

    return kll_doubles_sketch(K)


class QuantileSketch:
    """Mergeable CDF/quantile summary of numeric values (see the module docstring for the error bound).

    Build one per block with :meth:`of`, combine with :meth:`merge`, ship as :meth:`to_dict`.
    """

    __slots__ = ("_kll_blob", "count", "counts", "points", "values")

    def __init__(
        self,
        count: int,
        *,
        values: np.ndarray | None = None,
        counts: np.ndarray | None = None,
        points: np.ndarray | None = None,
        kll: Any = None,
        kll_blob: bytes | None = None,
    ) -> None:
        self.count = int(count)
        self.values = values  # exact form: sorted distinct values ...
        self.counts = counts  # ... and their counts
        self.points = points  # read-only older form: NUM_POINTS values at ranks i / (NUM_POINTS - 1)
        # The KLL form is kept serialized: a live datasketches object per column per block would outlive
        # the interpreter's teardown in a long job (nanobind then prints hundreds of "leaked instance"
        # lines at exit), and bytes pickle to Ray workers as they are. Deserializing costs microseconds.
        self._kll_blob = kll.serialize() if kll is not None else kll_blob

    @property
    def kll(self) -> Any:
        """The KLL form as a new ``datasketches.kll_doubles_sketch`` (None for the exact forms)."""
        if self._kll_blob is None:
            return None
        from datasketches import kll_doubles_sketch

        return kll_doubles_sketch.deserialize(self._kll_blob)

    # construction -----------------------------------------------------------------------------------
    @classmethod
    def of(cls, values: pa.Array | pa.ChunkedArray) -> QuantileSketch:
        """Sketch of a pyarrow array's non-null values: O(n) for narrow integers, else one numpy sort."""
        return cls._of_numpy(_numeric_numpy(values))

    @classmethod
    def _of_numpy(cls, array: np.ndarray) -> QuantileSketch:
        n = len(array)
        if n == 0:
            return cls(0, values=np.empty(0), counts=np.empty(0, dtype=np.int64))
        # Hand-written on purpose: telling a discrete column (<= 256 values) by counting or one sort is
        # what makes it exact, which KLL is not; only the rest goes to KLL.
        if array.dtype.kind in "iu":
            lo, hi = int(array.min()), int(array.max())
            if hi - lo < 2 * n + 65_536:  # dense enough: counting beats sorting
                offset = 0 if 0 <= lo < 65_536 else lo  # skip the subtraction's copy where it costs little
                bins = np.bincount(array - offset if offset else array)[lo - offset :]
                present = np.flatnonzero(bins)
                if len(present) <= MAX_EXACT:
                    return cls(n, values=(present + lo).astype(np.float64), counts=bins[present])
                return cls._of_kll(array)
        # Data often arrives in time order; checking costs one pass, a sort several.
        ordered = array if bool(np.all(array[1:] >= array[:-1])) else np.sort(array)
        starts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
        if len(starts) < MAX_EXACT:
            starts = np.concatenate(([0], starts))
            counts = np.diff(np.append(starts, n))
            return cls(n, values=ordered[starts].astype(np.float64), counts=counts)
        return cls._of_kll(ordered)

    @classmethod
    def _of_kll(cls, array: np.ndarray) -> QuantileSketch:
        kll = _new_kll()
        values = np.ascontiguousarray(array, dtype=np.float64)
        # DataSketches' binding takes only writable arrays; a sorted column read zero-copy from Arrow is
        # read-only (TypeError: "incompatible function arguments").
        kll.update(values if values.flags.writeable else values.copy())
        return cls(len(array), kll=kll)

    def _to_kll(self) -> Any:
        """A new KLL sketch of this sketch's values (a copy when it is one already)."""
        if self._kll_blob is not None:
            return self.kll  # already a new object
        kll = _new_kll()
        if self.count == 0:
            return kll
        if self.counts is not None and self.count <= _MAX_FEED:
            assert self.values is not None
            kll.update(np.repeat(self.values, self.counts))
            return kll
        fed = min(self.count, _MAX_FEED)
        quantiles = self.quantiles((np.arange(fed) + 0.5) / fed)
        bounds = np.round(np.linspace(0, self.count, fed + 1)).astype(np.int64)
        kll.update(np.repeat(quantiles, bounds[1:] - bounds[:-1]))  # the repeats sum to count
        return kll

    # the CDF model ----------------------------------------------------------------------------------
    @property
    def exact(self) -> bool:
        return self.counts is not None

    def _polyline(self) -> tuple[np.ndarray, np.ndarray]:
        """The exact or older form's CDF as a polyline (a jump at every exact value)."""
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
        if self._kll_blob is not None:
            return float(self.kll.get_min_value())
        knots = self.points if self.points is not None else self.values
        return float(knots[0]) if knots is not None and len(knots) else None

    @property
    def max(self) -> float | None:
        if self._kll_blob is not None:
            return float(self.kll.get_max_value())
        knots = self.points if self.points is not None else self.values
        return float(knots[-1]) if knots is not None and len(knots) else None

    def cdf(self, xs: Any, *, left: bool = False) -> np.ndarray:
        """P(X <= x) for each x (``left=True``: P(X < x)); exact in the exact form."""
        if self._kll_blob is None:
            return polyline_cdf(*self._polyline(), xs, left=left)
        xs = np.asarray(xs, dtype=np.float64)
        out = np.zeros(xs.shape)
        finite = ~np.isnan(xs)
        # KLL wants unique increasing split points; its last entry is the mass above the last one.
        points, inverse = np.unique(xs[finite], return_inverse=True)
        if len(points):
            ranks = np.asarray(self.kll.get_cdf(points.tolist(), not left)[:-1])
            out[finite] = ranks[inverse.reshape(-1)]
        return out

    def quantiles(self, qs: Any) -> np.ndarray:
        """The smallest x with ``cdf(x) >= q`` for each q; NaN for an empty sketch."""
        if self._kll_blob is None:
            return polyline_inverse(*self._polyline(), qs)
        qs = np.asarray(qs, dtype=np.float64)
        found = self.kll.get_quantiles(np.clip(qs, 0.0, 1.0).ravel().tolist(), True)
        return np.asarray(found, dtype=np.float64).reshape(qs.shape)

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
        # Merge into the larger KLL (the copy), feeding the other: a KLL merge costs O(K log n).
        big, small = (self, other) if self._kll_blob is not None or other._kll_blob is None else (other, self)
        kll = big._to_kll()
        kll.merge(small._to_kll())
        return QuantileSketch(total, kll=kll)

    # serialisation ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: ``{"count", "values", "counts"}`` (exact) or ``{"count", "kll"}``, where
        ``kll`` is the DataSketches binary form in base64 (readable by its Java and C++ libraries too)."""
        if self._kll_blob is not None:
            return {"count": self.count, "kll": base64.b64encode(self._kll_blob).decode("ascii")}
        if self.points is not None:
            return {"count": self.count, "points": self.points.tolist()}
        assert self.values is not None and self.counts is not None
        return {"count": self.count, "values": self.values.tolist(), "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantileSketch:
        if "kll" in data:
            return cls(data["count"], kll_blob=base64.b64decode(data["kll"]))
        if "points" in data:
            return cls(data["count"], points=np.asarray(data["points"], dtype=np.float64))
        return cls(
            data["count"],
            values=np.asarray(data["values"], dtype=np.float64),
            counts=np.asarray(data["counts"], dtype=np.int64),
        )

    def __reduce__(self) -> tuple[Any, ...]:  # the KLL object does not pickle; its bytes do
        return (QuantileSketch.from_dict, (self.to_dict(),))

    def __repr__(self) -> str:
        form = "exact" if self.exact else "kll" if self._kll_blob is not None else "points"
        return f"QuantileSketch({form}, count={self.count}, min={self.min}, max={self.max})"
