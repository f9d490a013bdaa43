"""Writing a model card's files next to a run (encrypted when encryption is on)."""

from __future__ import annotations

from pathlib import Path

from raymlops.evaluation.model_card.card import SHAP_PNG_NAME, ModelCard
from raymlops.evaluation.model_card.html_page import render_html
from raymlops.evaluation.model_card.markdown_page import render_markdown
from raymlops.evaluation.model_card.picture import PICTURE_SVG_NAME, picture_svg

__all__ = ["write_model_card"]


def write_model_card(card: ModelCard, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``model_card.md`` and ``model_card.html`` (and ``shap_summary.png`` and the predictions'
    picture ``predictions.svg``, if any) into ``out_dir``."""
    from raymlops.security.crypto import write_sensitive

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown, page = out / "model_card.md", out / "model_card.html"
    # Slices and the training data's summary name feature values: encrypted when encryption is on.
    write_sensitive(markdown, render_markdown(card))
    write_sensitive(page, render_html(card))
    if card.shap_png is not None:
        write_sensitive(out / SHAP_PNG_NAME, card.shap_png)
    svg = picture_svg(card.picture) if card.picture else ""
    if svg:  # the Markdown refers to it; the HTML page has it inline
        write_sensitive(out / PICTURE_SVG_NAME, svg)
    return markdown, page
