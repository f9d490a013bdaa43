"""What each column of a profiled table is for: a numeric or categorical feature, a leakage suspect, or
not a feature at all (the label, the split's time column, a constant, an identifier-like text column).

Suspects are judged by name only, and init lists them as comments for the user to decide: a name says
too little to drop a column silently, and too much to train on it unasked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from raymlops.data.stats import ColumnStats
from raymlops.scaffold.profile import TableProfile

__all__ = ["LEAK_WORDS", "ColumnPlan", "plan_columns"]

# Words that name the answer itself, or something known only once the answer is.
LEAK_WORDS = frozenset(
    {"target", "outcome", "label", "result", "response", "actual", "truth", "answer", "prediction"}
    | {"predicted"}
)
_ID_WORDS = frozenset({"id", "uuid", "guid", "idx", "rownum"})
# A string column with more distinct values than this share of its rows is an identifier or free text.
MAX_DISTINCT_SHARE = 0.5
MIN_DISTINCT_FOR_TEXT = 20


@dataclass(frozen=True)
class ColumnPlan:
    numeric: list[str] = field(default_factory=list)  # features.numeric
    categorical: list[str] = field(default_factory=list)  # features.categorical
    suspects: dict[str, str] = field(default_factory=dict)  # column -> why its name suggests leakage
    skipped: dict[str, str] = field(default_factory=dict)  # column -> why it is no feature


def _words(name: str) -> list[str]:
    """``arrDelay_min`` -> ["arr", "delay", "min"]: snake, kebab, dotted and camel case alike."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


def _suspicion(name: str, label: str) -> str | None:
    words, label_words = _words(name), _words(label)
    if set(words) & _ID_WORDS:
        return "its name looks like an identifier: row keys memorise, they do not generalise"
    if words and words == ["y"]:
        return "'y' usually names the answer"
    if leak := sorted(set(words) & LEAK_WORDS):
        return f"{leak[0]!r} in its name suggests the answer or something known only after it"
    shared = sorted(w for w in set(words) & set(label_words) if len(w) >= 3)
    if shared or label.lower() in name.lower():
        what = repr(shared[0]) if shared else repr(label)
        return f"it shares {what} with the label {label!r}: it may be derived from it or measured with it"
    return None


def _constant(stats: ColumnStats) -> bool:
    if stats.non_null == 0:
        return True
    if stats.kind == "string":
        return stats.distinct <= 1
    return stats.min is not None and stats.min == stats.max


def plan_columns(profile: TableProfile) -> ColumnPlan:
    """Every column but the label sorted into features, suspects and skipped columns, in table order."""
    plan = ColumnPlan()
    for name, stats in profile.columns.items():
        if name == profile.label:
            continue
        if name == profile.time_column:
            plan.skipped[name] = "the split's time column"
            continue
        if stats.kind == "timestamp":
            plan.suspects[name] = (
                "a timestamp: one set after the event (closed_at, shipped_on) leaks the outcome; "
                "one before it is better used as features derived from it (hour, weekday)"
            )
            continue
        if why := _suspicion(name, profile.label):
            plan.suspects[name] = why
            continue
        if stats.kind == "other":
            plan.skipped[name] = f"type {profile.types.get(name, 'other')} is neither numeric nor text"
        elif _constant(stats):
            plan.skipped[name] = "one value (or none) in every row: it cannot tell rows apart"
        elif stats.kind == "numeric":
            plan.numeric.append(name)
        elif stats.distinct > max(MIN_DISTINCT_FOR_TEXT, MAX_DISTINCT_SHARE * stats.non_null):
            plan.suspects[name] = (
                f"{stats.distinct} distinct values in {stats.non_null} rows: an identifier or free text, "
                "which one-hot encoding cannot use"
            )
        else:
            plan.categorical.append(name)
    return plan
