"""Drift of a current dataset against a reference profile, per feature and for the whole dataset.

Both sides are :class:`~raymlops.data.profile.Profile` objects, so drift costs one statistics pass over
the current data and a few vectorised numpy operations on a few KB, whatever the data size.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import numpy as np

from raymlops.data.profile import OTHER, FeatureProfile, Profile
from raymlops.errors import ConfigError

__all__ = ["PSI_EPSILON", "drift_report", "psi"]

PSI_EPSILON = 1e-4


def psi(reference: Any, current: Any) -> float:
    """Population stability index ``sum((c - r) * ln(c / r))`` over matching bins of two distributions.

    Fractions below ``PSI_EPSILON`` (1e-4) are raised to it and both sides renormalised, so an empty bin
    on one side costs a large but finite amount (a bin holding 5 % of current rows and none of the
    reference adds ``0.05 * ln(500) ~ 0.31``).
    """
    r = np.maximum(np.asarray(reference, dtype=np.float64), PSI_EPSILON)
    c = np.maximum(np.asarray(current, dtype=np.float64), PSI_EPSILON)
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def _num(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else float(f"{value:.{digits}g}")


def _label(value: float, kind: str) -> str:
    if kind == "timestamp":
        return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e12 else f"{value:.4g}"


def _ks(reference: FeatureProfile, current: FeatureProfile) -> float:
    # Both CDF models are polylines, so the largest gap lies at a knot of one of them: compare the
    # right-continuous values and the left limits on the union of knots.
    grid = np.union1d(reference.knots()[0], current.knots()[0])
    right = np.abs(reference.cdf(grid) - current.cdf(grid))
    left = np.abs(reference.cdf(grid, left=True) - current.cdf(grid, left=True))
    return float(max(right.max(), left.max()))


def _numeric_drift(ref: FeatureProfile, cur: FeatureProfile, psi_threshold: float, ks_threshold: float):
    edges = np.asarray(ref.bin_edges, dtype=np.float64)
    ref_fractions = np.asarray(ref.bin_fractions, dtype=np.float64)
    cur_fractions = np.diff(np.concatenate(([0.0], cur.cdf(edges), [1.0])))
    value_psi, ks = psi(ref_fractions, cur_fractions), _ks(ref, cur)
    if ref.discrete:
        labels = [_label(e, ref.kind) for e in edges]
    else:
        labels = [f"≤ {_label(edges[0], ref.kind)}"]
        labels += [f"({_label(a, ref.kind)}, {_label(b, ref.kind)}]" for a, b in itertools.pairwise(edges)]
    labels.append(f"> {_label(edges[-1], ref.kind)}")
    median = {"reference": ref.quantiles[50] if ref.quantiles else None}
    median["current"] = cur.quantiles[50] if cur.quantiles else None
    return {
        "psi": _num(value_psi),
        "ks": _num(ks),
        "drifted": value_psi >= psi_threshold or ks >= ks_threshold,
        "median": median,
        "bins": {
            "labels": labels,
            "reference": _fractions(ref_fractions),
            "current": _fractions(cur_fractions),
        },
    }


def _categorical_drift(ref: FeatureProfile, cur: FeatureProfile, psi_threshold: float, chi2_pvalue: float):
    from scipy import stats

    ref_freq, cur_freq = dict(ref.frequencies or {}), dict(cur.frequencies or {})
    categories = [name for name in ref_freq if name != OTHER]
    # A current category the reference never saw gets its own bin; only a complete reference list
    # (<= 50 categories) can tell "never seen" from "beyond the reference's top 50".
    unseen = [name for name in cur_freq if name != OTHER and name not in ref_freq] if ref.complete else []
    ref_fractions = np.array(
        [ref_freq[n] for n in categories] + [ref_freq.get(OTHER, 0.0)] + [0.0] * len(unseen)
    )
    known = np.array([n in cur_freq or cur.complete for n in categories], dtype=bool)
    cur_listed = np.array([cur_freq.get(n, 0.0) for n in categories])
    cur_unseen = np.array([cur_freq[n] for n in unseen])
    cur_other = max(1.0 - cur_listed.sum() - cur_unseen.sum(), 0.0)
    # A reference category hidden in the current's "other" mass (beyond its top 50) gets a share of that
    # mass in proportion to its reference fraction: the estimate that assumes no drift there.
    hidden_weight = ref_fractions[: len(categories)][~known]
    pool = hidden_weight.sum() + ref_freq.get(OTHER, 0.0)
    if pool > 0:
        cur_listed[~known] = cur_other * hidden_weight / pool
        cur_other *= ref_freq.get(OTHER, 0.0) / pool
    cur_fractions = np.concatenate((cur_listed, [cur_other], cur_unseen))
    value_psi = psi(ref_fractions, cur_fractions)
    table = np.vstack((ref_fractions * ref.count, cur_fractions * cur.count))
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] > 1:
        result = stats.chi2_contingency(table, correction=False)
        chi2, pvalue = float(result.statistic), float(result.pvalue)
    else:
        chi2, pvalue = 0.0, 1.0
    return {
        "psi": _num(value_psi),
        "chi2": _num(chi2),
        "chi2_pvalue": _num(pvalue, 4),
        "chi2_significant": pvalue < chi2_pvalue,
        "unseen": unseen,
        "drifted": value_psi >= psi_threshold,
        "bins": {
            "labels": [*categories, OTHER, *unseen],
            "reference": _fractions(ref_fractions),
            "current": _fractions(cur_fractions),
        },
    }


def _fractions(values: np.ndarray) -> list[float]:
    return [float(f"{v:.5g}") for v in values]


def drift_report(
    reference: Profile,
    current: Profile,
    *,
    psi_threshold: float = 0.2,
    ks_threshold: float = 0.1,
    chi2_pvalue: float = 0.01,
    share_threshold: float = 0.5,
    columns: list[str] | None = None,
) -> dict[str, Any]:
    """Per-feature and dataset drift of ``current`` against ``reference``, as a JSON-able dict.

    Numeric and timestamp features: PSI over the reference histogram bins (deciles, or the values of a
    discrete feature; see :func:`psi` for the epsilon smoothing) and the two-sample KS statistic
    ``max |F_ref - F_cur|`` between the profiles' CDF models (quantile sketches, rank error about 1 %).
    A numeric feature drifted if ``psi >= psi_threshold`` or ``ks >= ks_threshold``.

    Categorical features: PSI over the reference's top categories, "__other__" and every category the
    reference never saw (own bin), and Pearson's chi-square on the implied counts. A categorical feature
    drifted if ``psi >= psi_threshold``; chi-square is informative only (``chi2_significant`` uses
    ``chi2_pvalue``): with hundreds of thousands of rows even a negligible shift has a tiny p-value.

    The dataset drifted if the share of drifted features is at least ``share_threshold``. A feature
    missing from ``current``, or of another kind there, counts as drifted.
    """
    names = list(reference.columns) if columns is None else list(columns)
    unknown = [n for n in names if n not in reference.columns]
    if unknown:
        raise ConfigError(
            "drift.columns",
            f"{unknown} not in the reference profile of version {reference.data_version!r}; "
            f"profiled: {sorted(reference.columns)}.",
        )
    features: dict[str, dict[str, Any]] = {}
    for name in names:
        ref, cur = reference.columns[name], current.columns.get(name)
        entry: dict[str, Any] = {"kind": ref.kind}
        if cur is None or cur.numeric != ref.numeric:
            entry.update(drifted=True, note="missing in current" if cur is None else f"now {cur.kind}")
        elif ref.count == 0 or cur.count == 0:
            entry.update(drifted=(ref.count == 0) != (cur.count == 0), note="no non-null values on one side")
        elif ref.numeric:
            entry.update(_numeric_drift(ref, cur, psi_threshold, ks_threshold))
        else:
            entry.update(_categorical_drift(ref, cur, psi_threshold, chi2_pvalue))
        if cur is not None:
            entry["null_fraction"] = {"reference": ref.null_fraction, "current": cur.null_fraction}
        entry["drifted"] = bool(entry["drifted"])
        entry["status"] = "drift" if entry["drifted"] else "ok"
        features[name] = entry
    drifted = [name for name, entry in features.items() if entry["drifted"]]
    share = len(drifted) / len(features) if features else 0.0
    return {
        "reference": {"data_version": reference.data_version, "rows": reference.rows},
        "current": {"data_version": current.data_version, "rows": current.rows},
        "thresholds": {
            "psi": psi_threshold,
            "ks": ks_threshold,
            "chi2_pvalue": chi2_pvalue,
            "share": share_threshold,
        },
        "features": features,
        "drifted_features": drifted,
        "share_drifted": round(share, 6),
        "dataset_drift": bool(features) and share >= share_threshold,
    }
