"""SHAP values of some rows over the raw input columns, and their global summary.

What every explainer returns (:class:`Explanation`), whatever its method: one value per raw input column
(``carrier``, never the one-hot ``carrier=AA``) and row, so a summary reads in the data's own terms and a
per-request answer matches what the client sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from raymlops.errors import RequestError

__all__ = ["Explanation", "GlobalShap", "global_shap", "require_columns"]


def require_columns(table: pa.Table, input_columns: Mapping[str, str], what: str = "table") -> None:
    """A :class:`RequestError` unless ``table`` has rows and every input column."""
    missing = [c for c in input_columns if c not in table.column_names]
    if missing:
        raise RequestError(f"{what}: missing input column(s): {', '.join(missing)}")
    if table.num_rows == 0:
        raise RequestError(f"{what} has no rows.")


@dataclass(frozen=True)
class Explanation:
    """SHAP values of some rows: ``values.sum(1) + base_values == predictions`` (in ``output_space``)."""

    values: np.ndarray  # float64 [rows, columns]
    base_values: np.ndarray  # float64 [rows]
    predictions: np.ndarray  # float64 [rows]: probability, or the margin for log_odds
    columns: tuple[str, ...]  # raw input columns, the order of values' columns
    method: str  # "permutation" | "tree"
    output_space: str  # "probability" | "log_odds"
    seconds: float  # wall time of the explanation

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    def records(self) -> list[dict[str, Any]]:
        """One JSON-able dict per row: prediction, base_value and ``shap`` (column -> value)."""
        return [
            {
                "prediction": float(self.predictions[i]),
                "base_value": float(self.base_values[i]),
                "shap": {c: float(v) for c, v in zip(self.columns, self.values[i], strict=True)},
            }
            for i in range(self.rows)
        ]


@dataclass(frozen=True)
class GlobalShap:
    """Mean |SHAP| per raw column over the explained rows, largest first."""

    mean_abs: dict[str, float]
    rows: int
    method: str  # "tree" | "permutation"
    output_space: str  # "log_odds" | "probability"
    base_value: float  # mean of the rows' base values
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "output_space": self.output_space,
            "rows": self.rows,
            "base_value": self.base_value,
            "seconds": self.seconds,
            "mean_abs": dict(self.mean_abs),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GlobalShap:
        return cls(
            mean_abs={str(k): float(v) for k, v in data["mean_abs"].items()},
            rows=int(data["rows"]),
            method=str(data["method"]),
            output_space=str(data["output_space"]),
            base_value=float(data["base_value"]),
            seconds=float(data["seconds"]),
        )


def global_shap(explanation: Explanation) -> GlobalShap:
    """The global summary of an :class:`Explanation`: mean |SHAP| per raw column, sorted descending."""
    means = np.abs(explanation.values).mean(axis=0)
    order = sorted(range(len(explanation.columns)), key=lambda j: (-means[j], explanation.columns[j]))
    return GlobalShap(
        mean_abs={explanation.columns[j]: float(means[j]) for j in order},
        rows=explanation.rows,
        method=explanation.method,
        output_space=explanation.output_space,
        base_value=float(np.mean(explanation.base_values)),
        seconds=explanation.seconds,
    )
