"""The serving side of feature views without Ray: what a spec asks of a request, and how the router's
lookup completes a request's inputs from a real SQLite online store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raymlops.errors import ConfigError, RequestError
from raymlops.features.online import open_online_store
from raymlops.features.online.lookup import FeatureLookup, ViewLookup, lookup_for_views
from raymlops.features.views import load_views
from raymlops.serving.feature_lookup import with_features
from raymlops.serving.protocols.v1 import records_to_inputs
from raymlops.serving.spec import ModelSpec, build_user_config, parse_user_config

INPUTS = {
    "distance": "float",
    "origin": "string",
    "temp": "float",
    "plane_type": "string",
    "plane_age": "float",
}
LOOKUP = FeatureLookup(
    (
        ViewLookup("weather", ("origin",), ("temp",)),
        ViewLookup("planes", ("tailnum",), ("plane_type",), {"plane_age": "plane_year"}),
    ),
    event_time="time_hour",
)


def _spec(lookup: FeatureLookup | None = LOOKUP) -> ModelSpec:
    return ModelSpec("flights", "1", "/models/m.onnx", "delta:/t@0", INPUTS, feature_lookup=lookup)


def test_a_request_carries_entity_keys_instead_of_features() -> None:
    spec = _spec()
    assert spec.request_columns == {
        "distance": "float",
        "origin": "string",
        "tailnum": "string",
        "time_hour": "string",
    }
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    plain = _spec(None)
    assert plain.request_columns == INPUTS
    assert "feature_lookup" not in plain.to_dict()  # routing tables without views are as they were


def test_views_and_store_are_checked_before_deploying() -> None:
    with pytest.raises(ConfigError, match=r"serving.online_store.*view\(s\) weather, planes"):
        build_user_config([_spec()])
    config = build_user_config([_spec()], online_store={"kind": "sqlite", "path": "/tmp/x.db"})
    assert parse_user_config(config).online_store is not None
    with pytest.raises(ConfigError, match="not model inputs"):
        _spec(FeatureLookup((ViewLookup("weather", ("origin",), ("wind",)),)))
    with pytest.raises(ConfigError, match="event_time"):
        FeatureLookup((ViewLookup("planes", ("tailnum",), (), {"plane_age": "plane_year"}),))


def test_lookup_of_the_real_views_takes_only_what_the_model_uses() -> None:
    views = load_views(["weather", "planes", "route_history"], check_columns=False)
    lookup = lookup_for_views(views, INPUTS, "time_hour")
    assert lookup is not None
    assert [(v.view, v.entities, v.features, v.derived) for v in lookup.views] == [
        ("weather", ("origin",), ("temp",), {}),
        ("planes", ("tailnum",), ("plane_type",), {"plane_age": "plane_year"}),
    ]
    assert lookup.event_time == "time_hour"
    assert lookup_for_views(views, {"distance": "float"}, "time_hour") is None


def test_features_come_from_the_store_and_missing_entities_are_flagged(tmp_path: Path) -> None:
    store = open_online_store({"kind": "sqlite", "path": str(tmp_path / "o.db")})
    store.write("weather", [("JFK", 1, {"temp": 40.0}), ("LGA", 1, {"temp": None})])
    store.write("planes", [("N1", 0, {"plane_year": 2003, "plane_type": "Fixed wing"})])
    records = [
        {"distance": 100, "origin": "JFK", "tailnum": "N1", "time_hour": "2013-12-31T23:00:00-05:00"},
        {"distance": 200, "origin": "SFO", "tailnum": "N1", "time_hour": "2013-06-01T08:00:00Z"},
        {"distance": 300, "origin": "LGA", "tailnum": None, "time_hour": None, "temp": 99.0},
    ]
    spec = _spec()
    request = records_to_inputs(records, spec.request_columns, 100)
    inputs, imputed = with_features(request, LOOKUP, INPUTS, store)
    assert list(inputs.columns) == list(INPUTS)
    np.testing.assert_array_equal(inputs.columns["distance"], [100, 200, 300])
    # The store's value, not the client's; a stored null stays null (imputed by the graph).
    np.testing.assert_array_equal(inputs.columns["temp"], [40.0, np.nan, np.nan])
    assert inputs.columns["plane_type"] == ["Fixed wing", "Fixed wing", None]
    # Age at the event: 23:00 at UTC-5 on Dec 31 is already 2014 in UTC.
    np.testing.assert_array_equal(inputs.columns["plane_age"], [11.0, 10.0, np.nan])
    assert imputed == [[], ["weather"], ["planes"]]
    assert inputs.feeds()["plane_type"].ravel().tolist() == ["Fixed wing", "Fixed wing", ""]
    bad = records_to_inputs([{**records[0], "time_hour": "yesterday"}], spec.request_columns, 100)
    with pytest.raises(RequestError, match="'time_hour' must be an ISO 8601 time"):
        with_features(bad, LOOKUP, INPUTS, store)
