"""Standard 5-field cron expressions, parsed and stepped in UTC, for ``retrain.schedule``.

``croniter`` is not a dependency of raymlops, and a schedule trigger needs only two questions answered:
"when is the next fire time after t?" and "did one pass between the last retrain and now?". So this is a
small parser of the standard syntax (``man 5 crontab``)::

    minute hour day-of-month month day-of-week      e.g. "0 3 * * 1" = Mondays at 03:00
    *  a  a-b  */n  a-b/n  a/n  lists "a,b-c"         month and weekday names: jan..dec, sun..sat
    @yearly @annually @monthly @weekly @daily @midnight @hourly

Day-of-week 0 and 7 are both Sunday. As in Vixie cron, when both day fields are restricted a day matches
if *either* does ("1 * 15 * 1" = the 15th and every Monday); when one is ``*`` only the other counts.
Times are UTC: a schedule means the same on every machine of a cluster.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from raymlops.errors import ConfigError

__all__ = ["CronSchedule", "parse_cron"]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# name, lowest, highest, names mapped to numbers
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {n: i + 1 for i, n in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {n: i for i, n in enumerate(_DAYS)}),
)
_Fail = Callable[[str], ConfigError]
_SEARCH_YEARS = 5  # "0 0 30 2 *" never fires: give up after this long instead of looping forever


def _value(text: str, low: int, high: int, names: dict[str, int], what: str, fail: _Fail) -> int:
    number = names.get(text.lower()) if not text.isdigit() else int(text)
    if number is None or not low <= number <= high:
        raise fail(f"{what} value {text!r} is not in {low}..{high}")
    return number


def _field(text: str, low: int, high: int, names: dict[str, int], what: str, fail: _Fail) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise fail(f"{what} step {step_text!r} is not a positive number")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _value(first, low, high, names, what, fail)
            end = _value(last, low, high, names, what, fail)
            if end < start:
                raise fail(f"{what} range {base!r} runs backwards")
        else:
            start = _value(base, low, high, names, what, fail)
            end = high if step_text else start  # "5/15" = 5, 20, 35, 50
        values.update(range(start, end + 1, step))
    return values


@dataclass(frozen=True)
class CronSchedule:
    """A parsed expression; ``next_after`` and ``due`` work on timezone-aware datetimes (naive = UTC)."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]  # of the month
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6 = Saturday
    any_day: bool  # the day-of-month field is "*"
    any_weekday: bool  # the day-of-week field is "*"

    def _day_matches(self, t: dt.datetime) -> bool:
        in_month = t.day in self.days
        in_week = (t.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def matches(self, t: dt.datetime) -> bool:
        """Whether the minute of ``t`` is a fire time."""
        t = _utc(t)
        return (
            t.minute in self.minutes
            and t.hour in self.hours
            and t.month in self.months
            and self._day_matches(t)
        )

    def next_after(self, t: dt.datetime) -> dt.datetime:
        """The first fire time strictly after ``t`` (minute resolution, UTC)."""
        t = _utc(t).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = t.year + _SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + dt.timedelta(hours=1)
            elif t.minute not in self.minutes:
                t += dt.timedelta(minutes=1)
            else:
                return t
        raise ConfigError("retrain.schedule", f"{self.expression!r} never fires (no date matches it).")

    def due(self, since: dt.datetime, now: dt.datetime) -> dt.datetime | None:
        """The first fire time in ``(since, now]``, or None when none passed."""
        fire = self.next_after(since)
        return fire if fire <= _utc(now) else None


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def parse_cron(expression: str, key: str = "retrain.schedule") -> CronSchedule:
    """Parse a 5-field cron expression or macro; a bad one is a ConfigError naming ``key`` and the field."""
    text = " ".join(str(expression).split())
    fields = MACROS.get(text.lower(), text).split(" ")

    def fail(problem: str) -> ConfigError:
        return ConfigError(
            key,
            f"{expression!r} is not a cron expression: {problem}. Use 5 fields "
            "'minute hour day-of-month month day-of-week', e.g. '0 3 * * 1', or one of "
            f"{', '.join(MACROS)}.",
        )

    if len(fields) != 5:
        raise fail(f"{len(fields)} field(s)")
    parsed = [
        _field(value, low, high, names, what, fail)
        for value, (what, low, high, names) in zip(fields, _FIELDS, strict=True)
    ]
    weekdays = {d % 7 for d in parsed[4]}
    schedule = CronSchedule(
        expression=text,
        minutes=frozenset(parsed[0]),
        hours=frozenset(parsed[1]),
        days=frozenset(parsed[2]),
        months=frozenset(parsed[3]),
        weekdays=frozenset(weekdays),
        any_day=fields[2].startswith("*"),
        any_weekday=fields[4].startswith("*"),
    )
    schedule.next_after(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))  # "never fires" is a config error too
    return schedule
