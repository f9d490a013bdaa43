"""Model cards: the real figures reach Markdown and HTML, hostile text is escaped, JSON round-trips."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import markupsafe
import pytest

from raymlops.evaluation.model_card import ModelCard, render_html, render_markdown, write_model_card

HOSTILE = "<script>alert('card')</script>"


def _png() -> bytes:
    """A tiny real PNG: a horizontal bar chart of mean |SHAP|, drawn with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.2), dpi=80)
    ax.barh(["distance", "dep_hour", "carrier", "origin"][::-1], [0.021, 0.084, 0.112, 0.305][::-1])
    ax.set_xlabel("mean |SHAP| (log-odds)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _card(**changes: object) -> ModelCard:
    card = ModelCard(
        model_name="flight-delay",
        version="7",
        created="2024-05-02T09:14:03+00:00",
        intended_use="Rank 2013 NYC departures by risk of arriving 15+ minutes late, for ops planning.",
        limitations=["Trained on 2013 flights only; schedules have changed since.", HOSTILE],
        training_data={
            "data_version": "lakefs://flights/main@5f2c9e1",
            "rows": {"train": 235_743, "validation": 33_678, "test": 67_355},
            "time_range": {"start": "2013-01-01T00:00:00", "end": "2013-12-31T23:59:00"},
            "schema": {"dep_delay": "double", "distance": "double", "origin": "string", "carrier": "string"},
        },
        preprocessing={
            "dep_delay": {"kind": "numeric", "mean": 12.639070, "std": 40.210061},
            "distance": {"kind": "numeric", "mean": 1039.912604, "std": 733.233033},
            "origin": {"kind": "categorical", "categories": 3},
        },
        model={"family": "xgboost", "hyperparameters": {"max_depth": 6, "eta": 0.1, "num_boost_round": 300}},
        metrics={"test/auc": 0.6731, "test/logloss": 0.5521, "test/accuracy": 0.7412, "test/rows": 67355.0},
        baseline={"test/auc": 0.5, "test/logloss": 0.5934, "test/accuracy": 0.7001, "test/rows": 67355.0},
        slices={
            "origin": [
                {"value": "EWR", "rows": 24_012, "test/auc": 0.6688, "test/logloss": 0.5702},
                {"value": "JFK", "rows": 22_187, "test/auc": 0.6803, "test/logloss": 0.5433},
                {"value": "LGA", "rows": 21_156, "test/auc": None, "test/logloss": float("nan")},
            ],
            "carrier": [
                {"value": "UA", "rows": 11_790, "test/auc": 0.6615},
                {"value": "<b>9E</b>", "rows": 3_651, "test/auc": 0.6902},
            ],
        },
        gates=[
            {"gate": "test/auc >= 0.65", "passed": True, "detail": "test/auc = 0.6731"},
            {"gate": "test/auc >= champion", "passed": False, "detail": "0.6731 < champion 0.6800 + 0.01"},
        ],
        champion={"version": "5", "metrics": {"test/auc": 0.6612, "test/logloss": 0.5580}},
        shap={
            "method": "tree",
            "output_space": "log-odds",
            "rows": 2_000,
            "mean_abs": {"distance": 0.021, "origin": 0.305, "carrier": 0.112, "dep_hour": 0.084},
            "seconds": 1.73,
        },
        shap_png=_png(),
        validation={
            "passed": True,
            "failures": [],
            "warnings": ["dep_delay: null fraction 0.0245 > warn 0.02"],
        },
        lineage={
            "data_version": "lakefs://flights/main@5f2c9e1",
            "git_sha": "3e1b0c9d4a7f",
            "config_digest": "sha256:9b4f0a",
            "run_id": "a81c2f0e",
            "parent": "run 4c2b11",
        },
        task={"task": "binary", "threshold": 15.0, "why": "arr_delay > 15 (features.label.threshold)"},
        directions={"auc": "higher", "accuracy": "higher", "logloss": "lower"},
        picture={
            "kind": "confusion_matrix",
            "labels": ["0", "1"],
            "counts": [[48_000, 2_100], [13_300, 3_955]],
        },
    )
    return dataclasses.replace(card, **changes)  # type: ignore[arg-type]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = dict(attrs)
        if tag == "img":
            self.images.append(str(found.get("src")))
        for name in ("href", "src"):
            if found.get(name) and not str(found[name]).startswith("data:"):
                self.links.append(str(found[name]))


def test_markdown_has_the_figures_in_order() -> None:
    text = render_markdown(_card())
    assert text.startswith("# Model card: flight-delay v7\n")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Intended use",
        "## Task",
        "## Training data",
        "## Preprocessing",
        "## Model",
        "## Metrics",
        "## Predictions",
        "## Metrics per slice",
        "## Gates",
        "## Explanations",
        "## Validation",
        "## Known limitations",
        "## Lineage",
    ]
    # Overall metrics: this model, baseline, champion and the delta, 4 decimals; rows stay whole.
    # With which way is better (the task's directions).
    assert "| test/auc | higher | 0.6731 | 0.5000 | 0.6612 | +0.0119 |" in text
    assert "| test/logloss | lower | 0.5521 | 0.5934 | 0.5580 | -0.0059 |" in text
    assert "| test/rows |  | 67,355 | 67,355 | n/a | n/a |" in text
    assert "- Task: binary" in text and "- Label threshold: 15" in text
    assert "- Why: arr_delay &gt; 15 (features.label.threshold)" in text
    assert "| actual \\ predicted | 0 | 1 |" in text and "| 1 | 13,300 | 3,955 |" in text
    assert "champion v5" in text
    # Slices with their counts; None and NaN read n/a; hostile slice values lose their tags.
    assert "### By `origin`" in text and "### By `carrier`" in text
    assert "| EWR | 24,012 | 0.6688 | 0.5702 |" in text
    assert "| LGA | 21,156 | n/a | n/a |" in text
    assert "| &lt;b&gt;9E&lt;/b&gt; | 3,651 | 0.6902 |" in text
    # Gates, explanations sorted by mean |SHAP|, the image beside the file, lineage.
    assert "| ✅ | `test/auc >= 0.65` | test/auc = 0.6731 |" in text
    assert "| ❌ | `test/auc >= champion` |" in text and "**FAIL**" in text
    explanations = text.split("## Explanations\n", 1)[1].split("\n## ", 1)[0]
    assert "tree, log-odds space, 2,000 rows, 1.7300 s" in explanations
    rows = [line[2:-2].split(" | ") for line in explanations.splitlines() if line.startswith("| ")]
    assert rows[0] == ["feature", "mean \\|SHAP\\|"]
    assert rows[2:] == [
        ["origin", "0.3050"],
        ["carrier", "0.1120"],
        ["dep_hour", "0.0840"],
        ["distance", "0.0210"],
    ]
    assert "![SHAP summary](shap_summary.png)" in text
    assert "lakefs://flights/main@5f2c9e1" in text and "3e1b0c9d4a7f" in text
    assert "| train | 235,743 |" in text and "2013-01-01T00:00:00 → 2013-12-31T23:59:00" in text
    assert "| dep_delay | numeric | 12.6391 | 40.2101 |" in text and "| origin | categorical |" in text
    assert "| max_depth | 6 |" in text and "| eta | 0.1000 |" in text
    assert "Warning: dep_delay: null fraction 0.0245 &gt; warn 0.02" in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "not recorded" not in text  # everything was recorded


