"""drift: the monitor's drift statistics vs a vectorised numpy baseline on the same data.

Data: a reference of 1M rows and a current window of 100k rows, 20 numeric features (14 continuous of
several shapes, 6 integer-valued with at most 24 distinct values), 5 of them shifted in the window
(``--quick``: 200k x 20k; ``--smoke``: 50k x 5k, one run). Categorical features are left out: numpy
has no vectorised value counts of strings to compare with.

Ours: exactly what :func:`raymlops.monitoring.monitor.run_monitor` runs on a window that it reads in one
process (below ``monitor.ray_data_min_bytes``): ``window_partials`` over the window in the prediction
log's layout (it also profiles the ``probability`` and ``latency_ms`` columns, two columns the baseline
does not touch), then ``feature_drift`` against the version's training profile: PSI over the
reference deciles (one bin per value for discrete features) and KS between the quantile-sketch CDFs.

Baseline: the same statistics straight from the raw arrays with numpy: PSI over the same bins (deciles
by ``np.quantile``, or the distinct values), with the same epsilon smoothing, and the *exact*
two-sample KS statistic (the largest gap of the two empirical CDFs over every point of both samples,
as ``scipy.stats.ks_2samp`` computes it, here by merging the sorted samples in linear time; for a
discrete feature from the per-value CDFs).

Figures:

- ``window_rows_per_s``: one monitoring run: the reference is prepared once and not timed (ours: the
  profile as loaded from ``profile.json``; the baseline: the sorted reference columns, bin edges and
  reference fractions);
- ``end_to_end_rows_per_s``: from raw data on both sides: ours adds the reference profile
  (``table_stats`` + ``Profile.from_stats``, as the validate stage builds it); the baseline sorts the
  reference columns. Rows = reference + window rows;
- ``window_rows_per_s_vs_numpy_psi_only`` (no target): the window against numpy computing PSI alone,
  the floor of any drift pass, to show what the exact KS costs the baseline.

- ``end_to_end_seconds_vs_evidently`` (target: ours >= 10x faster): the same end-to-end run of ours
  against Evidently's ``DataDriftPreset`` (``Report([DataDriftPreset()]).run(current, reference)``, its
  defaults) on the same reference and current feature columns, in the baselines venv
  (``make baselines``; benchmarks/baselines/evidently_drift.py), timed in its own process on the same
  data written as parquet and read there untimed. Without the venv the figure's baseline is null and the
  summary says it was skipped.

Both sides must agree before anything is reported: the same drifted features, PSI within 0.02 (or
5 %), KS within 0.02 (ours is a sketch with about 1 % rank error).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _harness import Figure, alternate, emit, log, parser, summary
from baselines import add_option as add_baselines_option
from baselines import note as baseline_note
from baselines import python as baselines_python
from baselines import run as run_baseline
from baselines import seconds as baseline_seconds

NAME = "drift"
FEATURES = 20
DISCRETE = 6
SHIFTED = ("c00", "c03", "c07", "d01", "d04")
PSI_THRESHOLD, KS_THRESHOLD, EPS = 0.2, 0.1, 1e-4
EVIDENTLY_TARGET = 10.0  # the issue: ours at least 10x faster than Evidently's drift preset


def columns(n: int, seed: int, shifted: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for i in range(FEATURES - DISCRETE):
        name = f"c{i:02d}"
        move = shifted and name in SHIFTED
        kind = i % 4
        if kind == 0:
            values = rng.normal(0.5 if move else 0.0, 1.0, n)
        elif kind == 1:
            values = rng.lognormal(6.5, 0.6, n)
        elif kind == 2:
            values = rng.uniform(0, 100, n)
        else:
            values = rng.exponential(30.0 * (1.6 if move else 1.0), n)
        out[name] = values
    for i in range(DISCRETE):
        name = f"d{i:02d}"
        high = 12 + 2 * i
        values = rng.integers(0, high, n).astype(np.float64)
        if shifted and name in SHIFTED:
            values = np.minimum(values + 3, high - 1)
        out[name] = values
    return out


def log_table(features: dict[str, np.ndarray], seed: int) -> pa.Table:
    """The window as the prediction log holds it (one row per request, one served version)."""
    n = len(next(iter(features.values())))
    rng = np.random.default_rng(seed)
    probability = rng.beta(2, 5, n)
    base = {
        "prediction_id": pa.array(np.arange(n).astype(str)),
        "row": pa.array(np.zeros(n, dtype=np.int32)),
        "ts": pa.array(np.arange(n, dtype=np.int64) + 1_700_000_000_000_000, pa.int64()).cast(
            pa.timestamp("us", tz="UTC")
        ),
        "version": pa.array(["1"] * n),
        "route": pa.array(["served"] * n),
        "probability": pa.array(probability),
        "label": pa.array((probability >= 0.5).astype(np.int8)),
        "latency_ms": pa.array(rng.lognormal(1.5, 0.3, n)),
    }
    return pa.table({**base, **{f"f_{c}": pa.array(v) for c, v in features.items()}})


# -- ours ------------------------------------------------------------------------------------------


def reference_profile(reference: pa.Table) -> Any:
    from raymlops.data.profile import Profile
    from raymlops.data.stats import table_stats

    return Profile.from_stats(table_stats(reference), reference.num_rows, "reference")


def ours_window(profile: Any, window: pa.Table) -> dict[str, Any]:
    from raymlops.monitoring.window_stats import feature_drift, window_partials

    partial = window_partials(window)["1"]
    return feature_drift(
        profile, partial, list(profile.columns), psi_threshold=PSI_THRESHOLD, ks_threshold=KS_THRESHOLD
    )


# -- the numpy baseline ----------------------------------------------------------------------------


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    r, c = np.maximum(reference, EPS), np.maximum(current, EPS)
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def prepare(reference: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, ...]]:
    """Per feature: the bin edges, the reference fractions, and for a continuous feature the sorted
    reference (work a monitoring run need not repeat)."""
    out: dict[str, tuple[np.ndarray, ...]] = {}
    for name, values in reference.items():
        ordered = np.sort(values)
        distinct = 1 + int(np.count_nonzero(ordered[1:] != ordered[:-1]))
        if distinct <= 64:  # one bin per value, as the profile does; the CDF is exact on the bins
            edges = ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
        else:
            edges = np.unique(np.quantile(ordered, np.linspace(0.1, 0.9, 9)))
        counts = np.diff(np.searchsorted(ordered, edges, side="right"), prepend=0)
        fractions = np.append(counts, len(ordered) - counts.sum()) / len(ordered)
        out[name] = (edges, fractions) if distinct <= 64 else (edges, fractions, ordered)
    return out


def baseline_window(
    prepared: dict[str, tuple[np.ndarray, ...]], current: dict[str, np.ndarray], *, ks: bool = True
) -> dict[str, dict[str, Any]]:
    """PSI on the bins; the exact two-sample KS: for a discrete feature from the per-value CDFs, for a
    continuous one the largest ECDF gap over every point of both samples."""
    out = {}
    for name, (edges, ref_fractions, *continuous) in prepared.items():
        cur = current[name]
        bins = np.searchsorted(edges, cur, side="left")  # right-closed bins, as the profile's
        cur_fractions = np.bincount(bins, minlength=len(edges) + 1) / len(cur)
        if not ks:  # the PSI-only floor: one pass over the window per feature
            gap = float("nan")
        elif not continuous:
            gap = float(np.abs(np.cumsum(ref_fractions) - np.cumsum(cur_fractions)).max())
        else:
            (ref_sorted,) = continuous
            # Merge the two sorted samples (a stable sort of two sorted runs is a linear merge), count
            # each side's points up to every position, compare at the last of each run of ties.
            merged = np.concatenate((ref_sorted, np.sort(cur)))
            order = np.argsort(merged, kind="stable")
            values = merged[order]
            cur_count = np.cumsum(order >= len(ref_sorted))
            ref_count = np.arange(1, len(values) + 1) - cur_count
            ends = np.append(values[1:] != values[:-1], True)
            gap = float(np.abs(ref_count[ends] / len(ref_sorted) - cur_count[ends] / len(cur)).max())
        value_psi = psi(ref_fractions, cur_fractions)
        out[name] = {
            "psi": value_psi,
            "ks": gap,
            "drifted": value_psi >= PSI_THRESHOLD or gap >= KS_THRESHOLD,
        }
    return out


def check_agreement(ours: dict[str, Any], base: dict[str, dict[str, Any]]) -> None:
    assert sorted(ours["drifted_features"]) == sorted(n for n, b in base.items() if b["drifted"]), (
        ours["drifted_features"],
        base,
    )
    assert sorted(ours["drifted_features"]) == sorted(SHIFTED), ours["drifted_features"]
    for name, b in base.items():
        mine = ours["features"][name]
        assert abs(mine["psi"] - b["psi"]) <= max(0.02, 0.05 * b["psi"]), (name, mine["psi"], b["psi"])
        assert abs(mine["ks"] - b["ks"]) <= 0.02, (name, mine["ks"], b["ks"])


def evidently_baseline(
    reference: dict[str, np.ndarray],
    current: dict[str, np.ndarray],
    option: str | None,
    repeats: int,
    warmup: int,
) -> dict[str, Any]:
    """Evidently's drift preset on the same feature columns, in the baselines venv (or skipped)."""
    chosen = baselines_python(option)
    if chosen is None:
        return run_baseline("evidently_drift.py", [], None)
    with tempfile.TemporaryDirectory(prefix="raymlops-bench-drift-") as folder:
        pq.write_table(
            pa.table({c: pa.array(v) for c, v in reference.items()}), Path(folder) / "reference.parquet"
        )
        pq.write_table(
            pa.table({c: pa.array(v) for c, v in current.items()}), Path(folder) / "current.parquet"
        )
        args = ["--input", folder, "--repeats", str(repeats), "--warmup", str(warmup)]
        result = run_baseline("evidently_drift.py", args, chosen)
    if "drifted" in result:  # different statistics (Wasserstein), so reported, not asserted
        same = sorted(result["drifted"]) == sorted(SHIFTED)
        log(f"evidently flags {result['drifted']}; the shifted features are {list(SHIFTED)} (same: {same})")
    return result


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--current-rows", type=int, default=None, help="window rows (default: reference / 10)")
    add_baselines_option(p)
    args = p.parse_args(argv)
    ref_rows = args.rows or (50_000 if args.smoke else 200_000 if args.quick else 1_000_000)
    cur_rows = args.current_rows or ref_rows // 10
    repeats = args.repeats or (1 if args.smoke else 3 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (0 if args.smoke else 1)
    log(f"reference {ref_rows:,} x current {cur_rows:,} rows x {FEATURES} features; repeats={repeats}")
    reference_columns = columns(ref_rows, seed=1, shifted=False)
    current_columns = columns(cur_rows, seed=2, shifted=True)
    reference = pa.table({c: pa.array(v) for c, v in reference_columns.items()})
    window = log_table(current_columns, seed=3)
    current = {c: window[f"f_{c}"].to_numpy() for c in current_columns}  # the same buffers, zero-copy

    profile = reference_profile(reference)
    prepared = prepare(reference_columns)
    check_agreement(ours_window(profile, window), baseline_window(prepared, current))
    log("ours and the baseline agree: same drifted features, PSI and KS within tolerance")

    ours_s, base_s = alternate(
        lambda: ours_window(profile, window) and None,
        lambda: baseline_window(prepared, current) and None,
        repeats,
        warmup,
    )
    _, psi_only_s = alternate(
        lambda: None, lambda: baseline_window(prepared, current, ks=False) and None, repeats, 0
    )
    full_ours_s, full_base_s = alternate(
        lambda: ours_window(reference_profile(reference), window) and None,
        lambda: baseline_window(prepare(reference_columns), current) and None,
        max(1, repeats - 2),
        warmup,
    )
    figures = [
        Figure(NAME, "window_rows_per_s", cur_rows / ours_s, cur_rows / base_s, "rows/s", True, 0.8),
        # No target: numpy PSI alone, the floor of any drift pass (ours also does KS and 2 more columns).
        Figure(
            NAME,
            "window_rows_per_s_vs_numpy_psi_only",
            cur_rows / ours_s,
            cur_rows / psi_only_s,
            "rows/s",
            True,
        ),
        Figure(
            NAME,
            "end_to_end_rows_per_s",
            (ref_rows + cur_rows) / full_ours_s,
            (ref_rows + cur_rows) / full_base_s,
            "rows/s",
            True,
            0.8,
        ),
    ]
    evidently = evidently_baseline(
        reference_columns, current_columns, args.baselines_python, max(1, repeats - 2), warmup
    )
    figures.append(
        Figure(
            NAME,
            "end_to_end_seconds_vs_evidently",
            full_ours_s,
            baseline_seconds(evidently),
            "s",
            False,
            EVIDENTLY_TARGET,
        )
    )
    for figure in figures:
        emit(figure)
    words = f"{ref_rows:,} x {cur_rows:,} rows x {FEATURES} features, one process each"
    summary(figures, note=f"{words}; {baseline_note('evidently', evidently)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
