"""Small generated tables for every task, with a signal a model can learn and no time column.

Each has numeric features ``num_a``, ``num_b`` (with a few nulls), a string feature ``cat`` and the label
column ``target``; the same ``seed`` gives the same table. Tests of tasks, splits, training and serving
use them instead of the flights table when the shape of the problem is the point.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["binary_yes_no", "multiclass_strings", "regression_numbers", "table_overrides"]

CLASSES = ("bronze", "gold", "silver")


def _features(n: int, seed: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = rng.normal(size=n)
    cat = rng.choice(np.array(["x", "y", "z"]), size=n)
    return rng, a, b, cat


def _table(a: np.ndarray, b: np.ndarray, cat: np.ndarray, target: pa.Array, rng) -> pa.Table:
    b_nulls = rng.random(len(b)) < 0.02
    return pa.table(
        {
            "num_a": pa.array(a),
            "num_b": pa.array(np.where(b_nulls, np.nan, b), mask=b_nulls),
            "cat": pa.array(cat),
            "target": target,
        }
    )


def binary_yes_no(n: int = 2_000, seed: int = 0) -> pa.Table:
    """``target`` is "YES" (about 30% of rows) or "NO", driven by num_a, num_b and cat."""
    rng, a, b, cat = _features(n, seed)
    score = 1.5 * a - b + np.where(cat == "z", 1.0, 0.0) + rng.normal(scale=0.7, size=n)
    target = np.where(score > np.quantile(score, 0.7), "YES", "NO")
    return _table(a, b, cat, pa.array(target), rng)


def multiclass_strings(n: int = 2_000, seed: int = 0) -> pa.Table:
    """``target`` is one of :data:`CLASSES` (shares about 50 / 20 / 30%), driven by num_a and cat."""
    rng, a, b, cat = _features(n, seed)
    score = a + 0.5 * b + np.where(cat == "x", 0.8, 0.0) + rng.normal(scale=0.5, size=n)
    cuts = np.quantile(score, [0.5, 0.7])
    target = np.array(CLASSES)[np.searchsorted(cuts, score)]
    return _table(a, b, cat, pa.array(target), rng)


def regression_numbers(n: int = 2_000, seed: int = 0) -> pa.Table:
    """``target`` is a price-like number around 200 (float64): linear in num_a, num_b, plus cat."""
    rng, a, b, cat = _features(n, seed)
    target = 200.0 + 30.0 * a - 15.0 * b + np.where(cat == "y", 25.0, 0.0) + rng.normal(scale=5.0, size=n)
    return _table(a, b, cat, pa.array(target), rng)


def table_overrides(path: object) -> list[str]:
    """Config overrides that read one of these tables from the parquet file ``path``: its features, its
    label column ``target`` (no threshold: the task comes from the label) and a random split."""
    return [
        f"data.ref={path}",
        "data.source=null",
        "features.numeric=[num_a,num_b]",
        "features.categorical=[cat]",
        "features.forbidden=[]",
        "features.label.column=target",
        "features.label.threshold=null",
        "features.split.kind=random",
        "features.min_frequency=1",
    ]


def small_xgboost(features: object, rounds: int) -> object:
    """An XGBoost model of the task the features stage inferred, fitted in this process on its train split
    (a few rounds, one thread): what evaluation tests score without starting Ray Train."""
    import xgboost

    from raymlops.models.xgboost_model import XGBoostModel

    train = features.train.to_pandas()  # type: ignore[attr-defined]
    x, y = np.stack(train["x"].to_numpy()).astype(np.float32), train["y"].to_numpy()
    task = features.task  # type: ignore[attr-defined]
    params = {"objective": task.xgboost_objective, "max_depth": 3, "eta": 0.3, "nthread": 1}
    if task.output().width > 1:
        params["num_class"] = task.output().width
    model = XGBoostModel()
    model.booster_ = xgboost.train(params, xgboost.DMatrix(x, label=y), num_boost_round=rounds)
    model.num_features_ = features.preprocessor.num_features  # type: ignore[attr-defined]
    model.task_ = task
    return model
