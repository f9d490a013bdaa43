"""Jinja2 templates of the pages raymlops writes: the data report, the model card and the monitor report.

Every ``.html.j2`` template is rendered with autoescape on, so a column name, category or model tag that
holds markup is shown as text; ``_page.html.j2`` is the shared frame and ``_partials.html.j2`` the
shared pieces (status badges, summary tables, the reference-vs-current histogram, the drift table).
Numbers are formatted by the :func:`fmt` filter, so every page prints them alike.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["CURRENT_COLOUR", "REFERENCE_COLOUR", "environment", "fmt", "histogram", "render"]

REFERENCE_COLOUR, CURRENT_COLOUR = "#4c78a8", "#f58518"


def fmt(value: Any, digits: int = 3) -> str:
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


def histogram(bins: dict[str, Any], width: int = 380, height: int = 96) -> dict[str, Any]:
    """The geometry of a reference-vs-current bar chart (``_partials.html.j2`` draws it)."""
    labels, ref, cur = bins["labels"], bins["reference"], bins["current"]
    top, bottom = 14, 14
    plot = height - top - bottom
    peak = max([*ref, *cur, 1e-9])
    step = width / max(len(labels), 1)
    bar = max(step * 0.42, 0.5)
    bars = []
    for i, (label, r, c) in enumerate(zip(labels, ref, cur, strict=True)):
        x = i * step + step * 0.08
        rh, ch = plot * r / peak, plot * c / peak
        bars.append(
            {"label": label, "r": r, "c": c, "x": x, "x2": x + bar, "ry": top + plot - rh, "rh": rh}
            | {"cy": top + plot - ch, "ch": ch}
        )
    first, last = (labels[0], labels[-1]) if labels else (None, None)
    return {"width": width, "height": height, "base": top + plot, "bar": bar, "bars": bars} | {
        "first": first,
        "last": last,
    }


@cache
def environment() -> Any:  # jinja2.Environment
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=jinja2.select_autoescape(["html.j2"], default_for_string=True),
        undefined=jinja2.StrictUndefined,  # a missing key is an error, not an empty cell
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.do"],
    )
    env.filters["fmt"] = fmt
    env.globals.update(histogram=histogram, REFERENCE_COLOUR=REFERENCE_COLOUR, CURRENT_COLOUR=CURRENT_COLOUR)
    return env


def render(template: str, **context: Any) -> str:
    """Render ``template`` (a file name in this folder) with ``context``."""
    return str(environment().get_template(template).render(**context))
