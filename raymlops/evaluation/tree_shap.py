"""Exact Tree SHAP of an XGBoost booster, summed from one-hot features to raw input columns.

The XGBoost family hands it out as its ``global_explainer`` (raymlops.models.family); the pipeline's
explain stage uses it for the global summary. No background: path-dependent Tree SHAP, whose base value
is the training data's mean margin. Additive: ``values.sum(1) + base_values == margin``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from raymlops.evaluation.explanation import Explanation, require_columns
from raymlops.features.preprocess import FittedPreprocessor

__all__ = ["TreeShap"]


class TreeShap:
    """Exact Tree SHAP of an XGBoost model in log-odds space, summed from one-hot features to raw columns."""

    method = "tree"
    output_space = "log_odds"

    def __init__(self, booster: Any, pre: FittedPreprocessor) -> None:
        """``booster``: a fitted ``xgboost.Booster`` on ``pre``'s feature matrix."""
        import shap

        self.booster, self.pre = booster, pre
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
        features = self.pre.transform(table)
        contributions = np.asarray(self._explainer.shap_values(features), dtype=np.float64)
        contributions = contributions.reshape(table.num_rows, -1)
        values = np.zeros((table.num_rows, len(self._groups)), dtype=np.float64)
        for j, positions in enumerate(self._groups.values()):
            if positions:
                values[:, j] = contributions[:, positions].sum(axis=1)
        base = float(np.ravel(self._explainer.expected_value)[0])
        margin = self.booster.predict(xgboost.DMatrix(features), output_margin=True)
        return Explanation(
            values=values,
            base_values=np.full(table.num_rows, base),
            predictions=np.asarray(margin, dtype=np.float64).reshape(-1),
            columns=self.columns,
            method=self.method,
            output_space=self.output_space,
            seconds=time.perf_counter() - started,
        )
