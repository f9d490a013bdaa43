"""Retraining triggers and the cron parser behind ``retrain.schedule``: pure functions, no Ray."""

from __future__ import annotations

import datetime as dt

import pytest

from raymlops.errors import ConfigError
from raymlops.monitoring.cron import parse_cron
from raymlops.monitoring.report import MonitorReport
from raymlops.monitoring.triggers import fired, monitor_decisions, new_data_decision, schedule_decision
from tests.conftest import load_script

UTC = dt.UTC


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 3 * * 1", at(2026, 11, 26, 12, 0), at(2026, 11, 30, 3, 0)),  # Thursday -> Monday 03:00
        ("*/15 9-17 * * mon-fri", at(2026, 11, 28, 12, 0), at(2026, 11, 30, 9, 0)),  # Saturday
        ("*/15 9-17 * * mon-fri", at(2026, 11, 30, 9, 7), at(2026, 11, 30, 9, 15)),
        ("@monthly", at(2026, 12, 31, 23, 59), at(2027, 1, 1, 0, 0)),
        ("0 0 29 feb *", at(2026, 3, 1), at(2028, 2, 29)),  # leap day
        ("5/20 * * * *", at(2026, 1, 1, 0, 46), at(2026, 1, 1, 1, 5)),  # 5, 25, 45
        ("0 12 * * 7", at(2026, 11, 26), at(2026, 11, 29, 12, 0)),  # 7 is Sunday too
        # Both day fields restricted: either matches (the 1st, or any Friday).
        ("0 0 1 * fri", at(2026, 11, 26), at(2026, 11, 27)),
        ("0 0 1 * fri", at(2026, 11, 27), at(2026, 12, 1)),
        ("30 1 * jan,jul *", at(2026, 2, 1), at(2026, 7, 1, 1, 30)),
    ],
)
def test_cron_next_fire_time(expression: str, after: dt.datetime, expected: dt.datetime) -> None:
    assert parse_cron(expression).next_after(after) == expected


