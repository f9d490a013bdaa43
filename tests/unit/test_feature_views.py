"""Feature view definitions: the shipped views load against their sources; mistakes name the view and key."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from raymlops.config import compose
from raymlops.data.sources import load_source
from raymlops.errors import ConfigError
from raymlops.features.views import VIEWS_DIR, available_views, derive_at_event, load_views


def test_the_experiment_composes_and_every_model_input_exists(tmp_path: Path) -> None:
    cfg = compose(["+experiment=flights_features", f"state_dir={tmp_path}"])
    views = load_views(cfg)
    assert [v.name for v in views] == list(cfg.features.views)
    assert all(v.source.ref.startswith(f"delta:{tmp_path}/data/") for v in views)
    produced = set(load_source(cfg.data.source).column_names)
    for view in views:
        produced |= set(view.output_columns)
    inputs = [*cfg.features.numeric, *cfg.features.categorical]
    assert set(inputs) <= produced, sorted(set(inputs) - produced)
    assert not set(inputs) & set(cfg.features.forbidden)
    pickle.loads(pickle.dumps(views))  # views travel to Ray tasks


def test_every_shipped_view_loads() -> None:
    names = available_views()
    assert {"weather", "planes", "carrier_history", "route_history"} <= set(names)
    views = load_views(names, state_dir="/nonexistent-state")  # schemas come from the raw sources
    by_name = {v.name: v for v in views}
    assert by_name["planes"].timestamp is None and by_name["planes"].ttl_delta is None
    assert by_name["weather"].ttl_delta is not None
    assert by_name["route_history"].entities == ["origin", "dest"]


@pytest.fixture
def views_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "views"
    shutil.copytree(VIEWS_DIR, folder)
    return folder


@pytest.mark.parametrize(
    ("view", "old", "new", "key", "hint"),
    [
        ("weather", "ttl: 3h", "tll: 3h", "features.views.weather.tll", "'ttl'"),
        ("weather", "[temp, dewp", "[tmp, dewp", "features.views.weather.features.tmp", "'temp'"),
        ("route_history", "  lag: 2d", "  lagg: 2d", "features.views.route_history.window.lagg", "'lag'"),
        ("planes", "plane_seats: seats", "plane_seats: seat", "features.views.planes.rename.seat", "'seats'"),
        (
            "weather",
            "entities: [origin]",
            "entities: [orign]",
            "features.views.weather.entities.orign",
            "'origin'",
        ),
        (
            "carrier_history",
            "column: arr_delay, function: count",
            "column: arr_dely, function: count",
            "features.views.carrier_history.aggregations.carrier_flights_7d.column.arr_dely",
            "'arr_delay'",
        ),
        ("weather", "ttl: 3h", "ttl: 3 hours", "features.views.weather.ttl", "<n>h"),
    ],
)
def test_a_mistake_names_the_view_and_key_with_a_hint(views_dir, view, old, new, key, hint) -> None:
    path = views_dir / f"{view}.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_views([view], views_dir=views_dir, state_dir="/nonexistent-state")
    assert info.value.key == key or info.value.key.startswith(key)
    assert hint in str(info.value)


def test_an_unknown_view_lists_the_shipped_ones(tmp_path: Path) -> None:
    cfg = compose(["+experiment=flights_features", "features.views=[weathr]", f"state_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="Did you mean 'weather'"):
        load_views(cfg)


def test_plane_age_is_the_year_of_the_rows_event_time_minus_the_build_year() -> None:
    (planes,) = load_views(["planes"], check_columns=False)
    joined = pa.table(
        {
            "time_hour": pa.array([0, 365 * 86400, 0], pa.timestamp("s", "UTC")),  # 1970, 1971
            "plane_year": pa.array([1960, 1960, None], pa.int64()),
        }
    )
    assert derive_at_event(joined, planes, "time_hour")["plane_age"].to_pylist() == [10.0, 11.0, None]
