"""A self-contained HTML page of a validation report and a drift report: no scripts, no external assets."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["render_data_report"]

REFERENCE_COLOUR, CURRENT_COLOUR = "#4c78a8", "#f58518"

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:28px 0 8px}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:middle}
th{background:#f4f4f4}.num{text-align:right;font-variant-numeric:tabular-nums}
td.column{font-weight:600;vertical-align:top}
.summary td{border:none;padding:2px 16px 2px 0}.summary th{background:none;border:none;padding:2px 16px 2px 0}
.status{font-weight:600;text-align:center;border-radius:3px}
.pass,.ok{background:#e3f4e1;color:#1e6b1e}.fail,.drift{background:#fde2e1;color:#a11d1d}
.warn{background:#fff1d6;color:#8a5a00}
.muted{color:#777}ul.failures{color:#a11d1d;margin:4px 0}ul.warnings{color:#8a5a00;margin:4px 0}
.swatch{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    """Numbers for people: integers whole, large ones without decimals, tiny ones to 2 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, list | tuple) and not value:
        return "none"  # e.g. the values outside an allowed set: "[]" read as a rendering fault
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.2g}" if abs(value) < 0.001 else f"{value:.{digits}f}"


def _histogram(bins: dict[str, Any], width: int = 380, height: int = 96) -> str:
    """Reference vs current bin fractions as grouped bars, with a legend and a tooltip per bin."""
    labels, ref, cur = bins["labels"], bins["reference"], bins["current"]
    top, bottom = 14, 14
    plot = height - top - bottom
    peak = max([*ref, *cur, 1e-9])
    step = width / max(len(labels), 1)
    bar = max(step * 0.42, 0.5)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
        f'<rect x="{width - 150}" y="2" width="9" height="9" fill="{REFERENCE_COLOUR}"/>'
        f'<text x="{width - 138}" y="10" font-size="10">reference</text>'
        f'<rect x="{width - 80}" y="2" width="9" height="9" fill="{CURRENT_COLOUR}"/>'
        f'<text x="{width - 68}" y="10" font-size="10">current</text>',
    ]
    for i, (label, r, c) in enumerate(zip(labels, ref, cur, strict=True)):
        x = i * step + step * 0.08
        rh, ch = plot * r / peak, plot * c / peak
        parts.append(
            f"<g><title>{_e(label)}: reference {r:.2%}, current {c:.2%}</title>"
            f'<rect x="{x:.1f}" y="{top + plot - rh:.1f}" width="{bar:.1f}" height="{rh:.1f}" '
            f'fill="{REFERENCE_COLOUR}"/>'
            f'<rect x="{x + bar:.1f}" y="{top + plot - ch:.1f}" width="{bar:.1f}" height="{ch:.1f}" '
            f'fill="{CURRENT_COLOUR}"/></g>'
        )
    parts.append(f'<line x1="0" y1="{top + plot}" x2="{width}" y2="{top + plot}" stroke="#999"/>')
    if labels:
        parts.append(f'<text x="0" y="{height - 3}" font-size="10" fill="#555">{_e(labels[0])}</text>')
        parts.append(
            f'<text x="{width}" y="{height - 3}" font-size="10" fill="#555" text-anchor="end">'
            f"{_e(labels[-1])}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _summary(validation: dict[str, Any] | None, drift: dict[str, Any] | None) -> str:
    rows: list[tuple[str, str]] = []
    if drift is not None:
        rows.append(("Data version", _e(drift["current"]["data_version"])))
        rows.append(("Reference version", _e(drift["reference"]["data_version"])))
    rows_count = validation["rows"] if validation is not None else drift["current"]["rows"] if drift else None
    if rows_count is not None:
        rows.append(("Rows", f"{rows_count:,}"))
    if validation is not None:
        verdict = "pass" if validation["passed"] else "fail"
        failures, warnings = len(validation.get("failures", [])), len(validation.get("warnings", []))
        counts = f"{failures} failure{'s' * (failures != 1)}, {warnings} warning{'s' * (warnings != 1)}"
        badge = f'<span class="status {verdict}">&nbsp;{verdict.upper()}&nbsp;</span>'
        rows.append(("Validation", f"{badge} {_e(counts)}"))
    if drift is not None:
        count, total = len(drift["drifted_features"]), len(drift["features"])
        verdict = "drift" if drift["dataset_drift"] else "ok"
        text = "dataset drift" if drift["dataset_drift"] else "no dataset drift"
        rows.append(
            (
                "Drift",
                f"{count} of {total} features drifted ({drift['share_drifted']:.0%}; dataset threshold "
                f"{drift['thresholds']['share']:.0%}) "
                f'<span class="status {verdict}">&nbsp;{text}&nbsp;</span>',
            )
        )
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="summary">{body}</table>'


def _validation(validation: dict[str, Any]) -> str:
    out = ["<h2>Validation checks</h2>"]
    for kind in ("failures", "warnings"):
        if validation.get(kind):
            out.append(f'<ul class="{kind}">' + "".join(f"<li>{_e(f)}</li>" for f in validation[kind]))
            out.append("</ul>")
    out.append(
        "<table><tr><th>column</th><th>rule</th><th>observed</th><th>expected</th><th>status</th></tr>"
    )
    groups = [("(table)", validation.get("table", []))]
    groups += [(name, entry.get("checks", [])) for name, entry in validation.get("columns", {}).items()]
    for column, checks in groups:
        for i, check in enumerate(checks):
            status = "pass" if check["passed"] else "warn" if check.get("severity") == "warn" else "fail"
            name = f'<td class="column" rowspan="{len(checks)}">{_e(column)}</td>' if i == 0 else ""
            out.append(
                f'<tr class="check" data-column="{_e(column)}" data-status="{status}">{name}'
                f"<td>{_e(check['rule'])}</td><td>{_e(_fmt(check['observed']))}</td>"
                f'<td>{_e(_fmt(check["expected"]))}</td><td class="status {status}">{status}</td></tr>'
            )
    out.append("</table>")
    return "".join(out)


def _drift(drift: dict[str, Any]) -> str:
    limits = drift["thresholds"]
    out = [
        "<h2>Drift against the reference</h2>",
        f'<p class="muted">Numeric: drift if PSI ≥ {_e(limits["psi"])} or KS ≥ {_e(limits["ks"])}; '
        f"categorical: drift if PSI ≥ {_e(limits['psi'])} (chi-square shown for information). Bars: "
        f'<span class="swatch" style="background:{REFERENCE_COLOUR}"></span>reference'
        f'<span class="swatch" style="background:{CURRENT_COLOUR}"></span>current fraction per bin.</p>',
        '<table><tr><th>feature</th><th>kind</th><th class="num">PSI</th><th class="num">KS / χ² (p)</th>'
        "<th>status</th>"
        "<th>reference vs current</th></tr>",
    ]
    for name, entry in drift["features"].items():
        status = entry["status"]
        if "ks" in entry:
            second = _fmt(entry["ks"])
        elif "chi2" in entry:
            second = f"{_fmt(entry['chi2'], 1)} (p={entry['chi2_pvalue']:.2g})"
        else:
            second = "-"
        chart = _histogram(entry["bins"]) if entry.get("bins") else _e(entry.get("note", ""))
        out.append(
            f'<tr class="feature" data-feature="{_e(name)}" data-status="{status}"><td>{_e(name)}</td>'
            f'<td>{_e(entry["kind"])}</td><td class="num">{_e(_fmt(entry.get("psi")))}</td>'
            f'<td class="num">{_e(second)}</td><td class="status {status}">{status}</td><td>{chart}</td></tr>'
        )
    out.append("</table>")
    return "".join(out)


def render_data_report(validation: dict[str, Any] | None, drift: dict[str, Any] | None, title: str) -> str:
    """One HTML page: summary, validation checks per column, drift per feature with a histogram each.

    ``validation`` is :func:`raymlops.data.validation.check_rules`'s report, ``drift`` is
    :func:`raymlops.data.drift.drift_report`'s; either may be None. Every string is HTML-escaped.
    """
    sections = [_summary(validation, drift)]
    if validation is not None:
        sections.append(_validation(validation))
    if drift is not None:
        sections.append(_drift(drift))
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>{''.join(sections)}</body></html>\n"
    )
