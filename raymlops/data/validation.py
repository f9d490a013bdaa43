"""Rule checks over one pass of dataset statistics: a JSON-able report, failures and warnings.

Every check records rule, observed value, expected value and severity. ``fail`` checks that do not pass
become ``failures`` (the gate stops the pipeline); ``warn`` ones become ``warnings``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from raymlops.data.splits import parse_instant
from raymlops.data.stats import ColumnStats, DatasetStats
from raymlops.errors import ConfigError
from raymlops.security.pii import PIIMasker, mask_checks, mask_summary

__all__ = ["check_rules", "parse_duration", "stats_options"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str, key: str = "validate.freshness.max_age") -> timedelta:
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(key, f"cannot parse duration {text!r}.", ["<n>s", "<n>m", "<n>h", "<n>d"])
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


def _check(rule: str, passed: bool, observed: Any, expected: Any, severity: str) -> dict[str, Any]:
    return {"rule": rule, "passed": passed, "observed": observed, "expected": expected, "severity": severity}


def _column_checks(column: ColumnStats | None, rule: dict[str, Any]) -> list[dict[str, Any]]:
    sev = rule.get("severity", "fail")
    if column is None:
        return [_check("present", not rule.get("required", True), "missing", "a column of that name", sev)]
    checks = [_check("type", column.kind == rule["type"], column.kind, rule["type"], sev)]
    null_fraction = round(column.null_fraction, 6)
    limit = rule.get("max_null_fraction", 0.0)
    checks.append(_check("max_null_fraction", null_fraction <= limit, null_fraction, limit, sev))
    if rule.get("min") is not None and column.min is not None:
        checks.append(_check("min", column.min >= rule["min"], column.min, f">= {rule['min']}", sev))
    if rule.get("max") is not None and column.max is not None:
        checks.append(_check("max", column.max <= rule["max"], column.max, f"<= {rule['max']}", sev))
    if rule.get("allowed") is not None:
        # Exact at any size when the statistics pass counted them (stats_options); observed: 10 examples.
        unexpected, examples = column.unexpected_rows(rule["allowed"])
        check = _check("allowed", unexpected == 0, examples, list(rule["allowed"]), sev)
        check["unexpected_rows"] = unexpected
        checks.append(check)
    return checks


def stats_options(rules: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`raymlops.data.stats.compute_dataset_stats` that ``rules`` (the
    ``validate`` config as a dict) asks for: each ``allowed`` set, counted per block, and the bound on
    exact value counts (``validate.max_exact_distinct``)."""
    columns = rules.get("columns") or {}
    allowed = {
        name: list(rule["allowed"]) for name, rule in columns.items() if rule.get("allowed") is not None
    }
    options: dict[str, Any] = {"allowed": allowed or None}
    if rules.get("max_exact_distinct") is not None:
        limit = rules["max_exact_distinct"]
        if not isinstance(limit, int) or limit < 0:
            raise ConfigError(
                "validate.max_exact_distinct", f"{limit!r} is not a count: use a whole number >= 0."
            )
        options["max_exact_distinct"] = limit
    return options


def _table_checks(stats: DatasetStats, rules: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    rows = stats.rows
    checks = [
        _check("min_rows", rows >= rules.get("min_rows", 1), rows, f">= {rules.get('min_rows', 1)}", "fail")
    ]
    if rules.get("max_rows") is not None:
        checks.append(_check("max_rows", rows <= rules["max_rows"], rows, f"<= {rules['max_rows']}", "fail"))
    unique = rules.get("unique") or {}
    if unique.get("key"):
        duplicates = stats.duplicate_keys
        checks.append(
            _check(
                f"unique{list(unique['key'])}",
                duplicates == 0,
                f"{duplicates} duplicate rows",
                "0",
                unique.get("severity", "fail"),
            )
        )
    fresh = rules.get("freshness") or {}
    if fresh.get("column"):
        column = stats.columns.get(fresh["column"])
        as_of = parse_instant(fresh["as_of"], "validate.freshness.as_of") if fresh.get("as_of") else now
        max_age = parse_duration(fresh.get("max_age", "1d"))
        if column is None or column.kind != "timestamp" or column.max is None:
            checks.append(
                _check(
                    "freshness",
                    False,
                    "no timestamps",
                    f"column {fresh['column']!r}",
                    fresh.get("severity", "warn"),
                )
            )
        else:
            newest = datetime.fromtimestamp(column.max, tz=timezone.utc)
            age = as_of - newest
            checks.append(
                _check(
                    f"freshness[{fresh['column']}]",
                    age <= max_age,
                    f"newest {newest.isoformat()} ({age} old)",
                    f"at most {max_age} before {as_of.isoformat()}",
                    fresh.get("severity", "warn"),
                )
            )
    return checks


def _message(where: str, check: dict[str, Any]) -> str:
    return f"{where}: {check['rule']}: observed {check['observed']!r}, expected {check['expected']!r}"


def check_rules(
    stats: DatasetStats, rules: dict[str, Any], now: datetime | None = None, *, pii: PIIMasker | None = None
) -> dict[str, Any]:
    """Check ``rules`` (the ``validate`` config as a plain dict) against one pass of ``stats``.

    Returns ``{"passed", "failures", "warnings", "rows", "table": [checks], "columns": {name: {stats,
    checks}}}``; each failure or warning names the column, the rule, what was observed and expected.
    The checks of ``pii`` columns are judged on the raw values, then shown hashed or dropped
    (:func:`raymlops.security.pii.mask_checks`), messages included.
    """
    now = now or datetime.now(timezone.utc)
    failures: list[str] = []
    warnings: list[str] = []

    def triage(where: str, checks: list[dict[str, Any]]) -> None:
        for c in checks:
            if not c["passed"]:
                (failures if c["severity"] == "fail" else warnings).append(_message(where, c))

    table = _table_checks(stats, rules, now)
    triage("table", table)
    columns: dict[str, Any] = {}
    for name, rule in (rules.get("columns") or {}).items():
        column = stats.columns.get(name)
        checks = _column_checks(column, rule)
        summary = None if column is None else column.summary()
        if pii is not None and name in pii.columns:
            mask_checks(pii, checks)  # before triage: failure messages quote the observed values
            summary = None if summary is None else mask_summary(pii, summary)
        triage(f"column {name!r}", checks)
        columns[name] = {"checks": checks} if summary is None else {"stats": summary, "checks": checks}
    return {
        "passed": not failures,
        "failures": failures,
        "warnings": warnings,
        "rows": stats.rows,
        "duplicate_keys": stats.duplicate_keys,
        # Where the pass's partials went: bytes the driver received, Ray tasks that counted the keys.
        "driver_bytes": stats.driver_bytes,
        "key_buckets": stats.key_buckets,
        "table": table,
        "columns": columns,
    }