def test_html_is_self_contained_and_has_the_figures() -> None:
    card = _card()
    page = render_html(card)
    parsed = _Tags()
    parsed.feed(page)
    assert "script" not in parsed.tags and "link" not in parsed.tags and parsed.links == []
    assert parsed.images == ["data:image/png;base64," + base64.b64encode(card.shap_png or b"").decode()]
    assert base64.b64decode(parsed.images[0].split(",", 1)[1]).startswith(b"\x89PNG")
    assert 'id="verdict">FAIL</span>' in page and "1 of 2 gates passed" in page
    assert "0.6731" in page and "0.6612" in page and "+0.0119" in page and "0.5000" in page
    assert '<td class="num better">+0.0119</td>' in page  # higher AUC is better
    assert '<td class="num better">-0.0059</td>' in page  # lower log loss is better
    assert "24,012" in page and "21,156" in page and "3,651" in page
    assert "lakefs://flights/main@5f2c9e1" in page and "3e1b0c9d4a7f" in page
    assert page.count('class="gate" data-passed="true"') == 1 and page.count('data-passed="false"') == 1
    assert page.count("✓") == 1 and page.count("✗") == 1  # glyphs any system font has (emoji may not)
    assert "not recorded" not in page
    assert page.count("<svg") == 1 and page.count('<rect class="cell"') == 4  # the confusion matrix
    assert '<rect class="cell" data-actual="1" data-predicted="0"' in page and ">13,300</text>" in page
    assert "<th>Task</th><td>binary</td>" in page and "<th>Label threshold</th><td>15</td>" in page


