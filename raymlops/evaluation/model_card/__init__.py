"""Model cards: what a model is for, what it was trained on, how well it does, and where it came from.

A :class:`ModelCard` holds plain JSON-able data only, so it can be written next to a run, stored as a
registry artifact and rebuilt from it later. :func:`render_markdown` and :func:`render_html` turn it into
a Markdown document and one self-contained HTML page (inline CSS, the SHAP summary embedded as a
``data:`` URI, no scripts, no external assets); :func:`write_model_card` writes both.

Numbers are shown to 4 decimals (row counts whole, with thousands separators); ``None`` and NaN read
"n/a". A part that was not recorded says "not recorded" instead of disappearing, so a reader can tell a
missing explanation from a forgotten section. Every user-provided string is escaped: HTML-escaped in the
page; in the Markdown ``<``/``>`` become entities, ``|`` is escaped and newlines are folded inside tables.

The parts: :mod:`.card` (the data), :mod:`.markdown_page` and :mod:`.html_page` (the renderings, sharing
:mod:`.formatting`) and :mod:`.write` (the files).
"""

from __future__ import annotations

from raymlops.evaluation.model_card.card import SHAP_PNG_NAME, ModelCard
from raymlops.evaluation.model_card.html_page import render_html
from raymlops.evaluation.model_card.markdown_page import render_markdown
from raymlops.evaluation.model_card.write import write_model_card

__all__ = ["SHAP_PNG_NAME", "ModelCard", "render_html", "render_markdown", "write_model_card"]
