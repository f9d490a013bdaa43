"""The model card's picture of held-out predictions as one inline SVG (no scripts, every label escaped).

The picture's data comes from the task (``Task.card_picture``): a confusion matrix
(``{"kind": "confusion_matrix", "labels": [...], "counts": [[...]]}``, rows the actual class, columns the
predicted one) for classification, or predicted against actual values
(``{"kind": "predicted_vs_actual", "rows": N, "actual": [...], "predicted": [...]}``) for regression.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["PICTURE_SVG_NAME", "picture_caption", "picture_svg"]

PICTURE_SVG_NAME = "predictions.svg"
_FONT = 'font-family="system-ui,sans-serif" font-size="12"'


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def picture_caption(picture: Mapping[str, Any]) -> str:
    """One sentence saying what the picture shows."""
    if picture.get("kind") == "confusion_matrix":
        total = sum(sum(row) for row in picture.get("counts") or [])
        return (
            f"Confusion matrix of the test split ({total:,} rows): rows are the actual class, columns the "
            "predicted one; the shade is the share of the actual class."
        )
    shown, rows = len(picture.get("actual") or []), int(picture.get("rows") or 0)
    sample = f", a sample of {shown:,}" if shown < rows else ""
    return f"Predicted against actual values on the test split ({rows:,} rows{sample}); the line is y = x."


def picture_svg(picture: Mapping[str, Any]) -> str:
    """The picture as an ``<svg>`` element (empty string for a kind this version does not draw)."""
    if picture.get("kind") == "confusion_matrix":
        return _confusion(picture.get("labels") or [], picture.get("counts") or [])
    if picture.get("kind") == "predicted_vs_actual":
        return _scatter(picture.get("actual") or [], picture.get("predicted") or [])
    return ""


def _confusion(labels: Sequence[str], counts: Sequence[Sequence[int]]) -> str:
    k = len(labels)
    cell, left, top = (56 if k <= 8 else 34), 110, 70
    width, height = left + cell * k + 20, top + cell * k + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="picture" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" {_FONT}>',
        f'<text x="{left + cell * k / 2}" y="16" text-anchor="middle" font-weight="600">predicted</text>',
        f'<text x="14" y="{top + cell * k / 2}" text-anchor="middle" font-weight="600" '
        f'transform="rotate(-90 14 {top + cell * k / 2})">actual</text>',
    ]
    for j, label in enumerate(labels):
        x = left + cell * j + cell / 2
        parts.append(f'<text x="{x}" y="{top - 8}" text-anchor="middle">{_e(_short(label))}</text>')
    for i, label in enumerate(labels):
        y = top + cell * i
        row_total = sum(counts[i]) if i < len(counts) else 0
        parts.append(
            f'<text x="{left - 8}" y="{y + cell / 2 + 4}" text-anchor="end">{_e(_short(label))}</text>'
        )
        for j in range(k):
            count = counts[i][j] if i < len(counts) and j < len(counts[i]) else 0
            share = count / row_total if row_total else 0.0
            fill = "#1e6b1e" if i == j else "#a11d1d"
            ink = "#fff" if share > 0.55 else "#222"
            parts.append(
                f'<rect class="cell" data-actual="{_e(label)}" data-predicted="{_e(labels[j])}" '
                f'x="{left + cell * j}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" '
                f'fill-opacity="{0.08 + 0.85 * share:.3f}" stroke="#fff"/>'
                f'<text x="{left + cell * j + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle" '
                f'fill="{ink}">{count:,}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _short(label: Any, limit: int = 14) -> str:
    text = str(label)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scatter(actual: Sequence[float], predicted: Sequence[float]) -> str:
    size, pad = 320, 48
    pairs = [
        (float(a), float(p))
        for a, p in zip(actual, predicted, strict=False)
        if a is not None and p is not None and math.isfinite(float(a)) and math.isfinite(float(p))
    ]
    values = [v for pair in pairs for v in pair] or [0.0, 1.0]
    low, high = min(values), max(values)
    span = (high - low) or 1.0

    def x(v: float) -> float:
        return pad + (v - low) / span * (size - pad - 10)

    def y(v: float) -> float:
        return size - pad + 10 - (v - low) / span * (size - pad - 10)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="picture" role="img" width="{size}" '
        f'height="{size}" viewBox="0 0 {size} {size}" {_FONT}>',
        f'<rect x="{pad}" y="10" width="{size - pad - 10}" height="{size - pad - 10}" fill="#fafbfc" '
        'stroke="#ccc"/>',
        f'<line class="diagonal" x1="{x(low):.1f}" y1="{y(low):.1f}" x2="{x(high):.1f}" y2="{y(high):.1f}" '
        'stroke="#999" stroke-dasharray="4 3"/>',
    ]
    parts += [
        f'<circle class="point" cx="{x(a):.1f}" cy="{y(p):.1f}" r="2.2" fill="#4c78a8" fill-opacity="0.6"/>'
        for a, p in pairs
    ]
    parts += [
        f'<text x="{(pad + size) / 2}" y="{size - 8}" text-anchor="middle" font-weight="600">actual</text>',
        f'<text x="12" y="{(size - pad) / 2}" text-anchor="middle" font-weight="600" '
        f'transform="rotate(-90 12 {(size - pad) / 2})">predicted</text>',
        f'<text x="{pad}" y="{size - pad + 24}" text-anchor="start">{low:.4g}</text>',
        f'<text x="{size - 10}" y="{size - pad + 24}" text-anchor="end">{high:.4g}</text>',
        f'<text x="{pad - 4}" y="{size - pad + 10}" text-anchor="end">{low:.4g}</text>',
        f'<text x="{pad - 4}" y="20" text-anchor="end">{high:.4g}</text>',
        "</svg>",
    ]
    return "".join(parts)
