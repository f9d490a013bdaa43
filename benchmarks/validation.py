"""validation: the validate stage's pass (rules + profile + key uniqueness) on Ray Data vs one process.

Ours: the part files read by Ray tasks (``read_arrow_dataset``, as every data backend reads them),
``compute_dataset_stats`` (pyarrow compute per block in parallel: moments, value counts, quantile
sketches, key hashes), ``check_rules`` with the flights rules, ``Profile.from_stats``. Baseline: the same
statistics computed by the same functions in one process over ``pq.read_table`` of the same files. Both
read from disk every time, and both must agree on rows, duplicate keys and every column's null count,
min and max before anything is reported.

Memory: the peak resident memory of our whole process tree (driver, raylet, workers) above the level of
the just-started, idle Ray, during one run, against the in-memory Arrow size of the data (target: under
2.5x); the baseline's is its one process above its level before the run.

Against pandera (``rows_per_s_vs_pandera_*``, target: ours >= 2x at 1M rows): a pandera
``DataFrameSchema`` with the same rules (types, null fractions, min/max, allowed values, the unique key,
row counts; benchmarks/baselines/pandera_validation.py) reading the same part files with
``pd.read_parquet`` and validating lazily, in the baselines venv (``make baselines``), at sizes up to
1M rows. Without the venv the figure's baseline is null and the summary says it was skipped.

Sizes: 1M and 10M synthetic flights (``--quick``: 1M only; ``--smoke``: 20k, one run; ``--rows N``: N
only).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

# Run as ``python benchmarks/validation.py``: Python puts this folder first on sys.path.
from _harness import (
    Figure,
    PeakTreeRSS,
    alternate,
    emit,
    log,
    parser,
    start_ray,
    summary,
    tree_rss_bytes,
    write_flights_parts,
)
from baselines import add_option as add_baselines_option
from baselines import note as baseline_note
from baselines import python as baselines_python
from baselines import run as run_baseline
from baselines import seconds as baseline_seconds

NAME = "validation"
PANDERA_TARGET = 2.0  # the issue: ours at least 2x pandera's rows/s on the same rules at 1M rows
PANDERA_MAX_ROWS = 1_000_000  # beyond it pandas holds the whole table (and its copies) in one process
_PART_ROWS = 1_000_000
_CACHE = Path(tempfile.gettempdir()) / "raymlops-bench-validation"


def write_parts(rows: int) -> Path:
    """Synthetic flights as parquet part files of 1M rows, cached between runs of the benchmark."""
    return write_flights_parts(rows, _CACHE / str(rows), _PART_ROWS)


def _rules() -> dict[str, Any]:
    from omegaconf import OmegaConf

    from raymlops.config import compose

    rules = OmegaConf.to_container(
        compose(["+experiment=quickstart"]).validate, resolve=True, enum_to_str=True
    )
    assert isinstance(rules, dict)
    return rules


def ours(folder: Path, rules: dict[str, Any]) -> tuple[Any, Any]:
    import pyarrow.dataset as pads

    from raymlops.data.arrow_read import read_arrow_dataset
    from raymlops.data.profile import Profile
    from raymlops.data.stats import compute_dataset_stats
    from raymlops.data.validation import check_rules

    files = sorted(str(p) for p in folder.glob("*.parquet"))
    ds = read_arrow_dataset(pads.dataset(files))  # what DeltaBackend/FilesBackend.read do
    stats = compute_dataset_stats(ds, None, rules["unique"]["key"])
    check_rules(stats, rules)
    Profile.from_stats(stats.columns, stats.rows, "bench")
    return stats, None


def baseline(folder: Path, rules: dict[str, Any]) -> tuple[Any, int]:
    from raymlops.data.profile import Profile
    from raymlops.data.stats import DatasetStats, key_hashes, table_stats
    from raymlops.data.validation import check_rules

    table = pq.read_table(folder)
    key = rules["unique"]["key"]
    stats = DatasetStats(table_stats(table), table.num_rows, table.num_rows - len(key_hashes(table, key)))
    check_rules(stats, rules)
    Profile.from_stats(stats.columns, stats.rows, "bench")
    return stats, table.nbytes


def _same(a: Any, b: Any) -> None:
    assert (a.rows, a.duplicate_keys) == (b.rows, b.duplicate_keys), (a.rows, b.rows)
    for name, column in b.columns.items():
        assert a.columns[name].nulls == column.nulls, name
        assert a.columns[name].min == column.min and a.columns[name].max == column.max, name


def run_size(rows: int, repeats: int, warmup: int, rules: dict[str, Any], idle_ray: int) -> list[Figure]:
    folder = write_parts(rows)
    with PeakTreeRSS(start_bytes=idle_ray) as ours_mem:  # over idle Ray: workers' start-up counts too
        ours_stats, _ = ours(folder, rules)
    with PeakTreeRSS(children=False) as base_mem:
        base_stats, data_bytes = baseline(folder, rules)
    _same(ours_stats, base_stats)
    ours_s, base_s = alternate(
        lambda: ours(folder, rules) and None, lambda: baseline(folder, rules) and None, repeats, warmup
    )
    size = f"{rows // 1_000_000}M" if rows >= 1_000_000 else f"{rows // 1000}k"
    mib = 1024**2
    log(
        f"{size}: data {data_bytes / mib:.0f} MiB in memory; peak added RSS ours "
        f"{ours_mem.added_bytes / mib:.0f} MiB, baseline {base_mem.added_bytes / mib:.0f} MiB"
    )
    return [
        Figure(
            NAME,
            f"rows_per_s_{size}",
            rows / ours_s,
            rows / base_s,
            "rows/s",
            True,
            1.3 if rows >= 10_000_000 else None,
        ),
        Figure(
            NAME,
            f"peak_memory_vs_data_{size}",
            ours_mem.added_bytes / data_bytes,
            base_mem.added_bytes / data_bytes,
            "x data size",
            False,
        ),
        Figure(
            NAME,
            f"peak_memory_vs_data_{size}_ours_limit",
            ours_mem.added_bytes / data_bytes,
            2.5,
            "x data size",
            False,
            1.0 if rows >= 10_000_000 else None,  # below that, worker start-up (~0.9 GB) dominates
        ),
    ]


def _failed_columns(report: dict[str, Any]) -> list[str]:
    """The columns (``<table>`` for table rules) with a failed ``fail`` check in our report."""
    failed = {"<table>" for c in report["table"] if not c["passed"] and c["severity"] == "fail"}
    for name, column in report["columns"].items():
        if any(not c["passed"] and c["severity"] == "fail" for c in column["checks"]):
            failed.add(name)
    return sorted(failed)


def pandera_figure(
    rows: int, ours_rows_per_s: float, option: str | None, rules: dict[str, Any], repeats: int, warmup: int
) -> tuple[Figure, dict[str, Any]]:
    """pandera on the same part files and rules, in the baselines venv (or skipped), as one figure."""
    from raymlops.data.validation import check_rules

    size = f"{rows // 1_000_000}M" if rows >= 1_000_000 else f"{rows // 1000}k"
    chosen = baselines_python(option)
    folder = write_parts(rows)
    with tempfile.TemporaryDirectory(prefix="raymlops-bench-validation-") as scratch:
        rules_file = Path(scratch) / "rules.json"
        rules_file.write_text(json.dumps(rules))
        args = ["--input", str(folder), "--rules", str(rules_file)]
        result = run_baseline(
            "pandera_validation.py", [*args, "--repeats", str(repeats), "--warmup", str(warmup)], chosen
        )
    if "failed_columns" in result:  # both must judge the data alike, or the comparison means nothing
        ours_failed = _failed_columns(check_rules(ours(folder, rules)[0], rules))
        assert result["rows"] == rows, (result["rows"], rows)
        assert result["failed_columns"] == ours_failed, (result["failed_columns"], ours_failed)
        log(f"pandera and ours agree: failed {ours_failed or 'nothing'}")
    pandera_s = baseline_seconds(result)
    base = None if pandera_s is None else rows / pandera_s
    figure = Figure(
        NAME, f"rows_per_s_vs_pandera_{size}", ours_rows_per_s, base, "rows/s", True, PANDERA_TARGET
    )
    return figure, result


def main(argv: list[str] | None = None) -> int:
    options = parser(__doc__.splitlines()[0])
    add_baselines_option(options)
    args = options.parse_args(argv)
    default = [20_000] if args.smoke else [1_000_000] if args.quick else [1_000_000, 10_000_000]
    sizes = [args.rows] if args.rows else default
    repeats = args.repeats or (1 if args.smoke else 3)
    warmup = args.warmup if args.warmup is not None else (0 if args.smoke else 1)
    start_ray()
    idle_ray = tree_rss_bytes()
    rules = _rules()
    figures = []
    notes = []
    for rows in sizes:
        log(f"size {rows:,} rows; repeats={repeats} warmup={warmup}")
        for figure in run_size(rows, repeats, warmup, rules, idle_ray):
            emit(figure)
            figures.append(figure)
        if rows <= PANDERA_MAX_ROWS:  # ours: this size's rows/s, the first figure run_size returned
            figure, result = pandera_figure(
                rows, figures[-3].ours, args.baselines_python, rules, repeats, warmup
            )
            emit(figure)
            figures.append(figure)
            notes.append(baseline_note("pandera", result))
    summary(figures, note="; ".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
