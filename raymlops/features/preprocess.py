"""The fitted preprocessing chain: mean-impute + standardise numerics, one-hot categoricals.

Fitted on the train split only (from ``raymlops.data.stats``), applied to every split with Ray Data,
and exported into the same ONNX graph as the model (``raymlops.features.onnx_graph``), so serving
runs exactly this transform. Arithmetic is float32 on both sides, so the two agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlops.data.stats import TableStats
from raymlops.errors import ConfigError, RequestError

__all__ = ["FittedPreprocessor", "fit_preprocessor"]


@dataclass(frozen=True)
class FittedPreprocessor:
    numeric: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]  # 1.0 where the train std is 0, so constant columns map to 0
    categorical: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]  # per categorical column; unknown values encode as all zeros

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric)
        for column, values in zip(self.categorical, self.categories, strict=True):
            names += [f"{column}={v}" for v in values]
        return names

    @property
    def num_features(self) -> int:
        return len(self.numeric) + sum(len(c) for c in self.categories)

    @property
    def input_columns(self) -> dict[str, str]:
        """Raw columns the transform (and the served ONNX graph) takes, with their wire type."""
        return {**dict.fromkeys(self.numeric, "float"), **dict.fromkeys(self.categorical, "string")}

    def transform(self, table: pa.Table) -> np.ndarray:
        """Raw columns -> float32 feature matrix [rows, num_features]."""
        missing = [c for c in self.input_columns if c not in table.column_names]
        if missing:
            raise RequestError(f"missing input column(s): {', '.join(missing)}")
        parts = []
        if self.numeric:
            raw = np.column_stack([numeric_column(table[c]) for c in self.numeric]).astype(np.float32)
            means = np.asarray(self.means, dtype=np.float32)
            filled = np.where(np.isnan(raw), means, raw)
            parts.append((filled - means) / np.asarray(self.stds, dtype=np.float32))
        for column, values in zip(self.categorical, self.categories, strict=True):
            index = pc.index_in(pc.cast(table[column], pa.string()), value_set=pa.array(values, pa.string()))
            codes = index.to_numpy(zero_copy_only=False)
            onehot = np.zeros((table.num_rows, len(values)), dtype=np.float32)
            known = ~np.isnan(codes.astype(np.float64))
            onehot[np.flatnonzero(known), codes[known].astype(np.int64)] = 1.0
            parts.append(onehot)
        return np.hstack(parts) if parts else np.zeros((table.num_rows, 0), dtype=np.float32)


def numeric_column(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A numeric column as float32 with nulls as NaN (the ONNX graph imputes NaN the same way)."""
    return pc.cast(column, pa.float32()).to_numpy(zero_copy_only=False).astype(np.float32)


def fit_preprocessor(
    stats: TableStats, numeric: list[str], categorical: list[str], *, max_categories: int, min_frequency: int
) -> FittedPreprocessor:
    """Fit from train-split statistics: means/stds of numerics, the frequent values of categoricals."""
    for name in [*numeric, *categorical]:
        if name not in stats:
            raise ConfigError("features", f"feature column {name!r} is not in the data.", stats)
    for name in numeric:
        if stats[name].kind != "numeric":
            raise ConfigError("features.numeric", f"column {name!r} is {stats[name].kind}, not numeric.")
    categories = []
    for name in categorical:
        # Exact counts, or in sketch form the values surely >= min_frequency (ColumnStats.frequent).
        frequent = [(n, v) for v, n in stats[name].frequent(min_frequency).items()]
        frequent.sort(key=lambda item: (-item[0], item[1]))
        categories.append(tuple(sorted(v for _, v in frequent[:max_categories])))
    return FittedPreprocessor(
        numeric=tuple(numeric),
        means=tuple(stats[c].mean for c in numeric),
        stds=tuple(stats[c].std or 1.0 for c in numeric),
        categorical=tuple(categorical),
        categories=tuple(categories),
    )
