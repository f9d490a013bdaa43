"""The monitor's shadow section per task, and the shadow figures of ``serve status``, on logged rows.

The rows have the prediction log's schema (as ``read_predictions`` returns them): each shadowed request
has its served rows and its ``route=shadow`` rows under one prediction id. The agreement is the served
version's task comparing both (binary: labels; multiclass: the class; regression: within 5%)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from raymlops.monitoring.report import _shadow_part
from raymlops.monitoring.shadow_checks import shadow_section
from raymlops.serving.shadow import check_fraction, shadow_summary
from raymlops.tasks.binary import BinaryTask
from raymlops.tasks.multiclass import MulticlassTask
from raymlops.tasks.regression import RegressionTask


def _rows(kind: str, served: list[Any], shadow: list[Any], *, per_request: int = 2) -> pa.Table:
    """Requests of ``per_request`` rows, answered by v1 (served, 2 ms) and mirrored to v2 (shadow, 5 ms)."""
    columns: dict[str, list[Any]] = {
        c: [] for c in ("prediction_id", "row", "version", "route", "latency_ms")
    }
    outputs: dict[str, list[Any]] = {"probability": [], "value": [], "probabilities": []}
    for version, route, preds, latency in (("1", "served", served, 2.0), ("2", "shadow", shadow, 5.0)):
        for i, pred in enumerate(preds):
            columns["prediction_id"].append(f"p{i // per_request}")
            columns["row"].append(i % per_request)
            columns["version"].append(version)
            columns["route"].append(route)
            columns["latency_ms"].append(latency + i // per_request)
            outputs["probability"].append(pred if kind == "probability" else None)
            outputs["value"].append(pred if kind == "value" else None)
            outputs["probabilities"].append(pred if kind == "classes" else None)
    table = pa.table({**columns, "row": pa.array(columns["row"], pa.int32())})
    types = {"probability": pa.float64(), "value": pa.float64(), "probabilities": pa.list_(pa.float64())}
    for name, values in outputs.items():
        table = table.append_column(name, pa.array(values, types[name]))
    return table


@pytest.mark.parametrize(
    ("task", "kind", "served", "shadow", "agreement"),
    [
        (BinaryTask(threshold=0.0), "probability", [0.2, 0.7, 0.9, 0.4], [0.3, 0.4, 0.8, 0.45], 0.75),
        (
            MulticlassTask(classes=("a", "b", "c")),
            "classes",
            [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]],
            [[0.6, 0.3, 0.1], [0.1, 0.3, 0.6], [0.1, 0.2, 0.7], [0.4, 0.5, 0.1]],
            0.5,
        ),
        (RegressionTask(), "value", [100.0, 200.0, 50.0, 10.0], [102.0, 230.0, 51.0, 10.2], 0.75),
    ],
)
def test_shadow_section_compares_by_the_served_task(
    task: Any, kind: str, served: list[Any], shadow: list[Any], agreement: float
) -> None:
    section = shadow_section(_rows(kind, served, shadow), lambda version: task)
    assert set(section) == {"2"}
    entry = section["2"]
    assert entry["rows"] == 4 and entry["requests"] == 2 and entry["unmatched_rows"] == 0
    c = entry["against"]["1"]
    assert c["compared"] and c["agreement"] == pytest.approx(agreement)
    diff = np.abs(np.asarray(served, np.float64) - np.asarray(shadow, np.float64)).mean()
    assert c["mean_abs_diff"] == pytest.approx(diff, rel=1e-5)
    # Latency over requests (2 of them: 2 and 3 ms served, 5 and 6 ms shadow), not over rows.
    assert c["latency_ms"]["served"]["p50"] == pytest.approx(2.5)
    assert c["latency_ms"]["shadow"]["p50"] == pytest.approx(5.5)
    assert _shadow_part("1", c).startswith(f"shadow of v1: agreement {agreement:.3f} on 4 rows (2 requests)")


def test_a_shadow_of_another_task_is_counted_not_compared() -> None:
    tasks = {"1": BinaryTask(threshold=0.0), "2": RegressionTask()}
    section = shadow_section(_rows("probability", [0.2, 0.7], [0.3, 0.4]), tasks.__getitem__)
    c = section["2"]["against"]["1"]
    assert not c["compared"] and c["agreement"] is None and "not compared" in c["note"]
    assert shadow_section(_rows("probability", [0.2], [])[:1], tasks.__getitem__) == {}


def test_status_summary_reads_the_router_stats() -> None:
    window = {"latency_ms": {"p50": 1.5, "p99": 4.0}}
    stats = {
        "shadow": {"version": "3", "fraction": 0.2, "dropped_total": 1},
        "versions": {
            "1": {
                "weight": 90.0,
                "served": {"window": {"latency_ms": {"p50": 1.0, "p99": 2.0}}},
                "shadow": None,
            },
            "2": {"weight": 10.0, "served": {"window": {}}, "shadow": None},
            "3": {
                "weight": 0.0,
                "served": None,
                "shadow": {
                    "requests_total": 40,
                    "errors_total": 0,
                    "window": window,
                    "agreement": {"compared": 40, "label_agreement": 0.95, "mean_abs_diff": 0.03},
                },
            },
        },
    }
    summary = shadow_summary(stats)
    assert summary is not None
    assert (summary["version"], summary["champion"], summary["agreement"], summary["compared"]) == (
        "3",
        "1",
        0.95,
        40,
    )
    assert (summary["p50_ms"], summary["champion_p50_ms"], summary["dropped"]) == (1.5, 1.0, 1)
    assert shadow_summary({"shadow": None, "versions": {}}) is None


def test_fraction_must_be_a_share_of_requests() -> None:
    assert check_fraction("0.25") == 0.25 and check_fraction(1) == 1.0
    for bad in (0, -0.5, 1.01, "x", None, True, float("nan")):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            check_fraction(bad, "serve.shadow_fraction")


def test_a_bad_fraction_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``serve shadow NAME VERSION --fraction F``: a bad F is exit 2 with the message, before any work."""
    from raymlops.cli import main

    for bad in ("1.5", "0", "-0.1", "half"):
        with pytest.raises(SystemExit) as exit_info:
            main(["serve", "shadow", "flights", "2", "--fraction", bad])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "--fraction" in err and "(0, 1]" in err and repr(bad) in err, err
