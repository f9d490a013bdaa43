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
    """SHAP values of some rows: ``values.sum(1) + base_values == predictions`` (in ``output_space``).

    One model output (binary, regression): ``values`` [rows, columns], ``base_values`` and ``predictions``
    [rows]. A multiclass model has an output per class: ``values`` [rows, columns, classes],
    ``base_values`` and ``predictions`` [rows, classes], and ``classes`` names them (as strings).
    """

    values: np.ndarray  # float64 [rows, columns] or [rows, columns, classes]
    base_values: np.ndarray  # float64 [rows] or [rows, classes]
    predictions: np.ndarray  # float64 [rows] or [rows, classes], in output_space
    columns: tuple[str, ...]  # raw input columns, the order of values' columns
    method: str  # "permutation" | "tree"
    output_space: str  # "probability" | "log_odds" | "margin" | "value"
    seconds: float  # wall time of the explanation
    classes: tuple[str, ...] = ()  # the outputs' class names when there is one output per class

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    def records(self) -> list[dict[str, Any]]:
        """One JSON-able dict per row: prediction, base_value and ``shap`` (column -> value); with one
        output per class each of them is keyed by class first (``shap``: class -> column -> value)."""
        if not self.classes:
            return [
                {
                    "prediction": float(self.predictions[i]),
                    "base_value": float(self.base_values[i]),
                    "shap": {c: float(v) for c, v in zip(self.columns, self.values[i], strict=True)},
                }
                for i in range(self.rows)
            ]
        return [
            {
                "prediction": _by_class(self.classes, self.predictions[i]),
                "base_value": _by_class(self.classes, self.base_values[i]),
                "shap": {
                    name: {c: float(v) for c, v in zip(self.columns, self.values[i, :, k], strict=True)}
                    for k, name in enumerate(self.classes)
                },
            }
            for i in range(self.rows)
        ]


def _by_class(classes: tuple[str, ...], values: np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(classes, values, strict=True)}


@dataclass(frozen=True)
class GlobalShap:
    """Mean |SHAP| per raw column over the explained rows, largest first.

    With one output per class, ``mean_abs`` sums the classes' mean |SHAP| (a column's total pull on the
    answer), ``per_class`` keeps each class's, and ``base_values`` each class's mean base value.
    """

    mean_abs: dict[str, float]
    rows: int
    method: str  # "tree" | "permutation"
    output_space: str  # "log_odds" | "probability" | "margin" | "value"
    base_value: float  # mean of the rows' base values (over classes too)
    seconds: float
    per_class: dict[str, dict[str, float]] | None = None  # class -> column -> mean |SHAP|
    base_values: dict[str, float] | None = None  # class -> mean base value

    @property
    def aggregation(self) -> str:
        """How ``mean_abs`` was made, in words (the model card and the log say it)."""
        if self.per_class:
            return f"mean |SHAP| summed over the {len(self.per_class)} classes"
        return "mean |SHAP|"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "output_space": self.output_space,
            "rows": self.rows,
            "base_value": self.base_value,
            "seconds": self.seconds,
            "mean_abs": dict(self.mean_abs),
        }
        if self.per_class is not None:
            out["aggregation"] = self.aggregation
            out["per_class"] = {k: dict(v) for k, v in self.per_class.items()}
            out["base_values"] = dict(self.base_values or {})
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GlobalShap:
        per_class = data.get("per_class")
        return cls(
            mean_abs={str(k): float(v) for k, v in data["mean_abs"].items()},
            rows=int(data["rows"]),
            method=str(data["method"]),
            output_space=str(data["output_space"]),
            base_value=float(data["base_value"]),
            seconds=float(data["seconds"]),
            per_class={str(k): {str(c): float(v) for c, v in m.items()} for k, m in per_class.items()}
            if per_class
            else None,
            base_values={str(k): float(v) for k, v in data["base_values"].items()}
            if data.get("base_values")
            else None,
        )


def global_shap(explanation: Explanation) -> GlobalShap:
    """The global summary of an :class:`Explanation`: mean |SHAP| per raw column, sorted descending;
    with one output per class, summed over the classes (and kept per class)."""
    means = np.abs(explanation.values).mean(axis=0)  # [columns] or [columns, classes]
    per_class = None
    base_values = None
    if explanation.classes:
        per_class = {
            name: {c: float(means[j, k]) for j, c in enumerate(explanation.columns)}
            for k, name in enumerate(explanation.classes)
        }
        base_values = _by_class(explanation.classes, np.mean(explanation.base_values, axis=0))
        means = means.sum(axis=1)
    order = sorted(range(len(explanation.columns)), key=lambda j: (-means[j], explanation.columns[j]))
    return GlobalShap(
        mean_abs={explanation.columns[j]: float(means[j]) for j in order},
        rows=explanation.rows,
        method=explanation.method,
        output_space=explanation.output_space,
        base_value=float(np.mean(explanation.base_values)),
        seconds=explanation.seconds,
        per_class=per_class,
        base_values=base_values,
    )
