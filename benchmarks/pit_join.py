"""pit_join: our point-in-time join in Ray vs single-process ``pandas.merge_asof`` on the same data.

Rows: synthetic flights (the nycflights13 schema, all 19 columns), joined as of ``time_hour`` to a
synthetic route feature table keyed by (origin, dest) with 3 float features, one row per route every
few hours (a quarter as many feature rows as flights), TTL 6 h. Both of our strategies are timed:
``shuffle`` (both sides split by key with Ray tasks, one vectorised as-of task per partition: what
``auto`` picks for the 2.5M feature rows at 10M flights) and ``broadcast`` (the feature table sorted
into a ``FeatureIndex`` once and shipped to every block of rows: what ``auto`` picks up to
``BROADCAST_MAX_ROWS``). The target applies to the default, ``shuffle``, at 10M.

Ours starts from materialized Ray Datasets and ends with the joined blocks in the object store
(``materialize()``); the baseline starts from the same rows as pandas DataFrames and ends with the
joined DataFrame: ``sort_values`` on both sides (merge_asof needs sorted keys) then ``merge_asof(by=
[origin, dest], direction="backward", tolerance=6h, allow_exact_matches=True)``, one thread. Before
anything is timed both must agree on the number of matched rows and the sum of a joined feature.
Both sides run at nice 0 (Ray's workers default to nice 15; see batch_score.py on why that matters).
"""

from __future__ import annotations

import functools
import sys
from datetime import timedelta

import numpy as np
import pyarrow as pa

# Run as ``python benchmarks/pit_join.py``: Python puts this folder first on sys.path.
from _harness import Figure, alternate, emit, log, parser, start_ray_at_nice_0, summary, synthetic_flights

NAME = "pit_join"
TARGET = 1.3  # at 10M rows on 2 cores
TTL = timedelta(hours=6)
FEATURES = ("f_delay_share", "f_volume", "f_wind")
_PART_ROWS = 1_000_000


def route_features(flights: pa.Table, rows: int, seed: int) -> pa.Table:
    """``rows`` feature rows over the routes the flights use, at random hours of 2013."""
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed)
    routes = flights.select(["origin", "dest"]).group_by(["origin", "dest"]).aggregate([])
    pick = rng.integers(0, routes.num_rows, rows)
    start = np.datetime64("2013-01-01T00:00:00", "s").astype(np.int64)
    seconds = start + rng.integers(0, 365 * 24, rows) * 3600 + rng.integers(0, 3600, rows)
    return pa.table(
        {
            "origin": pc.take(routes["origin"], pa.array(pick)),
            "dest": pc.take(routes["dest"], pa.array(pick)),
            "ts": pa.array(seconds, pa.int64()).cast(pa.timestamp("s", "UTC")),
            "f_delay_share": rng.random(rows),
            "f_volume": rng.integers(0, 500, rows).astype(np.float64),
            "f_wind": rng.gamma(2.0, 5.0, rows),
        }
    )


def make_data(rows: int) -> tuple[list[pa.Table], pa.Table]:
    parts = [
        synthetic_flights(min(_PART_ROWS, rows - s), seed=i) for i, s in enumerate(range(0, rows, _PART_ROWS))
    ]
    return parts, route_features(parts[0], rows // 4, seed=99)


def ours(rows_ds, features_ds, strategy: str) -> tuple[int, float]:
    import ray

    from raymlops.features.pit_join import JoinSpec, pit_join

    spec = JoinSpec(("origin", "dest"), "time_hour", "ts", FEATURES, TTL)
    joined = pit_join(rows_ds, features_ds, spec, strategy=strategy).materialize()
    stats = ray.get([_remote_matched().remote(ref) for ref in joined.to_arrow_refs()])
    return sum(n for n, _ in stats), sum(s for _, s in stats)


@functools.cache
def _remote_matched():  # -> ray.remote_function.RemoteFunction
    import ray

    return ray.remote(_matched)


def _matched(table: pa.Table) -> tuple[int, float]:
    import pyarrow.compute as pc

    column = table["f_volume"]
    return column.length() - column.null_count, float(pc.sum(column).as_py() or 0.0)


def baseline(flights_df, features_df) -> tuple[int, float]:
    import pandas as pd

    left = flights_df.sort_values("time_hour", kind="stable")
    right = features_df.sort_values("ts", kind="stable")
    joined = pd.merge_asof(
        left,
        right,
        left_on="time_hour",
        right_on="ts",
        by=["origin", "dest"],
        direction="backward",
        tolerance=pd.Timedelta(TTL),
        allow_exact_matches=True,
    )
    return int(joined["f_volume"].notna().sum()), float(joined["f_volume"].sum())


def run_size(rows: int, repeats: int, warmup: int, strategies: list[str]) -> list[Figure]:
    import ray

    parts, features = make_data(rows)
    log(f"data: {rows:,} flights in {len(parts)} parts, {features.num_rows:,} feature rows")
    rows_ds = ray.data.from_arrow(_blocks(parts)).materialize()
    features_ds = ray.data.from_arrow(_blocks([features])).materialize()
    flights_df = pa.concat_tables(parts).to_pandas(types_mapper=None)
    features_df = features.to_pandas()
    del parts
    expected = baseline(flights_df, features_df)
    figures = []
    for strategy in strategies:
        got = ours(rows_ds, features_ds, strategy)
        if got[0] != expected[0] or not np.isclose(got[1], expected[1], rtol=1e-9):
            raise SystemExit(f"{strategy}: ours {got} disagrees with merge_asof {expected}")
        log(f"{strategy}: agree on {got[0]:,} matched rows")
        ours_s, base_s = alternate(
            lambda s=strategy: ours(rows_ds, features_ds, s) and None,
            lambda: baseline(flights_df, features_df) and None,
            repeats,
            warmup,
        )
        figures.append(
            Figure(
                NAME,
                f"rows_per_s@{_label(rows)}_{strategy}",
                rows / ours_s,
                rows / base_s,
                "rows/s",
                True,
                TARGET if rows >= 10_000_000 and strategy == "shuffle" else None,
            )
        )
    return figures


def _blocks(tables: list[pa.Table], block_rows: int = 250_000) -> list[pa.Table]:
    """Blocks of a quarter million rows, as a Delta table read in row groups gives them."""
    return [t.slice(s, block_rows) for t in tables for s in range(0, t.num_rows, block_rows)]


def _label(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows >= 1_000_000 else f"{rows // 1000}k"


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    default = [20_000] if args.smoke else [200_000] if args.quick else [1_000_000, 10_000_000]
    sizes = [args.rows] if args.rows else default
    repeats = args.repeats or (1 if args.smoke else 3 if max(sizes) <= 2_000_000 else 2)
    warmup = args.warmup if args.warmup is not None else 0  # the agreement check warms both up
    start_ray_at_nice_0()
    figures = []
    for rows in sizes:
        log(f"size {rows:,} rows; repeats={repeats} warmup={warmup}")
        strategies = ["shuffle", "broadcast"]
        figures += run_size(rows, repeats, warmup, strategies)
    for figure in figures:
        emit(figure)
    summary(
        figures, note="ours: a feature index broadcast to every block, or a key-hash shuffle in Ray tasks"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
