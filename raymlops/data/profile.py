"""The reference profile of a data version: what drift is measured against, a few KB as JSON.

Built from the one statistics pass (:func:`raymlops.data.stats.compute_stats` or ``table_stats``), so
profiling costs no extra read of the data. Numeric and timestamp features keep 101 quantiles and a
histogram on the reference deciles; categorical features keep their top categories.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raymlops.data.sketch import QuantileSketch, polyline_cdf
from raymlops.data.stats import ColumnStats, TableStats
from raymlops.errors import ConfigError

__all__ = ["OTHER", "QUANTILE_LEVELS", "FeatureProfile", "Profile"]

QUANTILE_LEVELS = np.linspace(0.0, 1.0, 101)  # 0, 0.01, ..., 1; the deciles are every tenth
MAX_DISCRETE = 64  # a numeric column with at most this many distinct values gets one bin per value
TOP_CATEGORIES = 50
OTHER = "__other__"  # the categories beyond the top ones, as one bin


def _compact(value: float) -> float:
    """A short JSON number: integers as ints, others to 7 significant digits (finer than the rank error)."""
    value = float(value)
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    return float(f"{value:.7g}")


def _optional(value: float | None) -> float | None:
    """Like :func:`_compact`, but None for a missing or non-finite value (JSON has no NaN)."""
    return _compact(value) if value is not None and np.isfinite(value) else None


def _fraction(value: float) -> float:
    return float(f"{float(value):.5g}")


@dataclass(frozen=True)
class FeatureProfile:
    """The profile of one feature. Numeric and timestamp (as epoch seconds) fill the first group,
    categorical the second.

    Histogram bins are right-closed: ``(-inf, e0], (e0, e1], ..., (e_last, inf)``, so ``bin_fractions``
    has one more entry than ``bin_edges``. Continuous features use the deduplicated reference deciles as
    edges; ``discrete`` ones (at most 64 distinct values) use the values themselves.
    """

    kind: str  # numeric | timestamp | categorical
    count: int  # non-null values
    null_fraction: float
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: list[float] | None = None  # at QUANTILE_LEVELS
    discrete: bool = False
    bin_edges: list[float] | None = None
    bin_fractions: list[float] | None = None
    frequencies: dict[str, float] | None = None  # top categories + OTHER, fractions of non-null values
    distinct: int | None = None
    distinct_estimated: bool | None = None  # True: ``distinct`` is an HLL estimate (value_counts.py)

    @property
    def numeric(self) -> bool:
        return self.kind != "categorical"

    @property
    def complete(self) -> bool:
        """Whether ``frequencies`` lists every category (so a category not in it was never seen)."""
        return self.distinct is not None and self.distinct <= TOP_CATEGORIES

    def knots(self) -> tuple[np.ndarray, np.ndarray]:
        """The CDF model as a polyline: exact steps for discrete features, else through the quantiles."""
        if self.discrete and self.bin_edges is not None and self.bin_fractions is not None:
            values = np.asarray(self.bin_edges, dtype=np.float64)
            fractions = np.asarray(self.bin_fractions[: len(values)], dtype=np.float64)
            cum = np.cumsum(fractions) / max(float(fractions.sum()), 1e-12)
            probs = np.empty(2 * len(cum))
            probs[0::2], probs[1::2] = np.concatenate(([0.0], cum[:-1])), cum
            return np.repeat(values, 2), probs
        return np.asarray(self.quantiles or [], dtype=np.float64), QUANTILE_LEVELS

    def cdf(self, xs: Any, *, left: bool = False) -> np.ndarray:
        """P(X <= x) (``left``: P(X < x)) under the profile's model; rank error <= 1 % plus the sketch's."""
        return polyline_cdf(*self.knots(), xs, left=left)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and not (k == "discrete" and not v)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureProfile:
        return cls(**data)


def _numeric_profile(kind: str, stats: ColumnStats, sketch: QuantileSketch) -> FeatureProfile:
    base: dict[str, Any] = {
        "kind": kind,
        "count": sketch.count,
        "null_fraction": _fraction(stats.null_fraction),
    }
    if sketch.count == 0:
        return FeatureProfile(**base)
    if kind == "numeric":
        base.update(mean=_optional(stats.mean), std=_optional(stats.std))
    quantiles = np.array([_compact(q) for q in sketch.quantiles(QUANTILE_LEVELS)])
    discrete = sketch.exact and sketch.values is not None and len(sketch.values) <= MAX_DISCRETE
    if discrete:
        assert sketch.values is not None and sketch.counts is not None
        edges = sketch.values
        fractions = np.append(sketch.counts / sketch.count, 0.0)
    else:
        # Fractions from the same 101-quantile model a current profile is read with (drift.py), so two
        # profiles of the same data have PSI and KS exactly 0.
        edges = np.unique(quantiles[10:100:10])
        fractions = np.diff(np.concatenate(([0.0], polyline_cdf(quantiles, QUANTILE_LEVELS, edges), [1.0])))
    return FeatureProfile(
        **base,
        min=_optional(sketch.min),
        max=_optional(sketch.max),
        quantiles=quantiles.tolist(),
        discrete=bool(discrete),
        bin_edges=[_compact(e) for e in edges],
        bin_fractions=[_fraction(f) for f in fractions],
    )


def _categorical_profile(stats: ColumnStats) -> FeatureProfile:
    # Sketch form (more than validate.max_exact_distinct values): estimated top counts, within 0.17 % of
    # the rows, and an estimated distinct count (distinct_estimated).
    non_null = sum(stats.counts.values()) if stats.exact else stats.non_null
    top = stats.top(TOP_CATEGORIES)
    frequencies = {str(name): _fraction(count / non_null) for name, count in top} if non_null else {}
    shown = sum(count for _, count in top)
    frequencies[OTHER] = _fraction((non_null - shown) / non_null) if non_null else 0.0
    return FeatureProfile(
        kind="categorical",
        count=non_null,
        null_fraction=_fraction(stats.null_fraction),
        frequencies=frequencies,
        distinct=stats.distinct,
        distinct_estimated=None if stats.exact else True,
    )


@dataclass(frozen=True)
class Profile:
    """The reference profile of one data version: per-feature distributions, JSON-able."""

    data_version: str
    rows: int
    columns: dict[str, FeatureProfile] = field(default_factory=dict)

    @classmethod
    def from_stats(
        cls, stats: TableStats, rows: int, data_version: str, columns: list[str] | None = None
    ) -> Profile:
        """Profile the named (default: all numeric, timestamp and string) columns of ``stats``."""
        names = columns if columns is not None else [n for n, s in stats.items() if s.kind != "other"]
        profiles: dict[str, FeatureProfile] = {}
        for name in names:
            column = stats.get(name)
            if column is None:
                known = ", ".join(sorted(stats))
                raise ConfigError("profile.columns", f"no statistics for column {name!r}; known: {known}.")
            if column.kind == "string":
                profiles[name] = _categorical_profile(column)
            elif column.kind in ("numeric", "timestamp"):
                if column.sketch is None:
                    raise ValueError(
                        f"Column {name!r} has no quantile sketch; compute its statistics with "
                        "raymlops.data.stats.table_stats or compute_stats."
                    )
                profiles[name] = _numeric_profile(
                    column.kind, column, QuantileSketch.from_dict(column.sketch)
                )
            else:
                raise ConfigError(
                    "profile.columns", f"column {name!r} has kind {column.kind!r}, which is not profiled."
                )
        return cls(data_version, int(rows), profiles)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_version": self.data_version,
            "rows": self.rows,
            "columns": {name: p.to_dict() for name, p in self.columns.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        columns = {name: FeatureProfile.from_dict(p) for name, p in data["columns"].items()}
        return cls(str(data["data_version"]), int(data["rows"]), columns)

    def save(self, path: str | Path) -> Path:
        """Write the profile as compact JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        from raymlops.security.crypto import write_sensitive

        # Top categories and quantiles are feature values: encrypted when encryption is on.
        return write_sensitive(path, json.dumps(self.to_dict(), separators=(",", ":")))

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        from raymlops.security.crypto import read_maybe_encrypted

        return cls.from_dict(json.loads(read_maybe_encrypted(path)))
