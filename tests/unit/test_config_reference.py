"""docs/config-reference.md is generated from the schemas and must match them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from raymlops.config import schema
from raymlops.config.reference import render

CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "config-reference.md"


def test_checked_in_reference_is_the_generated_one() -> None:
    regenerate = "python -m raymlops.config.reference > docs/config-reference.md"
    assert CHECKED_IN.read_text() == render(), f"docs/config-reference.md is stale: run `{regenerate}`"


def test_every_key_is_documented_with_the_comment_on_its_line() -> None:
    text = render()
    for f in dataclasses.fields(schema.ServeConfig):
        assert f"| `{f.name}` |" in text.split("## serve\n", 1)[1].split("\n## ", 1)[0]
    # The comment next to the key in the schema, the comment lines above a key, enum choices.
    assert "| `port` | int | `8000` |" in text
    assert "log every served row to monitor.log_root" in text
    assert "Feature views (configs/features/views/&lt;name&gt;.yaml) joined point-in-time" in text
    assert "| `on_fail` | GateFailure: `reject`, `skip` | `reject` |" in text
    assert "## model (xgboost)" in text and "| `num_boost_round` | int | `60` |" in text
