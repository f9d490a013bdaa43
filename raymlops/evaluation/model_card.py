"""Model cards: what a model is for, what it was trained on, how well it does, and where it came from.

A :class:`ModelCard` holds plain JSON-able data only, so it can be written next to a run, stored as a
registry artifact and rebuilt from it later. :func:`render_markdown` and :func:`render_html` turn it into
a Markdown document and one self-contained HTML page (inline CSS, the SHAP summary embedded as a
``data:`` URI, no scripts, no external assets); :func:`write_model_card` writes both.

Numbers are shown to 4 decimals (row counts whole, with thousands separators); ``None`` and NaN read
"n/a". A part that was not recorded says "not recorded" instead of disappearing, so a reader can tell a
missing explanation from a forgotten section. Every user-provided string is escaped: HTML-escaped in the
page; in the Markdown ``<``/``>`` become entities, ``|`` is escaped and newlines are folded inside tables.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SHAP_PNG_NAME",
    "ModelCard",
    "render_html",
    "render_markdown",
    "write_model_card",
]

SHAP_PNG_NAME = "shap_summary.png"
NOT_RECORDED = "not recorded"
CARD_FORMAT = 1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_METRICS_NOTE = "Baseline: a constant predictor scored on the same test split. "
_CHAMPION_NOTE = "Champion: the current champion re-scored on the same test split."
_NO_CHAMPION = f"Champion: {NOT_RECORDED}."

# Which way is better, by the metric's last name segment ("test/auc" -> "auc"); others are neutral.
_HIGHER_IS_BETTER = frozenset(
    {"auc", "accuracy", "f1", "precision", "recall", "r2", "average_precision", "pr_auc", "ap"}
)
_LOWER_IS_BETTER = frozenset({"logloss", "loss", "rmse", "mse", "mae", "mape", "brier", "error", "ece"})


@dataclass(frozen=True)
class ModelCard:
    """Everything a model card shows, as plain data.

    ``metrics``/``baseline``/``champion["metrics"]`` map metric names (``"test/auc"``) to floats on the
    same test split; ``baseline`` is a constant predictor and ``champion`` the current champion re-scored
    on that data. ``slices`` maps a slice column to rows ``{"value": str, "rows": int, <metric>: float}``.
    ``gates`` is a list of ``{"gate", "passed", "detail"}``. ``shap_png`` is the bytes of a PNG.
    Empty strings, empty collections and ``None`` mean "not recorded".
    """

    model_name: str
    version: str
    created: str = ""
    intended_use: str = ""
    limitations: list[str] = field(default_factory=list)
    training_data: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    slices: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)
    champion: dict[str, Any] | None = None
    shap: dict[str, Any] | None = None
    shap_png: bytes | None = None
    validation: dict[str, Any] | None = None
    lineage: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.shap_png is not None and not bytes(self.shap_png).startswith(_PNG_SIGNATURE):
            raise ValueError("ModelCard.shap_png must be the bytes of a PNG image (bad signature).")

    @property
    def gates_passed(self) -> bool | None:
        """True if every gate passed, False if any failed, None if no gate was recorded."""
        if not self.gates:
            return None
        return all(bool(gate.get("passed")) for gate in self.gates)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: ``shap_png`` becomes ``shap_png_base64``; NaN and infinities become None."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "shap_png"}
        data = _jsonable(data)
        data["shap_png_base64"] = (
            base64.b64encode(self.shap_png).decode("ascii") if self.shap_png is not None else None
        )
        data["card_format"] = CARD_FORMAT
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """The inverse of :meth:`to_dict`; keys this version does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)} - {"shap_png"}
        kwargs = {k: v for k, v in data.items() if k in known}
        encoded = data.get("shap_png_base64")
        kwargs["shap_png"] = base64.b64decode(encoded) if encoded else None
        return cls(**kwargs)

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON (no NaN); the SHAP PNG is kept, base64-encoded, under ``shap_png_base64``."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        return cls.from_dict(json.loads(text))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


# --------------------------------------------------------------------------------------------- formatting


