"""Pieces of the tasks' mergeable metric partials (``Task.metric_partials``): numpy only, no Ray.

A partial is a dict of numpy arrays computed on one block of held-out rows; partials of two blocks merge
by adding their arrays (``Task.merge_partials``; regression merges its label moments with Chan et al.'s
update instead, see :func:`merge_moments`), and the task turns the merged partial into the same metrics
``Task.metrics`` gives on all the rows at once.

Exactness: counts (rows, confusion matrices) are exact; sums (log loss, squared and absolute errors)
equal the one-pass figures up to floating-point summation order (about 1e-15 relative). ROC AUC is not a
sum: it is computed from per-class histograms of the score over :data:`AUC_BINS` equal bins on [0, 1],
pairs in the same bin counted as ties (half a pair). Its error against the exact AUC is at most half the
share of positive-negative pairs that share a bin whose scores are not all equal
(:func:`binned_auc_max_error`, from the same histograms and each bin's score range), reported with the
metric.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "AUC_BINS",
    "add_partials",
    "binned_auc",
    "binned_auc_max_error",
    "confusion_counts",
    "macro_f1",
    "merge_moments",
    "merge_score_ranges",
    "score_histograms",
    "score_ranges",
]

# 2^14 bins: 128 KiB per class and block as dense int64 (blocks ship only their non-empty bins); on the
# quickstart's test split the computed error bound is about 1e-4.
AUC_BINS = 1 << 14

Partials = dict[str, np.ndarray]


def add_partials(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> Partials:
    """Two partials merged by adding each array (the keys of both; a key of one only is kept)."""
    out = {k: np.asarray(v) for k, v in a.items()}
    for key, value in b.items():
        out[key] = out[key] + value if key in out else np.asarray(value)
    return out


def confusion_counts(actual: np.ndarray, chosen: np.ndarray, k: int) -> np.ndarray:
    """``counts[i, j]``: rows of class ``i`` answered as class ``j`` (int64, k x k)."""
    flat = np.asarray(actual, np.int64) * k + np.asarray(chosen, np.int64)
    return np.bincount(flat, minlength=k * k).reshape(k, k).astype(np.int64)


def macro_f1(confusion: np.ndarray) -> float:
    """scikit-learn's ``f1_score(average="macro", zero_division=0)`` over every class of the matrix."""
    tp = np.diag(confusion).astype(np.float64)
    denominator = 2 * tp + (confusion.sum(axis=0) - tp) + (confusion.sum(axis=1) - tp)
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float(f1.mean())


def score_histograms(y_true: np.ndarray, score: np.ndarray, bins: int = AUC_BINS) -> np.ndarray:
    """``[negatives, positives]`` per bin of ``score`` in [0, 1] (2 x bins, int64)."""
    index = np.minimum((np.clip(score, 0.0, 1.0) * bins).astype(np.int64), bins - 1)
    positive = np.asarray(y_true) > 0.5
    out = np.zeros((2, bins), np.int64)
    out[0] = np.bincount(index[~positive], minlength=bins)
    out[1] = np.bincount(index[positive], minlength=bins)
    return out


def binned_auc(histograms: np.ndarray) -> float:
    """ROC AUC from :func:`score_histograms`: P(positive scores above negative) + half P(same bin)."""
    negatives, positives = histograms[0].astype(np.float64), histograms[1].astype(np.float64)
    pairs = negatives.sum() * positives.sum()
    if pairs == 0:
        return float("nan")
    below = np.cumsum(negatives) - negatives  # negatives in lower bins
    return float(((positives * below).sum() + 0.5 * (positives * negatives).sum()) / pairs)


def binned_auc_max_error(histograms: np.ndarray, ranges: np.ndarray | None = None) -> float:
    """The most :func:`binned_auc` can differ from the exact AUC: a pair sharing a bin counts 1/2 here and
    0, 1/2 or 1 exactly, so the error is at most half the share of positive-negative pairs in one bin.
    With ``ranges`` (:func:`score_ranges`), bins whose scores are all equal hold true ties (1/2 exactly,
    as a constant prediction's): only bins with a spread count."""
    negatives, positives = histograms[0].astype(np.float64), histograms[1].astype(np.float64)
    pairs = negatives.sum() * positives.sum()
    shared = positives * negatives
    if ranges is not None:
        shared = np.where(ranges[1] > ranges[0], shared, 0.0)
    return 0.0 if pairs == 0 else float(0.5 * shared.sum() / pairs)


def score_ranges(score: np.ndarray, bins: int = AUC_BINS) -> np.ndarray:
    """``[lowest, highest]`` score per bin of :func:`score_histograms` (2 x bins, float64; 0 where the
    bin is empty, so a block ships only its filled bins)."""
    index = np.minimum((np.clip(score, 0.0, 1.0) * bins).astype(np.int64), bins - 1)
    out = np.full((2, bins), np.inf)
    out[1] = -np.inf
    np.minimum.at(out[0], index, score)
    np.maximum.at(out[1], index, score)
    return np.where(np.isfinite(out), out, 0.0)


def merge_score_ranges(hist_a: np.ndarray, a: np.ndarray, hist_b: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two blocks' :func:`score_ranges` as one; a bin's emptiness is told by its histogram counts."""
    filled_a, filled_b = hist_a.sum(axis=0) > 0, hist_b.sum(axis=0) > 0
    low = np.where(filled_a & filled_b, np.minimum(a[0], b[0]), np.where(filled_a, a[0], b[0]))
    high = np.where(filled_a & filled_b, np.maximum(a[1], b[1]), np.where(filled_a, a[1], b[1]))
    return np.stack([low, high])


def merge_moments(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], prefix: str) -> Partials:
    """``<prefix>n``, ``<prefix>mean``, ``<prefix>m2`` (count, mean, sum of squared deviations) of two
    partials merged with Chan, Golub & LeVeque's update: Σx² - (Σx)²/n cancels for values far from 0."""
    n_a, n_b = float(a[f"{prefix}n"]), float(b[f"{prefix}n"])
    n = n_a + n_b
    mean_a, mean_b = float(a[f"{prefix}mean"]), float(b[f"{prefix}mean"])
    delta = mean_b - mean_a
    mean = mean_a + delta * n_b / n if n else 0.0
    m2 = float(a[f"{prefix}m2"]) + float(b[f"{prefix}m2"]) + (delta * delta * n_a * n_b / n if n else 0.0)
    return {f"{prefix}n": np.asarray(n), f"{prefix}mean": np.asarray(mean), f"{prefix}m2": np.asarray(m2)}
