"""A self-contained HTML page of a validation report and a drift report: no scripts, no external assets.

The markup is ``raymlops/templates/data_report.html.j2`` (Jinja2, autoescaped): every column name,
category and version string is shown as text.
"""

from __future__ import annotations

from typing import Any

from raymlops.templates import CURRENT_COLOUR, REFERENCE_COLOUR, render

__all__ = ["CURRENT_COLOUR", "REFERENCE_COLOUR", "render_data_report"]


def render_data_report(validation: dict[str, Any] | None, drift: dict[str, Any] | None, title: str) -> str:
    """One HTML page: summary, validation checks per column, drift per feature with a histogram each.

    ``validation`` is :func:`raymlops.data.validation.check_rules`'s report, ``drift`` is
    :func:`raymlops.data.drift.drift_report`'s; either may be None. Every string is HTML-escaped.
    """
    return render("data_report.html.j2", validation=validation, drift=drift, title=title)
