"""The benchmark harness (benchmarks/_harness.py): figure orientation, JSON lines, alternation. No Ray."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.conftest import load_script


def _load() -> ModuleType:
    return load_script("benchmarks/_harness.py", "bench_harness")


h = _load()
KEYS = ["benchmark", "metric", "ours", "baseline", "unit", "ratio", "target", "meets"]


def test_ratio_of_times_is_baseline_over_ours() -> None:
    faster = h.Figure("b", "seconds", ours=2.0, baseline=4.0, unit="s", higher_is_better=False)
    slower = h.Figure("b", "seconds", ours=8.0, baseline=4.0, unit="s", higher_is_better=False)
    assert faster.ratio == pytest.approx(2.0)
    assert slower.ratio == pytest.approx(0.5)


def test_ratio_of_throughputs_is_ours_over_baseline() -> None:
    figure = h.Figure("b", "rows_per_s", ours=300.0, baseline=100.0, unit="rows/s", higher_is_better=True)
    assert figure.ratio == pytest.approx(3.0)


def test_ratio_is_none_without_a_usable_baseline() -> None:
    assert h.Figure("b", "m", 1.0, None, "s", higher_is_better=False).ratio is None
    assert h.Figure("b", "m", 0.0, 1.0, "s", higher_is_better=False).ratio is None  # no division by zero
    assert h.Figure("b", "m", float("nan"), 1.0, "s", higher_is_better=False).ratio is None


@pytest.mark.parametrize(
    ("ours", "baseline", "target", "meets"),
    [
        (2.0, 4.0, 1.5, True),  # ratio 2.0 >= 1.5
        (2.0, 4.0, 2.0, True),  # the target itself is met
        (4.0, 2.0, 0.8, False),  # ratio 0.5
        (2.0, 4.0, None, None),  # no target: nothing to meet
        (2.0, None, 1.0, None),  # no baseline: no ratio to compare
    ],
)
def test_meets_compares_the_oriented_ratio_with_the_target(
    ours: float, baseline: float | None, target: float | None, meets: bool | None
) -> None:
    figure = h.Figure("b", "seconds", ours, baseline, "s", higher_is_better=False, target=target)
    assert figure.meets is meets


def test_meets_for_a_throughput_target() -> None:
    figure = h.Figure("b", "rps", ours=50.0, baseline=100.0, unit="req/s", higher_is_better=True, target=0.4)
    assert figure.ratio == pytest.approx(0.5) and figure.meets is True


def test_emit_prints_one_json_line_with_the_design_keys_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    h.emit(h.Figure("features", "stage_seconds", 3.14159, 0.5, "s", higher_is_better=False, target=0.1))
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1
    record = json.loads(out)
    assert list(record) == KEYS
    assert record == {
        "benchmark": "features",
        "metric": "stage_seconds",
        "ours": 3.142,
        "baseline": 0.5,
        "unit": "s",
        "ratio": 0.159,
        "target": 0.1,
        "meets": True,
    }


def test_json_line_has_nulls_not_nan() -> None:
    line = h.Figure("b", "m", float("nan"), None, "s", higher_is_better=False).to_json()
    assert json.loads(line) == dict.fromkeys(KEYS) | {"benchmark": "b", "metric": "m", "unit": "s"}


def test_summary_is_one_line_naming_each_compared_figure(capsys: pytest.CaptureFixture[str]) -> None:
    figures = [
        h.Figure("pipeline", "end_to_end_seconds", 10.0, 5.0, "s", higher_is_better=False),
        h.Figure("pipeline", "stage_seconds.train", 4.0, None, "s", higher_is_better=False),
    ]
    line = h.summary(figures, note="deploy not included")
    assert capsys.readouterr().out == line + "\n"
    assert "\n" not in line and line.startswith("pipeline: end_to_end_seconds 10 vs 5 s (0.50x)")
    assert "stage_seconds.train" not in line and "deploy not included" in line


def test_alternate_runs_ours_then_baseline_after_warmup_and_returns_medians() -> None:
    calls: list[str] = []
    ours_seconds = iter([9.0, 1.0, 3.0, 2.0])  # the first value is the untimed warm-up
    baseline_seconds = iter([9.0, 10.0, 30.0, 20.0])

    def ours() -> float:
        calls.append("ours")
        return next(ours_seconds)

    def baseline() -> float:
        calls.append("baseline")
        return next(baseline_seconds)

    assert h.alternate(ours, baseline, repeats=3, warmup=1) == (2.0, 20.0)
    assert calls == ["ours", "baseline"] * 4


def test_timed_uses_the_wall_clock_unless_the_function_reports_seconds() -> None:
    calls: list[int] = []
    samples = h.timed(lambda: calls.append(1), repeats=3, warmup=2)  # returns None: wall clock
    assert len(calls) == 5 and len(samples) == 3 and all(0 <= s < 1 for s in samples)
    assert h.timed(lambda: 1.5, repeats=2, warmup=0) == [1.5, 1.5]
    with pytest.raises(ValueError, match="repeats"):
        h.timed(lambda: None, repeats=0)


def test_parser_has_the_common_options() -> None:
    args = h.parser("x").parse_args(["--quick", "--rows", "1000"])
    assert args.quick is True and args.smoke is False and args.rows == 1000 and args.repeats is None
    assert h.parser("x").parse_args([]).quick is False
    with pytest.raises(SystemExit):  # one size at a time
        h.parser("x").parse_args(["--quick", "--smoke"])


@pytest.fixture
def smoke() -> Iterator[None]:
    """This process parsed ``--smoke`` (as a benchmark run at smoke size does); judging again after."""
    assert h.parser("x").parse_args(["--smoke"]).smoke is True
    yield
    h.parser("x").parse_args([])
    assert h.judging_targets()


def test_smoke_size_prints_every_figure_without_judging_a_target(
    smoke: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not h.judging_targets()
    missed = h.Figure("b", "rps", ours=50.0, baseline=100.0, unit="req/s", higher_is_better=True, target=0.9)
    h.emit(missed)
    record = json.loads(capsys.readouterr().out)
    assert record["ratio"] == 0.5 and record["target"] is None and record["meets"] is None
    line = h.summary([missed], note="context")
    assert "MISSES" not in line and f"; context; {h.SMOKE_NOTE} [" in line


def test_a_size_other_than_smoke_judges_targets(capsys: pytest.CaptureFixture[str]) -> None:
    h.parser("x").parse_args(["--quick"])
    missed = h.Figure("b", "rps", ours=50.0, baseline=100.0, unit="req/s", higher_is_better=True, target=0.9)
    h.emit(missed)
    assert json.loads(capsys.readouterr().out)["meets"] is False
    assert "MISSES target 0.9" in h.summary([missed]) and h.SMOKE_NOTE not in h.summary([missed])


def test_synthetic_flights_has_the_flights_schema_and_plausible_values() -> None:
    import pyarrow.compute as pc

    table = h.synthetic_flights(20_000, seed=3)
    assert table.schema.equals(h.FLIGHTS_SCHEMA) and table.num_rows == 20_000
    assert 0.02 < table["arr_delay"].null_count / table.num_rows < 0.04
    for column, low, high in [
        ("month", 1, 12),
        ("day", 1, 31),
        ("hour", 0, 23),
        ("minute", 0, 59),
        ("sched_dep_time", 0, 2359),
        ("sched_arr_time", 0, 2359),
        ("distance", 1, 6000),
    ]:
        bounds = pc.min_max(table[column]).as_py()
        assert low <= bounds["min"] and bounds["max"] <= high, column
    assert set(pc.unique(table["origin"]).to_pylist()) == {"EWR", "JFK", "LGA"}
    assert h.synthetic_flights(100, seed=3).equals(h.synthetic_flights(100, seed=3))  # seeded


def test_peak_tree_rss_sees_memory_of_a_child_process() -> None:
    import subprocess
    import time

    with h.PeakTreeRSS() as alone:
        block = bytearray(120 * 1024**2)  # pages touched by the zero fill
        time.sleep(0.1)
    del block
    assert alone.added_bytes > 100 * 1024**2
    child = "b = bytearray(150 * 1024**2); import time; time.sleep(1.5)"
    with h.PeakTreeRSS() as tree, h.PeakTreeRSS(children=False) as driver_only:
        subprocess.run([sys.executable, "-c", child], check=True)
    assert tree.added_bytes > 130 * 1024**2 > driver_only.added_bytes
