"""The monitor report as one self-contained HTML page, next to its JSON (``report.html``).

Rendered from ``raymlops/templates/monitor_report.html.j2``, which shares the data report's frame,
drift table and histograms (``_partials.html.j2``): feature drift per version, prediction drift, live
metrics against test, latency per route against the SLO. Autoescaped: feature names and categories from
the traffic are shown as text.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_monitor_html"]


def render_monitor_html(report: dict[str, Any]) -> str:
    """The page of a :meth:`~raymlops.monitoring.report.MonitorReport.to_dict` report."""
    from raymlops.templates import render

    model = report["model"] + (f"@{report['selector']}" if report.get("selector") else "")
    return render("monitor_report.html.j2", report=report, title=f"Monitor: {model}")
