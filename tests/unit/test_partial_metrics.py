"""The tasks' metric partials (raymlops.tasks.partial_metrics): rows cut into uneven blocks, partials
merged, against ``Task.metrics`` on all the rows at once: exact metrics to summation order, the binned AUC
within the bound computed from its histograms."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

from raymlops.tasks.binary import BinaryTask
from raymlops.tasks.multiclass import MulticlassTask
from raymlops.tasks.partial_metrics import AUC_BINS, binned_auc, binned_auc_max_error, score_histograms
from raymlops.tasks.regression import RegressionTask


def _merged(task, y: np.ndarray, pred: np.ndarray, cuts=(0, 7, 300, 301, 2_000)) -> dict:
    edges = [*cuts, len(y)]
    parts = [task.metric_partials(y[a:b], pred[a:b]) for a, b in itertools.pairwise(edges)]
    return functools.reduce(task.merge_partials, parts)


def _check(task, y: np.ndarray, pred: np.ndarray) -> dict:
    exact, parts = task.metrics(y, pred, "test"), None
    parts = _merged(task, y, pred)
    merged, bounds = task.metrics_from_partials(parts, "test"), task.metric_bounds(parts, "test")
    assert set(merged) == set(exact)
    for name, value in exact.items():
        if name in bounds:
            assert abs(merged[name] - value) <= bounds[name] + 1e-12, name
        else:
            assert merged[name] == pytest.approx(value, rel=1e-9, nan_ok=True), name
    return bounds


def test_binary_partials_and_the_binned_auc_bound() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(5_000) < 0.3).astype(np.float64)
    # Scores on a 1/64 grid: many tied pairs, each tie in a bin of its own score only: true ties, exact.
    grid = np.round(np.clip(0.3 * y + rng.random(5_000) * 0.7, 0, 1) * 64) / 64
    assert _check(BinaryTask(threshold=0.0), y, grid) == {"test/auc": 0.0}
    # Jittered within their bins (1e-6 << 1/2^14): the binned AUC errs, within its computed bound.
    jittered = np.clip(grid + rng.random(5_000) * 1e-6, 0, 1)
    exact = BinaryTask(threshold=0.0).metrics(y, jittered, "test")["test/auc"]
    bounds = _check(BinaryTask(threshold=0.0), y, jittered)
    binned = BinaryTask(threshold=0.0).metrics_from_partials(
        _merged(BinaryTask(threshold=0.0), y, jittered), "t"
    )
    assert 0 < abs(binned["t/auc"] - exact) <= bounds["test/auc"] < 0.02
    # Continuous scores: few pairs share one of the 2^14 bins, the bound is tiny.
    fine = _check(BinaryTask(threshold=0.0), y, rng.random(5_000))
    assert fine["test/auc"] < 1e-3
    hist = score_histograms(np.array([0.0, 1.0]), np.array([0.5, 0.5]))
    assert hist.shape == (2, AUC_BINS) and binned_auc(hist) == 0.5 and binned_auc_max_error(hist) == 0.5
    # A constant prediction (the baseline's): one score, true ties, no error.
    constant = BinaryTask(threshold=0.0).metric_partials(y, np.full(5_000, 0.3))
    assert BinaryTask(threshold=0.0).metric_bounds(constant, "t") == {"t/auc": 0.0}


def test_multiclass_partials_with_a_class_never_answered() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 3_000).astype(np.float64)  # class 2 never true either: F1 0 by zero_division
    proba = rng.dirichlet([2, 2, 0.05], 3_000)  # class 2 is almost never the likeliest
    proba[:, 2] = 1e-6  # never answered: its F1 is 0 (zero_division), still in the macro average
    proba /= proba.sum(axis=1, keepdims=True)
    assert _check(MulticlassTask(classes=("a", "b", "c")), y, proba.astype(np.float32)) == {}


def test_regression_partials_far_from_zero() -> None:
    rng = np.random.default_rng(3)
    y = 1e9 + rng.normal(size=4_000)  # Σy² - (Σy)²/n would cancel to noise here
    pred = y + rng.normal(scale=0.3, size=4_000)
    assert _check(RegressionTask(), y, pred) == {}
    assert (
        RegressionTask().metrics_from_partials(RegressionTask().metric_partials(y[:0], pred[:0]), "t")[
            "t/rows"
        ]
        == 0.0
    )
