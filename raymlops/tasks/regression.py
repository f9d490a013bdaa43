"""Regression: one number per row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlops.tasks.base import OutputSpec, Task, _check_same_shape, _mean_abs_diff, scatter_picture

__all__ = ["RegressionTask"]


@dataclass(frozen=True)
class RegressionTask(Task):
    """``huber``: the torch family trains with the Huber loss (robust to outliers in the target), else MSE."""

    huber: bool = False

    name: ClassVar[str] = "regression"
    torch_loss: ClassVar[str] = "mse"
    xgboost_objective: ClassVar[str] = "reg:squarederror"
    primary_metric: ClassVar[str] = "rmse"
    directions: ClassVar[dict[str, bool]] = {"rmse": False, "mae": False, "r2": True}

    def loss(self) -> str:
        return "huber" if self.huber else self.torch_loss

    def target(self, values: pa.Array) -> pa.Array:
        return pc.cast(values, pa.float32())

    def output(self) -> OutputSpec:
        return OutputSpec("value", 1)

    def metrics(self, y_true: np.ndarray, pred: np.ndarray, split: str) -> dict[str, float]:
        y, p = np.asarray(y_true, np.float64), np.asarray(pred, np.float64).reshape(-1)
        if not len(y):
            return {f"{split}/{m}": float("nan") for m in self.directions} | {f"{split}/rows": 0.0}
        error = p - y
        total = float(np.sum((y - y.mean()) ** 2))
        return {
            f"{split}/rmse": float(np.sqrt(np.mean(error**2))),
            f"{split}/mae": float(np.mean(np.abs(error))),
            f"{split}/r2": 1.0 - float(np.sum(error**2)) / total if total > 0 else float("nan"),
            f"{split}/rows": float(len(y)),
        }

    def baseline(self, y_train: np.ndarray) -> np.ndarray:
        return np.array([float(np.mean(y_train))])

    def answers(self, pred: np.ndarray, threshold: float | None = None) -> list[dict[str, Any]]:
        return [{"value": float(v)} for v in np.asarray(pred, np.float64).reshape(-1)]

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> RegressionTask:
        return cls(huber=description.get("loss") == "huber")

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "loss": self.loss()}

    shap_spaces: ClassVar[Mapping[str, str]] = {"tree": "value", "permutation": "value"}

    def champion_tolerance(self, split: str, champion: Mapping[str, float]) -> dict[str, float]:
        # RMSE is in the target's units: 2% of the champion's, not a fixed number.
        metric = f"{split}/{self.primary_metric}"
        return {metric: 0.02 * abs(float(champion.get(metric, float("nan"))))}

    def card_picture(self, y_true: np.ndarray, pred: np.ndarray) -> dict[str, Any] | None:
        return scatter_picture(y_true, pred)

    # Distributed evaluation (see Task and tasks/partial_metrics): error sums (exact up to summation order)
    # and the label's moments for R², merged with Chan's update; the scatter from a bounded sample.
    picture_sample_rows: ClassVar[int] = 500  # as scatter_picture's max_points

    def supports_partials(self) -> bool:
        return True

    def metric_partials(self, y_true: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
        y, p = np.asarray(y_true, np.float64).reshape(-1), np.asarray(pred, np.float64).reshape(-1)
        error = p - y
        mean = float(y.mean()) if len(y) else 0.0
        return {
            "rows": np.asarray(len(y), np.int64),
            "squared_error_sum": np.asarray(np.sum(error**2)),
            "abs_error_sum": np.asarray(np.sum(np.abs(error))),
            "y_n": np.asarray(len(y)),
            "y_mean": np.asarray(mean),
            "y_m2": np.asarray(np.sum((y - mean) ** 2)),
        }

    def merge_partials(self, a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, Any]:
        from raymlops.tasks.partial_metrics import add_partials, merge_moments

        moments = ("y_n", "y_mean", "y_m2")
        summed = add_partials(
            {k: v for k, v in a.items() if k not in moments}, {k: v for k, v in b.items() if k not in moments}
        )
        return summed | merge_moments(a, b, "y_")

    def metrics_from_partials(self, parts: Mapping[str, np.ndarray], split: str) -> dict[str, float]:
        rows = int(parts["rows"])
        if not rows:
            return {f"{split}/{m}": float("nan") for m in self.directions} | {f"{split}/rows": 0.0}
        squared, total = float(parts["squared_error_sum"]), float(parts["y_m2"])
        return {
            f"{split}/rmse": float(np.sqrt(squared / rows)),
            f"{split}/mae": float(parts["abs_error_sum"]) / rows,
            f"{split}/r2": 1.0 - squared / total if total > 0 else float("nan"),
            f"{split}/rows": float(rows),
        }

    def card_picture_from_partials(
        self, parts: Mapping[str, np.ndarray], sample: tuple[np.ndarray, np.ndarray] | None
    ) -> dict[str, Any] | None:
        actual, predicted = sample if sample is not None else (np.zeros(0), np.zeros(0))
        picture = scatter_picture(actual, predicted, max_points=self.picture_sample_rows)
        return picture | {"rows": int(parts["rows"])}  # every row's count; the points are a sample

    # Serving (see Task).
    agreement_tolerance: ClassVar[float] = 0.05  # shadow values within 5% of the served ones agree

    @classmethod
    def answer_schema(cls) -> dict[str, Any]:
        from raymlops.tasks.answers import RegressionAnswer, answer_row_schema

        return answer_row_schema(RegressionAnswer)

    def output_columns(self, pred: np.ndarray, threshold: float | None = None) -> dict[str, pa.Array]:
        return {"value": pa.array(np.asarray(pred, np.float32).reshape(-1), pa.float32())}

    def agreement(
        self,
        served: np.ndarray,
        shadow: np.ndarray,
        served_threshold: float | None = None,
        shadow_threshold: float | None = None,
    ) -> tuple[float, float]:
        # No label to agree on: values agree when within ``agreement_tolerance`` of each other
        # (relative to the larger); the mean absolute difference is in the target's units.
        _check_same_shape(served, shadow)
        a, b = np.asarray(served, np.float64), np.asarray(shadow, np.float64)
        close = np.abs(a - b) <= self.agreement_tolerance * np.maximum(np.abs(a), np.abs(b)) + 1e-9
        return float(np.mean(close)), _mean_abs_diff(a, b)
