"""Validation rules over column statistics name the column, the rule and the observed value."""

from __future__ import annotations

import pyarrow as pa

from raymlops.data.stats import ColumnStats, table_stats
from raymlops.data.validation import check_rules


def _table() -> pa.Table:
    return pa.table({"distance": [100, 200, None, 5000], "origin": ["EWR", "JFK", "XXX", None]})


def test_passing_rules_give_a_passing_report() -> None:
    rules = {
        "distance": {"type": "numeric", "max_null_fraction": 0.5, "min": 0, "max": 6000},
        "origin": {"type": "string", "max_null_fraction": 0.5},
    }
    report = check_rules(table_stats(_table()), 4, 1, rules)
    assert report["passed"] and report["failures"] == []
    assert report["columns"]["distance"]["stats"]["max"] == 5000


def test_each_failed_rule_is_reported() -> None:
    rules = {
        "distance": {"type": "numeric", "max_null_fraction": 0.0, "min": 150, "max": 1000},
        "origin": {"type": "string", "max_null_fraction": 0.0, "allowed": ["EWR", "JFK", "LGA"]},
        "dest": {"type": "string", "max_null_fraction": 0.0},
    }
    report = check_rules(table_stats(_table()), 4, 10, rules)
    failures = "\n".join(report["failures"])
    assert not report["passed"]
    assert "min_rows" in failures
    assert "column 'distance': max_null_fraction" in failures
    assert "column 'distance': min: observed 100.0" in failures
    assert "column 'distance': max: observed 5000.0" in failures
    assert "column 'origin': allowed: observed ['XXX']" in failures
    assert "column 'dest': present" in failures
    assert len(report["failures"]) == 7  # rows, 3 distance, origin nulls + domain, dest


def test_wrong_type_is_a_failure() -> None:
    report = check_rules(
        table_stats(_table()), 4, 1, {"origin": {"type": "numeric", "max_null_fraction": 1.0}}
    )
    assert report["failures"] == ["column 'origin': type: observed 'string', expected 'numeric'"]


def test_partial_statistics_merge_to_the_whole() -> None:
    whole = table_stats(_table())["distance"]
    a, b = (table_stats(_table().slice(i, 2))["distance"] for i in (0, 2))
    merged = a.merge(b)
    assert isinstance(merged, ColumnStats)
    assert (merged.rows, merged.nulls, merged.min, merged.max) == (
        whole.rows,
        whole.nulls,
        whole.min,
        whole.max,
    )
    assert abs(merged.mean - whole.mean) < 1e-9 and abs(merged.std - whole.std) < 1e-9
