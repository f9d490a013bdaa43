"""Validation rules over column statistics name the column, the rule, the observed value and threshold."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pytest

from raymlops.data.stats import ColumnStats, DatasetStats, key_hashes, table_stats
from raymlops.data.validation import check_rules, parse_duration
from raymlops.errors import ConfigError


def _table() -> pa.Table:
    return pa.table(
        {
            "distance": [100, 200, None, 5000],
            "origin": ["EWR", "JFK", "XXX", None],
            "flight": [1, 2, 2, 3],
            "time_hour": pa.array([datetime(2013, 1, d, tzinfo=timezone.utc) for d in (1, 2, 3, 4)]),
        }
    )


def _stats(table: pa.Table, key: list[str] | None = None) -> DatasetStats:
    duplicates = table.num_rows - len(key_hashes(table, key)) if key else None
    return DatasetStats(table_stats(table), table.num_rows, duplicates)


def test_passing_rules_give_a_passing_report() -> None:
    rules = {
        "columns": {
            "distance": {"type": "numeric", "max_null_fraction": 0.5, "min": 0, "max": 6000},
            "origin": {"type": "string", "max_null_fraction": 0.5},
        }
    }
    report = check_rules(_stats(_table()), rules)
    assert report["passed"] and report["failures"] == [] and report["warnings"] == []
    assert report["columns"]["distance"]["stats"]["max"] == 5000


def test_each_failed_rule_is_reported() -> None:
    rules = {
        "min_rows": 10,
        "columns": {
            "distance": {"type": "numeric", "max_null_fraction": 0.0, "min": 150, "max": 1000},
            "origin": {"type": "string", "max_null_fraction": 0.0, "allowed": ["EWR", "JFK", "LGA"]},
            "dest": {"type": "string", "max_null_fraction": 0.0},
        },
    }
    report = check_rules(_stats(_table()), rules)
    failures = "\n".join(report["failures"])
    assert not report["passed"]
    assert "table: min_rows: observed 4, expected '>= 10'" in failures
    assert "column 'distance': max_null_fraction: observed 0.25, expected 0.0" in failures
    assert "column 'distance': min: observed 100.0" in failures
    assert "column 'distance': max: observed 5000.0" in failures
    assert "column 'origin': allowed: observed ['XXX']" in failures
    assert "column 'dest': present" in failures
    assert len(report["failures"]) == 7  # rows, 3 distance, origin nulls + domain, dest


def test_wrong_type_is_a_failure_and_optional_columns_may_be_missing() -> None:
    rules = {
        "columns": {
            "origin": {"type": "numeric", "max_null_fraction": 1.0},
            "dest": {"type": "string", "required": False},
        }
    }
    report = check_rules(_stats(_table()), rules)
    assert report["failures"] == ["column 'origin': type: observed 'string', expected 'numeric'"]


def test_warn_rules_are_reported_but_do_not_fail() -> None:
    rules = {
        "columns": {"distance": {"type": "numeric", "max_null_fraction": 1.0, "max": 10, "severity": "warn"}}
    }
    report = check_rules(_stats(_table()), rules)
    assert report["passed"] and report["failures"] == []
    assert report["warnings"] == ["column 'distance': max: observed 5000.0, expected '<= 10'"]


def test_row_bounds_and_key_uniqueness() -> None:
    rules = {"min_rows": 1, "max_rows": 3, "unique": {"key": ["flight"], "severity": "fail"}}
    report = check_rules(_stats(_table(), ["flight"]), rules)
    assert "table: max_rows: observed 4, expected '<= 3'" in report["failures"]
    assert "table: unique['flight']: observed '1 duplicate rows', expected '0'" in report["failures"]
    compound = check_rules(_stats(_table(), ["flight", "origin"]), {"unique": {"key": ["flight", "origin"]}})
    assert compound["duplicate_keys"] == 0 and compound["passed"]


def test_freshness_measures_the_newest_timestamp() -> None:
    rule = {"column": "time_hour", "max_age": "2d", "as_of": "2013-01-05", "severity": "fail"}
    assert check_rules(_stats(_table()), {"freshness": rule})["passed"]
    stale = check_rules(_stats(_table()), {"freshness": {**rule, "as_of": "2013-02-01"}})
    assert stale["failures"][0].startswith("table: freshness[time_hour]: observed 'newest 2013-01-04")
    now = datetime(2013, 1, 4, 12, tzinfo=timezone.utc)  # default as_of is now; warn severity
    assert check_rules(_stats(_table()), {"freshness": {**rule, "as_of": None, "max_age": "1h"}}, now)[
        "failures"
    ] == [
        "table: freshness[time_hour]: observed 'newest 2013-01-04T00:00:00+00:00 (12:00:00 old)', "
        "expected 'at most 1:00:00 before 2013-01-04T12:00:00+00:00'"
    ]


def test_durations_parse_or_name_the_formats() -> None:
    assert parse_duration("36h").total_seconds() == 36 * 3600
    with pytest.raises(ConfigError, match=r"validate\.freshness\.max_age.*<n>d"):
        parse_duration("a week")


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
