"""A model card as one Markdown document (user text escaped, tables folded to one line per row)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from raymlops.evaluation.model_card.card import NOT_RECORDED, SHAP_PNG_NAME, ModelCard
from raymlops.evaluation.model_card.formatting import (
    CHAMPION_NOTE,
    METRICS_NOTE,
    NO_CHAMPION,
    better_way,
    delta,
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
from raymlops.evaluation.model_card.picture import PICTURE_SVG_NAME, picture_caption

__all__ = ["render_markdown"]


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
    columns, numeric, rows = table_rows(data)
    return _md_table(
        [first, *columns],
        (
            [name, *(fmt(values.get(c), is_count(c)) if c in values else "" for c in columns)]
            for name, values in rows
        ),
        [False, *numeric],
    )


def _md_metrics(card: ModelCard) -> list[str]:
    names = union([card.metrics, card.baseline, (card.champion or {}).get("metrics") or {}])
    if not names:
        return [NOT_RECORDED]
    header = ["metric", *(["better"] if card.directions else []), "this model", "baseline"]
    champion = card.champion
    if champion is not None:
        header += [f"champion v{champion.get('version', '?')}", "Δ vs champion"]
    rows = []
    for name in names:
        count = is_count(name)
        value = card.metrics.get(name)
        row = [name, *([better_way(name, card.directions)] if card.directions else [])]
        row += [fmt(value, count), fmt(card.baseline.get(name), count)]
        if champion is not None:
            theirs = (champion.get("metrics") or {}).get(name)
            row += [fmt(theirs, count), fmt_delta(delta(value, theirs))]
        rows.append(row)
    lines = _md_table(header, rows, [False, *(h != "better" for h in header[1:])])
    return [*lines, "", METRICS_NOTE + (NO_CHAMPION if champion is None else CHAMPION_NOTE)]


def _md_picture(card: ModelCard) -> list[str]:
    picture = card.picture
    if not picture or picture.get("kind") not in ("confusion_matrix", "predicted_vs_actual"):
        return [NOT_RECORDED]
    lines = [_md(picture_caption(picture)), ""]
    if picture["kind"] == "confusion_matrix":  # a table reads anywhere Markdown does
        labels = [str(label) for label in picture.get("labels") or []]
        counts = picture.get("counts") or []
        lines += _md_table(
            ["actual \\ predicted", *labels],
            ([label, *(fmt(c, True) for c in row)] for label, row in zip(labels, counts, strict=False)),
            [False, *(True for _ in labels)],
        )
    else:
        lines.append(f"![Predicted vs actual]({PICTURE_SVG_NAME})")
    return lines


def _md_slices(card: ModelCard) -> list[str]:
    if not card.slices:
        return [NOT_RECORDED]
    lines: list[str] = []
    for column, rows in card.slices.items():
        metrics = slice_metrics(rows)
        lines += [f"### By {_code(column)}", ""]
        lines += _md_table(
            ["value", "rows", *metrics],
            (
                [row.get("value", ""), fmt(row.get("rows"), True), *(fmt(row.get(m)) for m in metrics)]
                for row in rows
            ),
            [False, True, *(True for _ in metrics)],
        )
        lines.append("")
    return lines[:-1]


def render_markdown(card: ModelCard) -> str:
    """The card as Markdown; ``![SHAP summary](shap_summary.png)`` refers to a file written beside it."""
    _, label = verdict(card.gates_passed)
    out = [f"# Model card: {_md(card.model_name)} v{_md(card.version)}", ""]
    out += [f"**Gates: {label}** · created {_md(card.created or NOT_RECORDED)}", ""]

    out += ["## Intended use", "", _md(card.intended_use) if card.intended_use else NOT_RECORDED, ""]

    out += ["## Task", ""]
    out += [f"- {k}: {_md(v)}" for k, v in task_facts(card.task)] or [NOT_RECORDED]
    out.append("")

    out += ["## Training data", ""]
    training = card.training_data
    if not training:
        out += [NOT_RECORDED, ""]
    else:
        out.append(f"- Data version: {_code(training.get('data_version') or NOT_RECORDED)}")
        out.append(f"- Time range: {_md(time_range(training) or NOT_RECORDED)}")
        rows = training.get("rows") or {}
        if rows:
            total = total_rows(rows)
            out.append(f"- Rows: {fmt(total)} in all")
            out += [
                "",
                *_md_table(["split", "rows"], ([s, fmt(n, True)] for s, n in rows.items()), [False, True]),
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
        out += [f"- {_md(k)}: {_md(fmt(v))}" for k, v in extra.items()]
        out += ["", "Hyperparameters:", ""]
        if params:
            out += _md_mapping(params, "parameter")
        else:
            out.append(NOT_RECORDED)
        out.append("")

    out += ["## Metrics", "", *_md_metrics(card), ""]
    out += ["## Predictions", "", *_md_picture(card), ""]
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
            f"{_md(shap.get('output_space', 'n/a'))} space, {fmt(shap.get('rows'), True)} rows, "
            f"{fmt(shap.get('seconds'))} s)."
            + (f" Multiclass: {_md(shap['aggregation'])}." if shap.get("aggregation") else "")
        )
        out += [
            "",
            *_md_table(
                ["feature", "mean |SHAP|"], ([k, fmt(v)] for k, v in sorted_shap(shap)), [False, True]
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
            f"**{'PASS' if validation.get('passed') else 'FAIL'}**: {plural(len(failures), 'failure')}, "
            f"{plural(len(warnings), 'warning')}.",
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
