"""Rule checks over column statistics: a JSON-able report and the list of failed rules."""

from __future__ import annotations

from typing import Any

from raymlops.data.stats import TableStats

__all__ = ["check_rules"]


def _check(rule: str, passed: bool, observed: Any, expected: Any) -> dict[str, Any]:
    return {"rule": rule, "passed": passed, "observed": observed, "expected": expected}


def check_rules(stats: TableStats, num_rows: int, min_rows: int, rules: dict[str, Any]) -> dict[str, Any]:
    """Check ``rules`` (column -> ColumnRule-like mapping) against ``stats``.

    Returns a report ``{"passed", "failures", "rows", "columns": {name: {stats, checks}}}``; each failure
    names the column, the rule, what was observed and what was expected.
    """
    failures: list[str] = []
    columns: dict[str, Any] = {}
    if num_rows < min_rows:
        failures.append(f"table: min_rows: observed {num_rows} rows, expected at least {min_rows}")
    for name, rule in rules.items():
        checks: list[dict[str, Any]] = []
        column = stats.get(name)
        if column is None:
            checks.append(_check("present", False, "missing", "a column of that name"))
        else:
            checks.append(_check("type", column.kind == rule["type"], column.kind, rule["type"]))
            null_fraction = round(column.null_fraction, 6)
            checks.append(
                _check(
                    "max_null_fraction",
                    null_fraction <= rule["max_null_fraction"],
                    null_fraction,
                    rule["max_null_fraction"],
                )
            )
            if rule.get("min") is not None and column.min is not None:
                checks.append(_check("min", column.min >= rule["min"], column.min, f">= {rule['min']}"))
            if rule.get("max") is not None and column.max is not None:
                checks.append(_check("max", column.max <= rule["max"], column.max, f"<= {rule['max']}"))
            if rule.get("allowed") is not None:
                unexpected = sorted(set(column.counts) - set(rule["allowed"]))
                checks.append(_check("allowed", not unexpected, unexpected[:10], list(rule["allowed"])))
        failures += [
            f"column {name!r}: {c['rule']}: observed {c['observed']!r}, expected {c['expected']!r}"
            for c in checks
            if not c["passed"]
        ]
        columns[name] = (
            {"checks": checks} if column is None else {"stats": column.summary(), "checks": checks}
        )
    return {"passed": not failures, "failures": failures, "rows": num_rows, "columns": columns}