def test_hostile_text_is_escaped() -> None:
    card = _card(
        model_name='"><img src=x onerror=alert(1)>',
        intended_use="<iframe src=evil>",
        lineage={"git_sha": "<svg onload=alert(2)>"},
    )
    page = render_html(card)
    parsed = _Tags()
    parsed.feed(page)
    assert "script" not in parsed.tags and "iframe" not in parsed.tags
    assert parsed.tags.count("svg") == 1  # the card's own picture; the hostile lineage text is escaped
    assert "b" not in parsed.tags  # the "<b>9E</b>" slice value
    assert len(parsed.images) == 1  # only the SHAP summary, not the hostile <img>
    assert HOSTILE not in page
    assert str(markupsafe.escape(HOSTILE)) in page  # the template engine's escaping (autoescape)
    assert "&lt;iframe src=evil&gt;" in page and "&lt;b&gt;9E&lt;/b&gt;" in page
    text = render_markdown(card)
    assert "<script>" not in text and "<iframe" not in text and "<img" not in text
    assert "`<svg onload=alert(2)>`" in text  # inside a code span it is shown literally, never parsed
    assert '# Model card: "&gt;&lt;img src=x onerror=alert(1)&gt; v7' in text


def test_missing_parts_say_not_recorded() -> None:
    card = ModelCard(model_name="bare", version="1")
    text, page = render_markdown(card), render_html(card)
    for heading in ("Intended use", "Training data", "Metrics per slice", "Validation", "Lineage"):
        section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
        assert "not recorded" in section, heading
    assert "SHAP values: not recorded." in text and "![SHAP summary]" not in text
    assert page.count("not recorded") >= 11 and "<img" not in page
    assert 'id="verdict">NO GATES</span>' in page

    no_champion = render_markdown(_card(champion=None, shap=None))
    assert "| test/auc | higher | 0.6731 | 0.5000 |" in no_champion and "Δ vs champion" not in no_champion
    assert "Champion: not recorded." in no_champion
    assert "SHAP values: not recorded." in no_champion
    assert "![SHAP summary](shap_summary.png)" in no_champion  # the picture alone is still shown


def test_json_round_trip() -> None:
    card = _card()
    encoded = card.to_json()
    data = json.loads(encoded)
    assert "shap_png" not in data and base64.b64decode(data["shap_png_base64"]) == card.shap_png
    assert data["slices"]["origin"][2]["test/logloss"] is None  # strict JSON: NaN becomes null
    back = ModelCard.from_json(encoded)
    assert back.shap_png == card.shap_png
    assert render_markdown(back) == render_markdown(card) and render_html(back) == render_html(card)
    clean = _card(slices={"origin": [{"value": "EWR", "rows": 24_012, "test/auc": 0.6688}]})
    assert ModelCard.from_json(clean.to_json().encode()) == clean
    bare = ModelCard(model_name="bare", version="1")
    assert ModelCard.from_json(bare.to_json()) == bare
    assert json.loads(bare.to_json())["shap_png_base64"] is None


def test_shap_png_must_be_a_png() -> None:
    with pytest.raises(ValueError, match="PNG"):
        ModelCard(model_name="m", version="1", shap_png=b"GIF89a")


def test_write_model_card(tmp_path: Path) -> None:
    card = _card()
    markdown, page = write_model_card(card, tmp_path / "card")
    assert markdown == tmp_path / "card" / "model_card.md" and page == tmp_path / "card" / "model_card.html"
    assert markdown.read_text(encoding="utf-8") == render_markdown(card)
    assert page.read_text(encoding="utf-8") == render_html(card)
    assert (tmp_path / "card" / "shap_summary.png").read_bytes() == card.shap_png
    other = tmp_path / "bare"
    write_model_card(ModelCard(model_name="bare", version="1"), other)
    assert sorted(p.name for p in other.iterdir()) == ["model_card.html", "model_card.md"]