def _is_count(name: str) -> bool:
    return name == "rows" or name.endswith("/rows") or name.endswith("_rows")


def _fmt(value: Any, count: bool = False) -> str:
    """4 decimals for floats, whole numbers with separators for ints and counts, n/a for None/NaN."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return "n/a"
        if math.isinf(number):
            return "∞" if number > 0 else "-∞"
        if count and number.is_integer():
            return f"{int(number):,}"
        return f"{number:.4f}"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(_jsonable(value), ensure_ascii=False)
    return str(value)


def _delta(value: Any, reference: Any) -> float | None:
    if not isinstance(value, numbers.Real) or not isinstance(reference, numbers.Real):
        return None
    diff = float(value) - float(reference)
    return diff if math.isfinite(diff) else None


def _fmt_delta(diff: float | None) -> str:
    return "n/a" if diff is None else f"{diff:+.4f}"


def _direction(name: str, diff: float | None) -> str:
    """'better', 'worse' or '' for a change in metric ``name``."""
    if diff is None or diff == 0:
        return ""
    leaf = name.rsplit("/", 1)[-1].lower()
    if leaf in _HIGHER_IS_BETTER:
        return "better" if diff > 0 else "worse"
    if leaf in _LOWER_IS_BETTER:
        return "better" if diff < 0 else "worse"
    return ""


def _union(keys: Iterable[Iterable[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for group in keys:
        for key in group:
            seen.setdefault(key, None)
    return list(seen)


def _slice_metrics(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [k for k in _union(row.keys() for row in rows) if k not in ("value", "rows")]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _table_rows(
    data: Mapping[str, Any],
) -> tuple[list[str], list[bool], list[tuple[str, dict[str, Any]]]]:
    """A generic ``name -> value`` mapping as a table: nested mappings spread into columns.

    Returns the columns, whether each holds numbers only (right-aligned), and the rows.
    """
    columns = _union(v.keys() for v in data.values() if isinstance(v, Mapping))
    if any(not isinstance(v, Mapping) for v in data.values()):
        columns.append("value")
    rows = [(str(k), dict(v) if isinstance(v, Mapping) else {"value": v}) for k, v in data.items()]
    numeric = [
        all(_is_number(values[c]) or values[c] is None for _, values in rows if c in values) for c in columns
    ]
    return columns, numeric, rows


def _sorted_shap(shap: Mapping[str, Any]) -> list[tuple[str, Any]]:
    def key(item: tuple[str, Any]) -> float:
        value = item[1]
        if isinstance(value, numbers.Real) and not math.isnan(float(value)):
            return -float(value)
        return math.inf

    return sorted(dict(shap.get("mean_abs") or {}).items(), key=key)


def _time_range(training: Mapping[str, Any]) -> str | None:
    span = training.get("time_range")
    if not span or not (span.get("start") or span.get("end")):
        return None
    return f"{span.get('start') or 'n/a'} → {span.get('end') or 'n/a'}"


def _total_rows(rows: Mapping[str, Any]) -> int:
    return sum(int(float(v)) for v in rows.values() if _is_number(v))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


def _verdict(passed: bool | None) -> tuple[str, str]:
    """(css class, label) of the gate verdict."""
    if passed is None:
        return "none", "NO GATES"
    return ("pass", "PASS") if passed else ("fail", "FAIL")


# --------------------------------------------------------------------------------------------- markdown


def _md(value: Any) -> str:
    """Free text for Markdown: no raw HTML (and no accidental block quote)."""
    return str(value).replace("<", "&lt;").replace(">", "&gt;")


class _Md(str):
    """Text that is Markdown already (a code span): table cells escape only its pipes."""


def _code(value: Any) -> _Md:
    """A code span, shown literally: nothing inside needs escaping; the fence outruns any backticks."""
    text = str(value).replace("\r", " ").replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    if longest == 0:
        return _Md(f"`{text}`")
    fence = "`" * (longest + 1)
    return _Md(f"{fence} {text} {fence}")


def _cell(value: Any) -> str:
    text = value if isinstance(value, _Md) else _md(value)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool]) -> list[str]:
    align = ["---:" if n else "---" for n in numeric]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _md_mapping(data: Mapping[str, Any], first: str) -> list[str]:
    columns, numeric, rows = _table_rows(data)
    return _md_table(
        [first, *columns],
        (
            [name, *(_fmt(values.get(c), _is_count(c)) if c in values else "" for c in columns)]
            for name, values in rows
        ),
        [False, *numeric],
    )


def _md_metrics(card: ModelCard) -> list[str]:
    names = _union([card.metrics, card.baseline, (card.champion or {}).get("metrics") or {}])
    if not names:
        return [NOT_RECORDED]
    header = ["metric", "this model", "baseline"]
    champion = card.champion
    if champion is not None:
        header += [f"champion v{champion.get('version', '?')}", "Δ vs champion"]
    rows = []
    for name in names:
        count = _is_count(name)
        value = card.metrics.get(name)
        row = [name, _fmt(value, count), _fmt(card.baseline.get(name), count)]
        if champion is not None:
            theirs = (champion.get("metrics") or {}).get(name)
            row += [_fmt(theirs, count), _fmt_delta(_delta(value, theirs))]
        rows.append(row)
    lines = _md_table(header, rows, [False, *(True for _ in header[1:])])
    return [*lines, "", _METRICS_NOTE + (_NO_CHAMPION if champion is None else _CHAMPION_NOTE)]


def _md_slices(card: ModelCard) -> list[str]:
    if not card.slices:
        return [NOT_RECORDED]
    lines: list[str] = []
    for column, rows in card.slices.items():
        metrics = _slice_metrics(rows)
        lines += [f"### By {_code(column)}", ""]
        lines += _md_table(
            ["value", "rows", *metrics],
            (
                [row.get("value", ""), _fmt(row.get("rows"), True), *(_fmt(row.get(m)) for m in metrics)]
                for row in rows
            ),
            [False, True, *(True for _ in metrics)],
        )
        lines.append("")
    return lines[:-1]


def render_markdown(card: ModelCard) -> str:
    """The card as Markdown; ``![SHAP summary](shap_summary.png)`` refers to a file written beside it."""
    _, label = _verdict(card.gates_passed)
    out = [f"# Model card: {_md(card.model_name)} v{_md(card.version)}", ""]
    out += [f"**Gates: {label}** · created {_md(card.created or NOT_RECORDED)}", ""]

    out += ["## Intended use", "", _md(card.intended_use) if card.intended_use else NOT_RECORDED, ""]

    out += ["## Training data", ""]
    training = card.training_data
    if not training:
        out += [NOT_RECORDED, ""]
    else:
        out.append(f"- Data version: {_code(training.get('data_version') or NOT_RECORDED)}")
        out.append(f"- Time range: {_md(_time_range(training) or NOT_RECORDED)}")
        rows = training.get("rows") or {}
        if rows:
            total = _total_rows(rows)
            out.append(f"- Rows: {_fmt(total)} in all")
            out += [
                "",
                *_md_table(["split", "rows"], ([s, _fmt(n, True)] for s, n in rows.items()), [False, True]),
            ]
        else:
            out.append(f"- Rows: {NOT_RECORDED}")
        schema = training.get("schema") or {}
        out += ["", "Schema:", ""]
        if schema:
            out += _md_table(["column", "type"], ([c, _code(t)] for c, t in schema.items()), [False, False])
        else:
            out.append(NOT_RECORDED)
        out.append("")

    out += ["## Preprocessing", ""]
    out += [*(_md_mapping(card.preprocessing, "feature") if card.preprocessing else [NOT_RECORDED]), ""]

    out += ["## Model", ""]
    if not card.model:
        out += [NOT_RECORDED, ""]
    else:
        out.append(f"- Family: {_md(card.model.get('family') or NOT_RECORDED)}")
        params = card.model.get("hyperparameters") or {}
        extra = {k: v for k, v in card.model.items() if k not in ("family", "hyperparameters")}
        out += [f"- {_md(k)}: {_md(_fmt(v))}" for k, v in extra.items()]
        out += ["", "Hyperparameters:", ""]
        if params:
            out += _md_mapping(params, "parameter")
        else:
            out.append(NOT_RECORDED)
        out.append("")

    out += ["## Metrics", "", *_md_metrics(card), ""]
    out += ["## Metrics per slice", "", *_md_slices(card), ""]

    out += ["## Gates", ""]
    if card.gates:
        out += _md_table(
            ["", "gate", "detail"],
            (
                ["✅" if g.get("passed") else "❌", _code(g.get("gate", "")), g.get("detail", "")]
                for g in card.gates
            ),
            [False, False, False],
        )
        out += ["", f"Verdict: **{label}**"]
    else:
        out.append(NOT_RECORDED)
    out.append("")

    out += ["## Explanations", ""]
    shap = card.shap
    if shap is None:
        out.append(f"SHAP values: {NOT_RECORDED}.")
    else:
        out.append(
            f"Mean |SHAP| by feature ({_md(shap.get('method', 'n/a'))}, "
            f"{_md(shap.get('output_space', 'n/a'))} space, {_fmt(shap.get('rows'), True)} rows, "
            f"{_fmt(shap.get('seconds'))} s)."
        )
        out += [
            "",
            *_md_table(
                ["feature", "mean |SHAP|"], ([k, _fmt(v)] for k, v in _sorted_shap(shap)), [False, True]
            ),
        ]
    if card.shap_png is not None:
        out += ["", f"![SHAP summary]({SHAP_PNG_NAME})"]
    out.append("")

    out += ["## Validation", ""]
    validation = card.validation
    if validation is None:
        out.append(NOT_RECORDED)
    else:
        failures, warnings = validation.get("failures") or [], validation.get("warnings") or []
        out += [
            f"**{'PASS' if validation.get('passed') else 'FAIL'}**: {_plural(len(failures), 'failure')}, "
            f"{_plural(len(warnings), 'warning')}.",
            "",
        ]
        for kind, items in (("Failure", failures), ("Warning", warnings)):
            out += [f"- {kind}: {_md(item)}" for item in items]
    out.append("")

    out += ["## Known limitations", ""]
    out += [f"- {_md(item)}" for item in card.limitations] or [NOT_RECORDED]
    out.append("")

    out += ["## Lineage", ""]
    if card.lineage:
        out += _md_table(["", "value"], ([k, _code(v)] for k, v in card.lineage.items()), [False, False])
    else:
        out.append(NOT_RECORDED)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------- html

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
    columns, numeric, rows = _table_rows(data)
    head = _th(_e(first)) + "".join(_th(_e(c), n) for c, n in zip(columns, numeric, strict=True))
    body = "".join(
        "<tr>"
        + _td(_e(name))
        + "".join(
            _td(_e(_fmt(values.get(c), _is_count(c))) if c in values else "", n)
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
        ("Time range", _e(_time_range(training) or NOT_RECORDED)),
    ]
    if rows:
        total = _total_rows(rows)
        facts.append(("Rows", _e(_fmt(total))))
        split_rows = "".join(f"<tr>{_td(_e(s))}{_td(_e(_fmt(n, True)), True)}</tr>" for s, n in rows.items())
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
    facts += [(k, _e(_fmt(v))) for k, v in extra.items()]
    params = card.model.get("hyperparameters") or {}
    table = _html_mapping(params, "parameter") if params else _nr()
    return f"{_facts(facts)}<h3>Hyperparameters</h3>{table}"


def _html_metrics(card: ModelCard) -> str:
    champion = card.champion
    names = _union([card.metrics, card.baseline, (champion or {}).get("metrics") or {}])
    if not names:
        return _nr()
    head = _th("metric") + _th("this model", True) + _th("baseline", True)
    if champion is not None:
        head += _th(f"champion v{_e(champion.get('version', '?'))}", True) + _th("Δ vs champion", True)
    body = []
    for name in names:
        count = _is_count(name)
        value = card.metrics.get(name)
        cells = _td(_e(name)) + _td(f"<strong>{_e(_fmt(value, count))}</strong>", True)
        cells += _td(_e(_fmt(card.baseline.get(name), count)), True)
        if champion is not None:
            theirs = (champion.get("metrics") or {}).get(name)
            diff = _delta(value, theirs)
            cells += _td(_e(_fmt(theirs, count)), True)
            cells += _td(_e(_fmt_delta(diff)), True, _direction(name, diff))
        body.append(f'<tr data-metric="{_e(name)}">{cells}</tr>')
    note = _METRICS_NOTE + (_NO_CHAMPION if champion is None else _CHAMPION_NOTE)
    return f'<table><tr>{head}</tr>{"".join(body)}</table><p class="muted">{note}</p>'


def _html_slices(card: ModelCard) -> str:
    if not card.slices:
        return _nr()
    parts = []
    for column, rows in card.slices.items():
        metrics = _slice_metrics(rows)
        head = _th("value") + _th("rows", True) + "".join(_th(_e(m), True) for m in metrics)
        body = "".join(
            f'<tr data-slice="{_e(column)}">'
            + _td(_e(row.get("value", "")))
            + _td(_e(_fmt(row.get("rows"), True)), True)
            + "".join(_td(_e(_fmt(row.get(m))), True) for m in metrics)
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
        ranked = _sorted_shap(shap)
        peak = max(
            (float(v) for _, v in ranked if isinstance(v, numbers.Real) and math.isfinite(float(v))),
            default=0.0,
        )
        rows = []
        for name, value in ranked:
            finite = isinstance(value, numbers.Real) and math.isfinite(float(value))
            width = 160 * float(value) / peak if finite and peak > 0 else 0
            rows.append(
                f"<tr>{_td(_e(name))}{_td(_e(_fmt(value)), True)}"
                f'<td><span class="bar" style="width:{width:.1f}px"></span></td></tr>'
            )
        parts.append(
            f'<p class="muted">{_e(shap.get("method", "n/a"))}, {_e(shap.get("output_space", "n/a"))} space, '
            f"{_e(_fmt(shap.get('rows'), True))} rows, {_e(_fmt(shap.get('seconds')))} s.</p>"
            f"<table><tr>{_th('feature')}{_th('mean |SHAP|', True)}{_th('')}</tr>{''.join(rows)}</table>"
        )
    if card.shap_png is not None:
        encoded = base64.b64encode(card.shap_png).decode("ascii")
        parts.append(f'<img class="shap" alt="SHAP summary" src="data:image/png;base64,{encoded}">')
    return f'<div class="grid">{"".join(f"<div>{p}</div>" for p in parts)}</div>'


def _html_validation(card: ModelCard) -> str:
    validation = card.validation
    if validation is None:
        return _nr()
    failures, warnings = validation.get("failures") or [], validation.get("warnings") or []
    css = "pass" if validation.get("passed") else "fail"
    out = [
        f'<p><span class="badge small {css}">{css.upper()}</span> '
        f"{_plural(len(failures), 'failure')}, {_plural(len(warnings), 'warning')}</p>"
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
    css, label = _verdict(card.gates_passed)
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
        ("Training data", _html_training(card)),
        ("Preprocessing", _html_mapping(card.preprocessing, "feature") if card.preprocessing else _nr()),
        ("Model", _html_model(card)),
        ("Metrics", _html_metrics(card)),
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


def write_model_card(card: ModelCard, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``model_card.md`` and ``model_card.html`` (and ``shap_summary.png`` if any) into ``out_dir``."""
    from raymlops.security.crypto import write_sensitive

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown, page = out / "model_card.md", out / "model_card.html"
    # Slices and the training data's summary name feature values: encrypted when encryption is on.
    write_sensitive(markdown, render_markdown(card))
    write_sensitive(page, render_html(card))
    if card.shap_png is not None:
        write_sensitive(out / SHAP_PNG_NAME, card.shap_png)
    return markdown, page
