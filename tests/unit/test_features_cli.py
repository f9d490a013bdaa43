"""``python -m raymlops features status|show`` against a real SQLite online store (no Ray needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raymlops.cli import main
from raymlops.features.online import MaterializationState, open_online_store


def test_status_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "online.db"
    store = open_online_store({"kind": "sqlite", "path": str(db)})
    store.write("weather", [("JFK", 1_357_214_400_000_000, {"temp": 39.02, "wind_speed": 10.3})])
    store.put_state(
        MaterializationState(
            "weather", "delta:/w@2", "2013-01-03T12:00:00+00:00", 1_357_214_400_000_000, 1, 1, 0, True, "now"
        )
    )
    store.close()
    override = f"features.online_store.path={db}"
    assert main(["features", "status", "--view", "weather", "--view", "planes", override]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert ["weather", "2013-01-03T12:00:00+00:00", "delta:/w@2", "full", "1", "0", "1"] in rows
    assert "planes: never materialized" in out
    assert main(["features", "show", "weather", "JFK", "SFO", override]) == 0
    out = capsys.readouterr().out
    assert 'JFK (event time 2013-01-03T12:00:00+00:00): {"temp": 39.02, "wind_speed": 10.3}' in out
    assert "SFO: not in the store" in out


def test_a_bad_store_kind_names_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["features", "status", "features.online_store.kind=redist"]) == 2
    assert "Did you mean 'redis'? Valid choices: redis, sqlite" in capsys.readouterr().err
