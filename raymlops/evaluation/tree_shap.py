"""Exact Tree SHAP of an XGBoost booster, summed from one-hot features to raw input columns.

The XGBoost family hands it out as its ``global_explainer`` (raymlops.models.family); the pipeline's
explain stage uses it for the global summary. No background: path-dependent Tree SHAP, whose base value
is the training data's mean margin. Additive: ``values.sum(1) + base_values == margin``, in the task's
tree space (``Task.shap_spaces["tree"]``): binary log-odds, multiclass the softmax margin of each class
(values [rows, columns, classes]), regression the value itself.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from raymlops.evaluation.explanation import Explanation, require_columns
from raymlops.features.preprocess import FittedPreprocessor

if TYPE_CHECKING:
    from raymlops.tasks.base import Task

__all__ = ["TreeShap"]


class TreeShap:
    """Exact Tree SHAP of an XGBoost model in its margin space, summed from one-hot columns to raw ones."""

    method = "tree"

    def __init__(self, booster: Any, pre: FittedPreprocessor, task: Task | None = None) -> None:
        """``booster``: a fitted ``xgboost.Booster`` on ``pre``'s feature matrix; ``task`` (None: the
        flights binary task) says the output's shape and space."""
        import shap

        from raymlops.tasks.codec import LEGACY_TASK

        self.booster, self.pre = booster, pre
        self.task = task if task is not None else LEGACY_TASK
        self.width = self.task.output().width
        self.output_space = self.task.shap_spaces["tree"]
        self.classes = tuple(str(c) for c in getattr(self.task, "classes", ())) if self.width > 1 else ()
        # No background: path-dependent Tree SHAP, whose base value is the training data's mean margin.
        self._explainer = shap.TreeExplainer(booster)
        index = {name: j for j, name in enumerate(pre.feature_names)}
        self._groups: dict[str, list[int]] = {name: [index[name]] for name in pre.numeric}
        for column, values in zip(pre.categorical, pre.categories, strict=True):
            self._groups[column] = [index[f"{column}={v}"] for v in values]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.pre.input_columns)

    def explain(self, table: pa.Table) -> Explanation:
        import xgboost

        require_columns(table, self.pre.input_columns)
        started = time.perf_counter()
        rows = table.num_rows
        features = self.pre.transform(table)
        raw = self._explainer.shap_values(features)
        if isinstance(raw, list):  # older shap: one [rows, features] array per class
            raw = np.stack(raw, axis=-1)
        contributions = np.asarray(raw, dtype=np.float64).reshape(rows, features.shape[1], self.width)
        values = np.zeros((rows, len(self._groups), self.width), dtype=np.float64)
        for j, positions in enumerate(self._groups.values()):
            if positions:
                values[:, j, :] = contributions[:, positions, :].sum(axis=1)
        base = np.ravel(np.asarray(self._explainer.expected_value, dtype=np.float64))[: self.width]
        margin = np.asarray(self.booster.predict(xgboost.DMatrix(features), output_margin=True), np.float64)
        if self.width == 1:
            return Explanation(
                values=values[:, :, 0],
                base_values=np.full(rows, base[0]),
                predictions=margin.reshape(-1),
                columns=self.columns,
                method=self.method,
                output_space=self.output_space,
                seconds=time.perf_counter() - started,
            )
        return Explanation(
            values=values,
            base_values=np.tile(base, (rows, 1)),
            predictions=margin.reshape(rows, self.width),
            columns=self.columns,
            method=self.method,
            output_space=self.output_space,
            seconds=time.perf_counter() - started,
            classes=self.classes,
        )