def test_cron_next_is_strictly_after_and_due_is_a_half_open_window() -> None:
    daily = parse_cron("0 3 * * *")
    assert daily.next_after(at(2026, 1, 1, 3, 0)) == at(2026, 1, 2, 3, 0)
    assert daily.matches(at(2026, 1, 1, 3, 0, 30)) and not daily.matches(at(2026, 1, 1, 3, 1))
    assert daily.due(at(2026, 1, 1, 3, 0), at(2026, 1, 2, 2, 59)) is None
    assert daily.due(at(2026, 1, 1, 3, 0), at(2026, 1, 2, 3, 0)) == at(2026, 1, 2, 3, 0)
    naive = dt.datetime(2026, 1, 1, 2, 0)  # naive means UTC
    assert daily.next_after(naive) == at(2026, 1, 1, 3, 0)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("* * *", "3 field(s)"),
        ("61 * * * *", "minute value '61'"),
        ("* 24 * * *", "hour value '24'"),
        ("* * 0 * *", "day of month value '0'"),
        ("* * * foo *", "month value 'foo'"),
        ("5-1 * * * *", "runs backwards"),
        ("*/0 * * * *", "step '0'"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_bad_cron_is_a_config_error_naming_the_key(expression: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_cron(expression)
    assert info.value.key == "retrain.schedule" and problem in str(info.value)


def test_new_data_fires_on_a_newer_delta_version_with_the_row_counts() -> None:
    decision = new_data_decision("delta:/d/t@5", "delta:/d/t@3", rows=(1000, 1400))
    assert decision.fired and "5 > 3" in decision.reason and "+400 rows" in decision.reason
    assert decision.figures["new_rows"] == 400
    same = new_data_decision("delta:/d/t@3", "delta:/d/t@3", rows=(1000, 1000))
    assert not same.fired and same.figures["new_rows"] == 0
    older = new_data_decision("delta:/d/t@2", "delta:/d/t@3")  # a pinned, older data.ref
    assert not older.fired


def test_new_data_other_table_no_champion_and_already_tried() -> None:
    assert new_data_decision("delta:/d/other@0", "delta:/d/t@3").fired
    assert new_data_decision("lakefs://repo/c2/flights", "lakefs://repo/c1/flights").fired
    assert not new_data_decision("lakefs://repo/c1/flights", "lakefs://repo/c1/flights").fired
    first = new_data_decision("delta:/d/t@0", None)
    assert first.fired and "no champion" in first.reason
    tried = new_data_decision("delta:/d/t@5", "delta:/d/t@3", last_tried="delta:/d/t@5")
    assert not tried.fired and "already retrained" in tried.reason
    assert new_data_decision("delta:/d/t@6", "delta:/d/t@3", last_tried="delta:/d/t@5").fired
    assert not new_data_decision("delta:/d/t@0", None, last_tried="delta:/d/t@0").fired  # first try failed


def report(version_entry: dict, alerts: list[dict]) -> MonitorReport:
    return MonitorReport(
        model="m",
        selector="champion",
        since="2026-01-01T00:00:00Z",
        until="2026-01-02T00:00:00Z",
        generated_at=0.0,
        log_root="/log",
        read_with="pyarrow",
        rows=sum(version_entry.get("rows", {}).values()),
        versions={"3": version_entry} if version_entry else {},
        alerts=tuple(alerts),
        warnings=(),
        thresholds={},
    )


ENTRY = {
    "rows": {"served": 600},
    "feature_drift": {
        "judged": True,
        "features": {"distance": {"psi": 0.41, "ks": 0.2}, "hour": {"psi": 0.02, "ks": 0.01}},
        "drifted_features": ["distance"],
    },
    "prediction_drift": {"psi": 0.05},
    "accuracy": {
        "rows": 500,
        "judged": True,
        "live": {"accuracy": 0.70, "auc": 0.66},
        "test": {"accuracy": 0.80, "auc": 0.70},
        "drop": {"accuracy": 0.10, "auc": 0.04},
    },
}


def test_monitor_alerts_fire_drift_and_accuracy_with_their_numbers() -> None:
    alerts = [
        {"version": "3", "kind": "feature_drift", "detail": "distance (psi 0.410, ks 0.200)"},
        {"version": "3", "kind": "accuracy_drop", "detail": "test 0.8000 -> live 0.7000"},
        {"version": "9", "kind": "prediction_drift", "detail": "another version"},
    ]
    drift, accuracy = monitor_decisions(report(ENTRY, alerts), "3")
    assert drift.fired and "distance (psi 0.410" in drift.reason
    assert drift.figures["drifted_features"] == {"distance": {"psi": 0.41, "ks": 0.2}}
    assert drift.figures["max_feature_psi"] == {"feature": "distance", "psi": 0.41}
    assert accuracy.fired and accuracy.figures["drop"]["accuracy"] == 0.10
    assert accuracy.figures["labelled_rows"] == 500 and accuracy.figures["live"]["accuracy"] == 0.70
    # Only the asked-for triggers, and alerts of another version never fire this one's.
    [only] = monitor_decisions(report(ENTRY, alerts[2:]), "3", on_drift=True, on_accuracy_drop=False)
    assert only.trigger == "drift" and not only.fired and "max feature psi 0.410" in only.reason


def test_monitor_without_alerts_or_traffic_does_not_fire() -> None:
    drift, accuracy = monitor_decisions(report(ENTRY, []), "3")
    assert not drift.fired and not accuracy.fired
    assert "live accuracy 0.700 vs test 0.800 on 500 labelled rows" in accuracy.reason
    quiet = monitor_decisions(report({}, []), "3")
    assert fired(quiet) == [] and all("no traffic of v3" in d.reason for d in quiet)


def test_schedule_fires_once_a_fire_time_passed_since_the_last_retrain() -> None:
    weekly = "0 3 * * 1"
    last = at(2026, 11, 23, 3, 0)  # a Monday, when the last retrain ran
    waiting = schedule_decision(weekly, last, at(2026, 11, 29, 23, 0))
    assert not waiting.fired and waiting.figures["next"] == at(2026, 11, 30, 3, 0).isoformat()
    due = schedule_decision(weekly, last, at(2026, 11, 30, 3, 5))
    assert due.fired and "due at 2026-11-30 03:00" in due.reason
    assert schedule_decision(weekly, None, at(2026, 11, 30)).fired  # never retrained: due now
    with pytest.raises(ConfigError, match=r"retrain\.schedule"):
        schedule_decision("every monday", last, at(2026, 11, 30))


def _retrain_job():  # -> module jobs/retrain.py
    return load_script("jobs/retrain.py", "retrain_job")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("retrain.on_drfit=true", "Did you mean 'on_drift'"),
        ("retrain.schedule='0 3 * * 8'", "day of week value '8'"),
    ],
)
def test_retrain_job_exits_2_naming_the_bad_key(
    tmp_path, override: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _retrain_job().main([f"state_dir={tmp_path}", override]) == 2
    err = capsys.readouterr().err
    assert "retrain." in err and message in err
