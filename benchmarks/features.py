"""features: the features stage (both execution paths) vs the same transforms in single-process pyarrow.

Ours: ``run_pipeline`` with ``stages=[ingest,features]`` on a state dir in a temp folder, once with
``execution.mode=local`` (the stage's kernels on one pyarrow Table in the driver) and once with
``execution.mode=distributed`` (the same kernels mapped over blocks by Ray Data), alternated; the figure
is the features stage's own seconds (``ctx.lineage["stage_seconds"]["features"]``), so Delta reading and
Ray start-up are not in it. ``stage_seconds`` compares the path ``execution.mode=auto`` picks at this size
with the baseline; ``local_vs_distributed_seconds`` compares the two paths (ratio > 1: local is faster),
which is where ``execution.local_max_rows`` comes from (configs/execution/default.yaml).

Baseline: the same steps by hand on the same parquet file in one process:
read, label + drop null labels, time split, ``table_stats`` on train, ``fit_preprocessor``, transform
the three splits, a numpy permutation of train. The baseline's time includes reading the parquet file
(tens of ms at full size); ours starts from the ingest stage's materialized dataset.

Sizes: the whole flights table; ``--quick`` a seeded 25% sample of it; ``--smoke`` 20,000 of its rows,
one run per side; ``--rows N`` N rows (synthetic beyond the real table's 336,776).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Run as ``python benchmarks/features.py``: Python puts this folder first on sys.path.
from _harness import (
    FLIGHTS_ROWS,
    Figure,
    alternate,
    emit,
    flights_table,
    log,
    parser,
    start_ray,
    summary,
    timed,
)

NAME = "features"


def baseline_features(path: Path, cfg: Any, seed: int) -> dict[str, int]:
    """The features stage's work in one process; returns the split sizes to check both did the same."""
    from raymlops.data.splits import parse_instant
    from raymlops.data.stats import table_stats
    from raymlops.features.preprocess import fit_preprocessor

    table = pq.read_table(path)
    source = table[cfg.label.column]
    table = table.filter(pc.is_valid(source))
    label = pc.cast(pc.greater(table[cfg.label.column], pa.scalar(float(cfg.label.threshold))), pa.float32())
    table = table.append_column("label", label)
    when = table[cfg.split.time_column]
    valid_start = pa.scalar(parse_instant(cfg.split.valid_start, "valid_start"), when.type)
    test_start = pa.scalar(parse_instant(cfg.split.test_start, "test_start"), when.type)
    train = table.filter(pc.less(when, valid_start))
    valid = table.filter(pc.and_(pc.greater_equal(when, valid_start), pc.less(when, test_start)))
    test = table.filter(pc.greater_equal(when, test_start))
    stats = table_stats(train, [*cfg.numeric, *cfg.categorical, "label"])
    pre = fit_preprocessor(
        stats,
        list(cfg.numeric),
        list(cfg.categorical),
        max_categories=cfg.max_categories,
        min_frequency=cfg.min_frequency,
    )
    splits = {
        name: (pre.transform(t), t["label"].to_numpy())
        for name, t in (("train", train), ("valid", valid), ("test", test))
    }
    # The stage shuffles train globally (the table is in time order); the single-process equivalent.
    order = np.random.default_rng(seed).permutation(len(splits["train"][1]))
    x, y = splits["train"]
    splits["train"] = (x[order], y[order])
    return {name: len(y) for name, (_, y) in splits.items()} | {"features": pre.num_features}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    default = 20_000 if args.smoke else FLIGHTS_ROWS // 4 if args.quick else None
    rows = args.rows if args.rows is not None else default
    repeats = args.repeats or (1 if args.smoke else 3 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (0 if args.smoke else 1)
    table, described = flights_table(rows, seed=0)
    num_rows = table.num_rows
    log(f"input: {described}; repeats={repeats} warmup={warmup}")

    from raymlops.config import compose
    from raymlops.pipeline.runner import run_pipeline

    with tempfile.TemporaryDirectory(prefix="raymlops-bench-features-") as tmp:
        source = Path(tmp) / "flights.parquet"
        pq.write_table(table, source)  # written once; both sides read this file
        del table
        start_ray(num_cpus=2)
        overrides = [
            "+experiment=quickstart",
            f"state_dir={tmp}/state",
            f"data.source={source}",
            "ray.progress_bars=false",
            "serve.enabled=false",
            "stages=[ingest,features]",
            "cache.enabled=false",
        ]
        modes = ("local", "distributed", "auto")
        cfgs = {mode: compose([*overrides, f"execution.mode={mode}"]) for mode in modes}
        seen: dict[str, dict[str, int]] = {}
        chosen: dict[str, str] = {}

        def ours(mode: str) -> float:
            ctx, _ = run_pipeline(cfgs[mode])
            figures = ctx.figures["features"]
            chosen[mode] = f"{figures['execution']} ({figures['execution_reason']})"
            seen[mode] = {k: figures[f"{k}_rows"] for k in ("train", "valid", "test")}
            seen[mode]["features"] = figures["features"]
            return float(ctx.lineage["stage_seconds"]["features"])

        def baseline() -> None:
            seen["baseline"] = baseline_features(source, cfgs["local"].features, cfgs["local"].seed)

        local_s, distributed_s = alternate(
            lambda: ours("local"), lambda: ours("distributed"), repeats, warmup
        )
        baseline_s = statistics.median(timed(baseline, repeats, warmup))
        if not seen["local"] == seen["distributed"] == seen["baseline"]:  # the sides did different work
            raise SystemExit(f"features: the paths and the baseline disagree: {seen}")
        log(f"splits and features (every side): {seen['local']}")
        ours("auto")  # untimed: which path auto picks at this size
        log(f"execution.mode=auto picks {chosen['auto']}")
        auto_path = chosen["auto"].split(" ", 1)[0]

    ours_s = local_s if auto_path == "local" else distributed_s
    figures = [
        Figure(NAME, "stage_seconds", ours_s, baseline_s, "s", higher_is_better=False),
        Figure(NAME, "rows_per_s", num_rows / ours_s, num_rows / baseline_s, "rows/s", higher_is_better=True),
        Figure(NAME, "local_vs_distributed_seconds", local_s, distributed_s, "s", higher_is_better=False),
    ]
    for figure in figures:
        emit(figure)
    summary(
        figures,
        note=f"{described}, median of {repeats}; stage_seconds: the {auto_path} path (auto); "
        "baseline = single-process pyarrow/numpy; local_vs_distributed: baseline = the Ray Data path",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
