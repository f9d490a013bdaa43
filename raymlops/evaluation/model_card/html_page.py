"""A model card as one self-contained HTML page: inline CSS, the SHAP summary as a ``data:`` URI, no
scripts, no external assets; every user-provided string HTML-escaped."""

from __future__ import annotations

import base64
import html
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from raymlops.evaluation.model_card.card import NOT_RECORDED, ModelCard
from raymlops.evaluation.model_card.formatting import (
    CHAMPION_NOTE,
    METRICS_NOTE,
    NO_CHAMPION,
    better_way,
    delta,
    direction,
    fmt,
    fmt_delta,
    is_count,
    plural,
    slice_metrics,
    sorted_shap,
    table_rows,
    task_facts,
    time_range,
    total_rows,
    union,
    verdict,
)
from raymlops.evaluation.model_card.picture import picture_caption, picture_svg

__all__ = ["render_html"]

_STYLE = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#f5f6f8}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px}
header{display:flex;align-items:center;gap:16px;flex-wrap:wrap;margin-bottom:4px}
h1{font-size:24px;margin:0}h2{font-size:17px;margin:0 0 10px}h3{font-size:14px;margin:14px 0 6px}
.sub{color:#555;margin:0 0 12px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:14px 20px 16px;margin:14px 0}
table{border-collapse:collapse;margin:2px 0 6px;max-width:100%}
th,td{border-bottom:1px solid #e6e6e6;padding:4px 14px 4px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600;white-space:nowrap}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.facts th{background:none;border:none;color:#555;font-weight:500;padding:2px 16px 2px 0}
.facts td{border:none;padding:2px 0}
.badge{display:inline-block;font-weight:700;letter-spacing:.06em;padding:3px 12px;border-radius:4px}
.small{font-size:12px;padding:1px 8px}
.pass{background:#e3f4e1;color:#1e6b1e}.fail{background:#fde2e1;color:#a11d1d}
.none{background:#eceef1;color:#555}
.better{color:#1e6b1e}.worse{color:#a11d1d}
.muted{color:#777}.mark{font-size:16px;font-weight:700;text-align:center}.ok{color:#1e6b1e}.bad{color:#a11d1d}
code{font:12.5px/1.3 ui-monospace,SFMono-Regular,Menlo,monospace;background:#f1f2f4;padding:1px 4px;
border-radius:3px;word-break:break-all}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));gap:4px 36px;align-items:start}
.bar{display:inline-block;height:10px;background:#4c78a8;border-radius:2px;vertical-align:middle}
img.shap{max-width:100%;height:auto;border:1px solid #e6e6e6;border-radius:4px}
section p{margin:6px 0}section>:last-child,.grid>div>:last-child{margin-bottom:0}
.grid>div>:first-child{margin-top:0}
ul{margin:4px 0;padding-left:22px}ul.failures{color:#a11d1d}ul.warnings{color:#8a5a00}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _nr() -> str:
    return f'<p class="muted">{NOT_RECORDED}</p>'


def _th(text: str, numeric: bool = False) -> str:
    return f'<th class="num">{text}</th>' if numeric else f"<th>{text}</th>"


def _td(text: str, numeric: bool = False, css: str = "") -> str:
    classes = " ".join(c for c in ("num" if numeric else "", css) if c)
    return f'<td class="{classes}">{text}</td>' if classes else f"<td>{text}</td>"


def _facts(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="facts">{body}</table>'


def _html_mapping(data: Mapping[str, Any], first: str) -> str:
    columns, numeric, rows = table_rows(data)
    head = _th(_e(first)) + "".join(_th(_e(c), n) for c, n in zip(columns, numeric, strict=True))
    body = "".join(
        "<tr>"
        + _td(_e(name))
        + "".join(
            _td(_e(fmt(values.get(c), is_count(c))) if c in values else "", n)
            for c, n in zip(columns, numeric, strict=True)
        )
        + "</tr>"
        for name, values in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _html_training(card: ModelCard) -> str:
    training = card.training_data
    if not training:
        return _nr()
    rows = training.get("rows") or {}
    facts = [
        ("Data version", f"<code>{_e(training.get('data_version') or NOT_RECORDED)}</code>"),
        ("Time range", _e(time_range(training) or NOT_RECORDED)),
    ]
    if rows:
        total = total_rows(rows)
        facts.append(("Rows", _e(fmt(total))))
        split_rows = "".join(f"<tr>{_td(_e(s))}{_td(_e(fmt(n, True)), True)}</tr>" for s, n in rows.items())
        splits = f"<table><tr>{_th('split')}{_th('rows', True)}</tr>{split_rows}</table>"
    else:
        facts.append(("Rows", NOT_RECORDED))
        splits = ""
    schema = training.get("schema") or {}
    if schema:
        body = "".join(f"<tr>{_td(_e(c))}{_td(f'<code>{_e(t)}</code>')}</tr>" for c, t in schema.items())
        schema_html = f"<h3>Schema</h3><table><tr>{_th('column')}{_th('type')}</tr>{body}</table>"
    else:
        schema_html = f"<h3>Schema</h3>{_nr()}"
    return f'<div class="grid"><div>{_facts(facts)}{splits}</div><div>{schema_html}</div></div>'


def _html_model(card: ModelCard) -> str:
    if not card.model:
        return _nr()
    extra = {k: v for k, v in card.model.items() if k not in ("family", "hyperparameters")}
    facts = [("Family", _e(card.model.get("family") or NOT_RECORDED))]
    facts += [(k, _e(fmt(v))) for k, v in extra.items()]
    params = card.model.get("hyperparameters") or {}
    table = _html_mapping(params, "parameter") if params else _nr()
    return f"{_facts(facts)}<h3>Hyperparameters</h3>{table}"


def _html_metrics(card: ModelCard) -> str:
    champion = card.champion
    names = union([card.metrics, card.baseline, (champion or {}).get("metrics") or {}])
    if not names:
        return _nr()
    head = _th("metric") + (_th("better") if card.directions else "")
    head += _th("this model", True) + _th("baseline", True)
    if champion is not None:
        head += _th(f"champion v{_e(champion.get('version', '?'))}", True) + _th("Δ vs champion", True)
    body = []
    for name in names:
        count = is_count(name)
        value = card.metrics.get(name)
        cells = _td(_e(name)) + (_td(_e(better_way(name, card.directions))) if card.directions else "")
        cells += _td(f"<strong>{_e(fmt(value, count))}</strong>", True)
        cells += _td(_e(fmt(card.baseline.get(name), count)), True)
        if champion is not None:
            theirs = (champion.get("metrics") or {}).get(name)
            diff = delta(value, theirs)
            cells += _td(_e(fmt(theirs, count)), True)
            cells += _td(_e(fmt_delta(diff)), True, direction(name, diff, card.directions))
        body.append(f'<tr data-metric="{_e(name)}">{cells}</tr>')
    note = METRICS_NOTE + (NO_CHAMPION if champion is None else CHAMPION_NOTE)
    return f'<table><tr>{head}</tr>{"".join(body)}</table><p class="muted">{note}</p>'


def _html_slices(card: ModelCard) -> str:
    if not card.slices:
        return _nr()
    parts = []
    for column, rows in card.slices.items():
        metrics = slice_metrics(rows)
        head = _th("value") + _th("rows", True) + "".join(_th(_e(m), True) for m in metrics)
        body = "".join(
            f'<tr data-slice="{_e(column)}">'
            + _td(_e(row.get("value", "")))
            + _td(_e(fmt(row.get("rows"), True)), True)
            + "".join(_td(_e(fmt(row.get(m))), True) for m in metrics)
            + "</tr>"
            for row in rows
        )
        parts.append(f"<div><h3>By <code>{_e(column)}</code></h3><table><tr>{head}</tr>{body}</table></div>")
    return f'<div class="grid">{"".join(parts)}</div>'


def _html_gates(card: ModelCard) -> str:
    if not card.gates:
        return _nr()
    body = "".join(
        f'<tr class="gate" data-passed="{str(bool(g.get("passed"))).lower()}">'
        + _td("✓" if g.get("passed") else "✗", css="mark " + ("ok" if g.get("passed") else "bad"))
        + _td(f"<code>{_e(g.get('gate', ''))}</code>")
        + _td(
            f'<span class="badge small {"pass" if g.get("passed") else "fail"}">'
            f"{'pass' if g.get('passed') else 'fail'}</span>"
        )
        + _td(_e(g.get("detail", "")))
        + "</tr>"
        for g in card.gates
    )
    return f"<table><tr>{_th('')}{_th('gate')}{_th('status')}{_th('detail')}</tr>{body}</table>"


def _html_explanations(card: ModelCard) -> str:
    shap = card.shap
    parts = []
    if shap is None:
        parts.append(f'<p class="muted">SHAP values: {NOT_RECORDED}.</p>')
    else:
        ranked = sorted_shap(shap)
        peak = max(
            (float(v) for _, v in ranked if isinstance(v, numbers.Real) and math.isfinite(float(v))),
            default=0.0,
        )
        rows = []
        for name, value in ranked:
            finite = isinstance(value, numbers.Real) and math.isfinite(float(value))
            width = 160 * float(value) / peak if finite and peak > 0 else 0
            rows.append(
                f"<tr>{_td(_e(name))}{_td(_e(fmt(value)), True)}"
                f'<td><span class="bar" style="width:{width:.1f}px"></span></td></tr>'
            )
        parts.append(
            f'<p class="muted">{_e(shap.get("aggregation") or "mean |SHAP|")}: '
            f"{_e(shap.get('method', 'n/a'))}, {_e(shap.get('output_space', 'n/a'))} space, "
            f"{_e(fmt(shap.get('rows'), True))} rows, {_e(fmt(shap.get('seconds')))} s.</p>"
            f"<table><tr>{_th('feature')}{_th('mean |SHAP|', True)}{_th('')}</tr>{''.join(rows)}</table>"
        )
    if card.shap_png is not None:
        encoded = base64.b64encode(card.shap_png).decode("ascii")
        parts.append(f'<img class="shap" alt="SHAP summary" src="data:image/png;base64,{encoded}">')
    return f'<div class="grid">{"".join(f"<div>{p}</div>" for p in parts)}</div>'


def _html_task(card: ModelCard) -> str:
    if not card.task:
        return _nr()
    return _facts((k, _e(v)) for k, v in task_facts(card.task))


def _html_picture(card: ModelCard) -> str:
    svg = picture_svg(card.picture) if card.picture else ""
    if not svg:
        return _nr()
    assert card.picture is not None
    return f'<p class="muted">{_e(picture_caption(card.picture))}</p>{svg}'


def _html_validation(card: ModelCard) -> str:
    validation = card.validation
    if validation is None:
        return _nr()
    failures, warnings = validation.get("failures") or [], validation.get("warnings") or []
    css = "pass" if validation.get("passed") else "fail"
    out = [
        f'<p><span class="badge small {css}">{css.upper()}</span> '
        f"{plural(len(failures), 'failure')}, {plural(len(warnings), 'warning')}</p>"
    ]
    for kind, items in (("failures", failures), ("warnings", warnings)):
        if items:
            out.append(f'<ul class="{kind}">' + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>")
    return "".join(out)


def _html_lineage(card: ModelCard) -> str:
    if not card.lineage:
        return _nr()
    return _facts((k, f"<code>{_e(v)}</code>") for k, v in card.lineage.items())


def render_html(card: ModelCard) -> str:
    """The card as one self-contained HTML page: inline CSS, the SHAP PNG inline, every string escaped."""
    css, label = verdict(card.gates_passed)
    title = f"Model card: {card.model_name} v{card.version}"
    failed = sum(1 for g in card.gates if not g.get("passed"))
    gate_note = (
        f"{len(card.gates) - failed} of {len(card.gates)} gates passed" if card.gates else "no gates recorded"
    )
    lineage = card.lineage
    sub = [f"created {_e(card.created or NOT_RECORDED)}", _e(gate_note)]
    if card.training_data.get("data_version"):
        sub.append(f"data <code>{_e(card.training_data['data_version'])}</code>")
    if lineage.get("git_sha"):
        sub.append(f"git <code>{_e(lineage['git_sha'])}</code>")
    limitations = (
        "<ul>" + "".join(f"<li>{_e(item)}</li>" for item in card.limitations) + "</ul>"
        if card.limitations
        else _nr()
    )
    sections = [
        ("Intended use", f"<p>{_e(card.intended_use)}</p>" if card.intended_use else _nr()),
        ("Task", _html_task(card)),
        ("Training data", _html_training(card)),
        ("Preprocessing", _html_mapping(card.preprocessing, "feature") if card.preprocessing else _nr()),
        ("Model", _html_model(card)),
        ("Metrics", _html_metrics(card)),
        ("Predictions", _html_picture(card)),
        ("Metrics per slice", _html_slices(card)),
        ("Gates", _html_gates(card)),
        ("Explanations", _html_explanations(card)),
        ("Validation", _html_validation(card)),
        ("Known limitations", limitations),
        ("Lineage", _html_lineage(card)),
    ]
    body = "".join(f"<section><h2>{name}</h2>{content}</section>" for name, content in sections)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head><body><main>"
        f'<header><h1>{_e(title)}</h1><span class="badge {css}" id="verdict">{label}</span></header>'
        f'<p class="sub">{" · ".join(sub)}</p>{body}</main></body></html>\n'
    )
