"""A model card as one self-contained HTML page: inline CSS, the SHAP summary as a ``data:`` URI, no
scripts, no external assets. The markup is ``raymlops/templates/model_card.html.j2`` (Jinja2,
autoescaped), so every user-provided string is shown as text."""

from __future__ import annotations

import base64
import math
import numbers
from typing import Any

import raymlops.evaluation.model_card.formatting as formatting
from raymlops.evaluation.model_card.card import NOT_RECORDED, ModelCard
from raymlops.evaluation.model_card.picture import picture_caption, picture_svg

__all__ = ["render_html"]


def _shap_bars(shap: dict[str, Any] | None) -> list[tuple[str, Any, float]]:
    """(feature, value, bar width in px) per feature, the largest finite value 160 px wide."""
    if shap is None:
        return []
    ranked = formatting.sorted_shap(shap)
    finite = [float(v) for _, v in ranked if isinstance(v, numbers.Real) and math.isfinite(float(v))]
    peak = max(finite, default=0.0)
    bars = []
    for name, value in ranked:
        ok = isinstance(value, numbers.Real) and math.isfinite(float(value))
        bars.append((name, value, 160 * float(value) / peak if ok and peak > 0 else 0.0))
    return bars


def render_html(card: ModelCard) -> str:
    """The card as one self-contained HTML page: inline CSS, the SHAP PNG inline, every string escaped."""
    from raymlops.templates import render

    svg = picture_svg(card.picture) if card.picture else ""
    return render(
        "model_card.html.j2",
        card=card,
        m=formatting,
        NR=NOT_RECORDED,
        failed=sum(1 for g in card.gates if not g.get("passed")),
        shap_bars=_shap_bars(card.shap),
        shap_png=base64.b64encode(card.shap_png).decode("ascii") if card.shap_png is not None else None,
        picture=svg,  # inserted as markup (| safe): picture_svg escapes every label itself
        caption=picture_caption(card.picture) if svg and card.picture else "",
    )