def test_a_multiclass_card_shows_its_task_directions_and_confusion_matrix(tmp_path: Path) -> None:
    from raymlops.tasks.multiclass import MulticlassTask

    task = MulticlassTask(classes=("bronze", "gold", HOSTILE))
    card = _card(
        task={**task.describe(), "why": "target holds string values, 3 distinct"},
        directions={m: "higher" if up else "lower" for m, up in task.directions.items()},
        metrics={"test/accuracy": 0.70, "test/macro_f1": 0.61, "test/logloss": 0.82, "test/rows": 600.0},
        baseline={"test/accuracy": 0.50, "test/macro_f1": 0.22, "test/logloss": 1.03, "test/rows": 600.0},
        champion={"version": "2", "metrics": {"test/macro_f1": 0.65, "test/logloss": 0.80}},
        picture={
            "kind": "confusion_matrix",
            "labels": ["bronze", "gold", HOSTILE],
            "counts": [[250, 30, 20], [40, 60, 20], [30, 10, 140]],
        },
        shap={
            "method": "permutation",
            "output_space": "probability",
            "rows": 100,
            "seconds": 2.0,
            "mean_abs": {"num_a": 0.3, "cat": 0.1},
            "aggregation": "mean |SHAP| summed over the 3 classes",
        },
    )
    text, page = render_markdown(card), render_html(card)
    assert "| test/macro_f1 | higher | 0.6100 | 0.2200 | 0.6500 | -0.0400 |" in text
    assert '<td class="num worse">-0.0400</td>' in page  # macro-F1 dropped: worse (the task's direction)
    assert '<td class="num worse">+0.0200</td>' in page  # log loss rose: worse
    assert "- Classes: bronze, gold, &lt;script&gt;" in text
    assert "| bronze | 250 | 30 | 20 |" in text
    assert page.count('<rect class="cell"') == 9 and HOSTILE not in page
    assert 'data-actual="gold" data-predicted="bronze"' in page and ">40</text>" in page
    assert "Multiclass: mean |SHAP| summed over the 3 classes." in text
    assert "mean |SHAP| summed over the 3 classes: permutation" in page
    write_model_card(card, tmp_path)
    svg = (tmp_path / "predictions.svg").read_text()
    assert svg.startswith("<svg") and svg.count('<rect class="cell"') == 9


def test_a_regression_card_shows_predicted_against_actual(tmp_path: Path) -> None:
    import numpy as np

    from raymlops.tasks.regression import RegressionTask

    task = RegressionTask()
    rng = np.random.default_rng(0)
    actual = 200 + 30 * rng.normal(size=800)
    picture = task.card_picture(actual, actual + rng.normal(scale=5, size=800))
    card = _card(
        task={**task.describe(), "why": "price holds float numbers with more than two values"},
        directions={m: "higher" if up else "lower" for m, up in task.directions.items()},
        metrics={"test/rmse": 5.1, "test/mae": 4.0, "test/r2": 0.97, "test/rows": 800.0},
        baseline={"test/rmse": 30.2, "test/mae": 24.0, "test/r2": 0.0, "test/rows": 800.0},
        champion={"version": "4", "metrics": {"test/rmse": 5.6, "test/r2": 0.96}},
        picture=picture,
    )
    text, page = render_markdown(card), render_html(card)
    assert "| test/rmse | lower | 5.1000 | 30.2000 | 5.6000 | -0.5000 |" in text
    assert '<td class="num better">-0.5000</td>' in page  # a lower RMSE is better
    assert "- Task: regression" in text and "- Training loss: mse" in text
    assert page.count('<circle class="point"') == 500 and 'class="diagonal"' in page  # sampled to 500
    assert "800 rows, a sample of 500" in page
    assert "![Predicted vs actual](predictions.svg)" in text
    write_model_card(card, tmp_path)
    assert (tmp_path / "predictions.svg").read_text().count('<circle class="point"') == 500
    back = ModelCard.from_json(card.to_json())
    assert back.picture == card.picture and back.task == card.task and render_html(back) == page
