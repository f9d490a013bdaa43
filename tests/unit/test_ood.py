"""Out-of-distribution checks: bounds from a real training profile, per-row flags, the 422, metrics."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from raymlops.data.profile import Profile
from raymlops.errors import ConfigError, RequestError
from raymlops.serving.ood import OODCheck, OODSettings, check_input_profile, input_profile
from raymlops.serving.protocols import oip_v2
from raymlops.serving.protocols.v1 import records_to_inputs
from raymlops.serving.spec import ModelSpec, build_user_config, parse_user_config

COLUMNS = {"distance": "float", "hour": "float", "origin": "string"}


def _numeric(low: float, high: float) -> dict[str, Any]:
    quantiles = np.linspace(low, high, 101).tolist()  # a uniform training column: q01, q99 exact
    return {"kind": "numeric", "count": 1000, "null_fraction": 0.0, "quantiles": quantiles}


@pytest.fixture(scope="module")
def profile() -> Profile:
    """A training profile as the validate stage writes it: distance 0..1000, hour 0..23, 3 origins."""
    frequencies = {"EWR": 0.3, "JFK": 0.4, "LGA": 0.3, "__other__": 0.0}
    return Profile.from_dict(
        {
            "data_version": "delta-1",
            "rows": 1000,
            "columns": {
                "distance": _numeric(0, 1000),
                "hour": _numeric(0, 23),
                "origin": {
                    "kind": "categorical",
                    "count": 1000,
                    "null_fraction": 0.0,
                    "frequencies": frequencies,
                    "distinct": 3,
                },
                "unused": _numeric(0, 1),
            },
        }
    )


def test_input_profile_keeps_the_percentiles_and_the_categories(profile: Profile) -> None:
    reference = input_profile(profile, COLUMNS)
    assert set(reference) == set(COLUMNS)  # only the model's inputs, not "unused"
    assert reference["distance"] == {"q01": pytest.approx(10), "q99": pytest.approx(990)}
    assert reference["origin"] == {"categories": ["EWR", "JFK", "LGA"]}
    # JSON-able: it travels in Serve's user_config.
    assert json.loads(json.dumps(reference)) == reference


def test_a_column_with_too_many_categories_is_not_checked() -> None:
    # More distinct values than the profile keeps (TOP_CATEGORIES): an unseen one may just be rare.
    frequencies = {f"c{i}": 0.01 for i in range(50)} | {"__other__": 0.5}
    city = {
        "kind": "categorical",
        "count": 100,
        "null_fraction": 0.0,
        "frequencies": frequencies,
        "distinct": 60,
    }
    built = Profile.from_dict({"data_version": "v", "rows": 100, "columns": {"city": city}})
    assert input_profile(built, {"city": "string"}) == {}
    complete = Profile.from_dict(
        {"data_version": "v", "rows": 100, "columns": {"city": {**city, "distinct": 50}}}
    )
    assert len(input_profile(complete, {"city": "string"})["city"]["categories"]) == 50


def test_flags_per_row_with_the_margin(profile: Profile) -> None:
    records = [
        {"distance": 500.0, "hour": 12, "origin": "JFK"},  # inside
        {"distance": 1900.0, "hour": 12, "origin": "JFK"},  # 990 + 1 * 980 = 1970: inside the margin
        {"distance": 2000.0, "hour": -30, "origin": "SFO"},  # three columns out
        {"distance": None, "hour": None, "origin": None},  # missing values are never flagged
        {"distance": -971.0, "hour": 5, "origin": ""},  # just below 10 - 980 = -970; "" is missing
    ]
    inputs = records_to_inputs(records, COLUMNS, 100)
    reference = input_profile(profile, COLUMNS)
    flags = OODCheck(reference, margin=1.0).flags(inputs)
    assert flags == [[], [], ["distance", "hour", "origin"], [], ["distance"]]
    # No margin: the training percentiles themselves are the bounds.
    assert OODCheck(reference, margin=0.0).flags(inputs)[1] == ["distance"]


def test_v2_nan_is_missing_not_flagged(profile: Profile) -> None:
    body = {
        "inputs": [
            {"name": "distance", "datatype": "FP64", "shape": [2], "data": [math.nan, 5000.0]},
            {"name": "hour", "datatype": "FP32", "shape": [2], "data": [1, 2]},
            {"name": "origin", "datatype": "BYTES", "shape": [2], "data": ["JFK", "JFK"]},
        ]
    }
    # NaN is not JSON: the request is written as a client with allow_nan would.
    request = oip_v2.parse_infer_request(json.dumps(body).encode())
    inputs = oip_v2.infer_inputs(request, COLUMNS, 100)
    flags = OODCheck(input_profile(profile, COLUMNS), 1.0).flags(inputs)
    assert flags == [[], ["distance"]]
    parameters = oip_v2.ood_parameters(flags)
    # OIP allows only strings, numbers and booleans as parameter values.
    assert parameters == {"ood_rows": 1, "ood": '[[],["distance"]]'}
    assert json.loads(parameters["ood"]) == flags


def test_refusal_names_the_row_column_value_and_bound(profile: Profile) -> None:
    check = OODCheck(input_profile(profile, COLUMNS), 1.0)
    inputs = records_to_inputs(
        [{"distance": 1, "hour": 1, "origin": "JFK"}, {"distance": 5000, "hour": 1, "origin": "JFK"}],
        COLUMNS,
        100,
    )
    error = check.refusal(inputs, check.flags(inputs))
    assert isinstance(error, RequestError) and error.status == 422
    assert "row 1 column 'distance': value 5000 is outside the training range [-970, 1970]" in error.message
    assert "serve.ood.action=flag" in error.message
    inputs = records_to_inputs([{"distance": 1, "hour": 1, "origin": "SFO"}], COLUMNS, 100)
    error = check.refusal(inputs, check.flags(inputs))
    assert "category 'SFO' was never seen in training (seen: 'EWR', 'JFK', 'LGA')" in error.message


@pytest.mark.parametrize(
    ("reference", "fragment"),
    [
        ({"distance": {"q01": 5, "q99": 1}}, "q01 5 is above q99 1"),
        ({"distance": {"q01": "a", "q99": 1}}, "must be finite numbers"),
        ({"distance": {"q01": 0}}, "must be"),
        ({"origin": {"categories": "JFK"}}, "list of strings"),
        ({"dest": {"categories": ["JFK"]}}, "profiles column(s) ['dest'] that are not model inputs"),
    ],
)
def test_a_bad_input_profile_is_refused_before_deploy(reference: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        ModelSpec("flights", "1", "/m.onnx", "d", COLUMNS, input_profile=reference)
    assert fragment in str(info.value) and "input_profile" in info.value.key


def test_settings_and_the_spec_survive_user_config(profile: Profile) -> None:
    spec = ModelSpec("flights", "1", "/m.onnx", "d", COLUMNS, input_profile=input_profile(profile, COLUMNS))
    config = parse_user_config(build_user_config([spec], ood={"action": "reject", "range_margin": 0.5}))
    assert config.ood == OODSettings(True, "reject", 0.5)
    assert config.models["flights"][0] == spec
    plain = ModelSpec("flights", "1", "/m.onnx", "d", COLUMNS)
    assert "input_profile" not in plain.to_dict()  # configs without profiles stay as they were
    with pytest.raises(ConfigError, match="'drop' is not one of flag, reject") as info:
        OODSettings.from_dict({"action": "drop"})
    assert info.value.key == "serve.ood.action"
    with pytest.raises(ConfigError) as info:
        OODSettings.from_dict({"range_margin": -1})
    assert info.value.key == "serve.ood.range_margin"
    assert check_input_profile("k", None) is None
