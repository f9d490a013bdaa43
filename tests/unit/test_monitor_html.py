"""The monitor's HTML page: the data report's drift table, live metrics and latency, every string escaped."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pyarrow as pa

from raymlops.data.drift import drift_report
from raymlops.data.profile import Profile
from raymlops.data.stats import table_stats
from raymlops.monitoring.report_html import render_monitor_html

HOSTILE = "<script>alert(1)</script>"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.rows: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr" and dict(attrs).get("class"):
            self.rows.append(dict(attrs))


def test_monitor_page_shows_drift_metrics_and_latency_escaped() -> None:
    rng = np.random.default_rng(0)
    reference = pa.table({HOSTILE: rng.normal(0, 1, 2_000), "origin": rng.choice(["EWR", "<b>"], 2_000)})
    window = pa.table({HOSTILE: rng.normal(2, 1, 2_000), "origin": rng.choice(["EWR", "<b>"], 2_000)})
    drift = drift_report(
        Profile.from_stats(table_stats(reference), 2_000, "flights@3"),
        Profile.from_stats(table_stats(window), 2_000, "window"),
    )
    version = {
        "rows": {"served": 1_600, "shadow": 400},
        "training_data_version": "flights@3",
        "feature_drift": drift,
        "prediction_drift": {"reference": "test_split", "psi": 0.04, "drifted": False},
        "accuracy": {
            "rows": 900,
            "live": {"accuracy": 0.61},
            "test": {"accuracy": 0.8},
            "drop": {"accuracy": 0.19},
        },
        "latency": {
            "slo": {"p50_ms": 20, "p99_ms": 80},
            "routes": {"served": {"p50_ms": 3.2, "p99_ms": 9.5}},
        },
    }
    report = {
        "model": "flights-delay",
        "selector": "champion",
        "window": {"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"},
        "rows": 2_000,
        "read_with": "pyarrow",
        "ok": False,
        "alerts": [{"version": "1", "kind": "feature_drift", "detail": f"{HOSTILE} (psi 3.1)"}],
        "warnings": [],
        "versions": {"1": version},
    }
    page = render_monitor_html(report)
    parsed = _Page()
    parsed.feed(page)
    assert "script" not in parsed.tags and "b" not in parsed.tags and HOSTILE not in page
    features = {r["data-feature"]: r["data-status"] for r in parsed.rows if r["class"] == "feature"}
    assert features == {HOSTILE: "drift", "origin": "ok"}
    assert parsed.tags.count("svg") == 2  # the data report's histogram, one per feature
    assert [r["data-metric"] for r in parsed.rows if r["class"] == "metric"] == ["accuracy"]
    assert '<td>accuracy</td><td class="num">0.610</td><td class="num">0.800</td>' in page
    assert [r["data-route"] for r in parsed.rows if r["class"] == "route"] == ["served"]
    assert ">3.2</td>" in page and ">9.5</td>" in page and "1 ALERT(S)" in page
    assert "Monitor: flights-delay@champion" in page and "served 1600, shadow 400" in page
