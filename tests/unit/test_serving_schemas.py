"""The feedback body's OpenAPI schema is generated from a pydantic model and agrees with the parser:
every body the schema accepts is parsed, every body it refuses is a 422."""

from __future__ import annotations

import json
import math
import re

import jsonschema
import pytest

from raymlops.errors import ConfigError, RequestError
from raymlops.monitoring.feedback import parse_feedback
from raymlops.serving.openapi_docs import FEEDBACK_DOC
from raymlops.serving.schemas import FeedbackItem

ITEM = {"prediction_id": "0b7e6a1c", "outcome": 1, "row": 0}
BODIES = [
    (ITEM, True),
    ({"prediction_id": "p", "outcome": "gold", "model": "flights"}, True),
    ({"prediction_id": "p", "outcome": True, "model": None}, True),
    ({"feedback": [ITEM, {"prediction_id": "q", "outcome": 2.5}]}, True),
    ([ITEM, ITEM], True),
    ({**ITEM, "colour": "red"}, False),  # an unknown key
    ({"prediction_id": "", "outcome": 1}, False),
    ({"prediction_id": "p" * 257, "outcome": 1}, False),
    ({"prediction_id": "p"}, False),
    ({"prediction_id": "p", "outcome": None}, False),
    ({"prediction_id": "p", "outcome": [1]}, False),
    ({"prediction_id": "p", "outcome": ""}, False),
    ({"prediction_id": "p", "outcome": "x" * 257}, False),
    ({**ITEM, "row": -1}, False),
    ({**ITEM, "row": True}, False),
    ({**ITEM, "row": 2**31}, False),
    ({**ITEM, "model": ""}, False),
    ({"feedback": []}, False),
    ({"feedback": [ITEM], "extra": 1}, False),
    ([], False),
    ("text", False),
]


@pytest.mark.parametrize(("body", "valid"), BODIES)
def test_schema_and_parser_agree(body: object, valid: bool) -> None:
    schema = FEEDBACK_DOC["requestBody"]["content"]["application/json"]["schema"]
    schema_ok = jsonschema.Draft202012Validator(schema).is_valid(body)
    try:
        parse_feedback(json.dumps(body).encode(), max_items=100)
        parsed = True
    except RequestError as exc:
        assert exc.status == 422
        parsed = False
    assert (schema_ok, parsed) == (valid, valid)
    items = body if isinstance(body, list) else body.get("feedback", [body]) if isinstance(body, dict) else []
    if valid:
        assert [FeedbackItem.model_validate(i).prediction_id for i in items] == [
            i["prediction_id"] for i in items
        ]


def test_settings_errors_name_the_key_and_the_choices() -> None:
    from raymlops.serving.ood import OODSettings

    cases = {
        "serve.ood.margin": ({"margin": 1}, "Did you mean 'range_margin'? Valid choices: action, enabled"),
        "serve.ood.action": ({"action": "drop"}, "'drop' is not one of flag, reject"),
        "serve.ood.enabled": ({"enabled": "yes"}, "valid boolean, got 'yes'"),
        "serve.ood.range_margin": ({"range_margin": True}, "valid number, got True"),
    }
    for key, (data, message) in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)) as info:
            OODSettings.from_dict(data)
        assert info.value.key == key
    with pytest.raises(ConfigError, match="finite number, got inf"):
        OODSettings(True, "flag", math.inf)  # the constructor validates too
    assert OODSettings.from_dict({"range_margin": 2}) == OODSettings(True, "flag", 2.0)


def test_user_config_shapes_name_the_key() -> None:
    """ModelSpec, the prediction log and the router keys go through their pydantic shapes: each error
    names the config key; to_dict is the shape's dump and round-trips."""
    from raymlops.serving.spec import ModelSpec, PredictionLogSettings, build_user_config, parse_user_config

    good = ModelSpec("m", "1", "/m.onnx", "d1", {"a": "float"}, task={})
    assert ModelSpec.from_dict(good.to_dict()) == good
    assert set(good.to_dict()) == {f for f in good.__dataclass_fields__} - {
        "feature_lookup",
        "input_profile",
        "task",
    }
    log = PredictionLogSettings("/logs", flush_rows=5)
    assert PredictionLogSettings.from_dict(log.to_dict()) == log
    cases = [
        (lambda: ModelSpec.from_dict({**good.to_dict(), "threshold": True}), "serving.models['m'].threshold"),
        (lambda: ModelSpec.from_dict({**good.to_dict(), "digest": "abc"}), "serving.models['m'].digest"),
        (lambda: ModelSpec("m", "", "/m.onnx", "d1", {"a": "float"}), "serving.models['m'].version"),
        (lambda: ModelSpec("m", "1", "/m.onnx", "d1", {}), "serving.models['m'].input_columns"),
        (
            lambda: PredictionLogSettings.from_dict({"root": "/l", "flush_row": 3}),
            "serving.prediction_log.flush_row",
        ),
        (lambda: PredictionLogSettings("/l", wal="yes"), "serving.prediction_log.wal"),
        (
            lambda: PredictionLogSettings("/l", flush_interval_s=math.nan),
            "serving.prediction_log.flush_interval_s",
        ),
        (lambda: parse_user_config({"models": {}, "use_gpu": "true"}), "serving.use_gpu"),
        (lambda: parse_user_config({"models": {}, "stat_window": 3}), "serving.user_config.stat_window"),
        (lambda: build_user_config([good], stats_window=1.5), "serving.stats_window"),
    ]
    for make, key in cases:
        with pytest.raises(ConfigError) as info:
            make()
        assert info.value.key == key, (key, str(info.value))
    assert "Did you mean 'flush_rows'" in _message(cases[4][0])


def _message(make: object) -> str:
    with pytest.raises(ConfigError) as info:
        make()  # type: ignore[operator]
    return str(info.value)


def test_policy_tls_and_rollout_shapes_name_the_key() -> None:
    """Route policies, serve.tls and serve.rollout through their shapes: strict values, unknown keys
    named with the valid choices, to_dict from the shape's dump."""
    from raymlops.serving.deploy import TLSSettings
    from raymlops.serving.policy import RoutePolicy, Shadow, Sticky
    from raymlops.serving.rollout import RolloutPolicy

    policy = RoutePolicy(Sticky("header", "x-user"), Shadow("3", 1))
    assert policy.to_dict() == {"sticky": {"header": "x-user"}, "shadow": {"version": "3", "fraction": 1.0}}
    assert RoutePolicy.from_dict("m", policy.to_dict()) == policy
    assert RoutePolicy().to_dict() == {}
    rollout = RolloutPolicy.from_config({"steps": [50, 100], "min_requests": 5})
    assert (rollout.steps, rollout.min_requests, rollout.poll_s) == ((50.0, 100.0), 5, RolloutPolicy.poll_s)
    cases = [
        (
            lambda: RoutePolicy.from_dict("m", {"shadow": {"version": 3, "fraction": 0.1}}),
            "serving.policies['m'].shadow.version",
        ),
        (lambda: Sticky("field", 7), "serving.policies.sticky.field"),
        (lambda: Shadow("3", True), "serving.policies.shadow.fraction"),
        (lambda: TLSSettings.from_dict({"certfile": 5}), "serve.tls.certfile"),
        (lambda: TLSSettings.from_dict({"key_file": "k"}), "serve.tls.key_file"),
        (lambda: RolloutPolicy.from_config({"poll_s": 0}), "serve.rollout.poll_s"),
        (lambda: RolloutPolicy.from_config({"min_request": 5}), "serve.rollout.min_request"),
        (lambda: RolloutPolicy(min_requests=True), "serve.rollout.min_requests"),
        (lambda: RolloutPolicy(max_p99_ratio=-1.0), "serve.rollout.max_p99_ratio"),
    ]
    for make, key in cases:
        with pytest.raises(ConfigError) as info:
            make()
        assert info.value.key == key, (key, str(info.value))
    assert "Did you mean 'keyfile'" in _message(cases[4][0])
    assert "is not a rollout setting. Did you mean 'min_requests'" in _message(cases[6][0])


def test_online_store_and_lookup_shapes_name_the_key() -> None:
    """features.online_store and a model's feature lookup through their shapes; to_dict round-trips."""
    from raymlops.features.online.base import OnlineStoreSettings
    from raymlops.features.online.lookup import FeatureLookup, ViewLookup

    store = OnlineStoreSettings.from_dict({"kind": "sqlite", "path": "/s.db", "timeout_s": 2, "url": None})
    assert store.to_dict() == {**OnlineStoreSettings(path="/s.db").to_dict(), "timeout_s": 2.0}
    assert OnlineStoreSettings.from_dict(store.to_dict()) == store
    lookup = FeatureLookup((ViewLookup("planes", ("tailnum",), ("seats",), {"age": "year"}),), "time_hour")
    assert lookup.to_dict()["views"] == [
        {"view": "planes", "entities": ["tailnum"], "features": ["seats"], "derived": {"age": "year"}}
    ]
    assert FeatureLookup.from_dict(lookup.to_json()) == lookup
    views = lookup.to_dict()["views"]
    cases = [
        (lambda: OnlineStoreSettings.from_dict({"path": 5}), "features.online_store.path"),
        (lambda: OnlineStoreSettings(path="/s.db", timeout_s=True), "features.online_store.timeout_s"),
        (
            lambda: FeatureLookup.from_dict({"views": views, "event": "t"}),
            "serving.models.feature_lookup.event",
        ),
        (lambda: FeatureLookup.from_dict({"views": "planes"}), "serving.models.feature_lookup.views"),
        (
            lambda: FeatureLookup.from_dict({"views": [{**views[0], "entity": ["x"]}]}),
            "serving.models.feature_lookup.views[0].entity",
        ),
        (
            lambda: FeatureLookup.from_dict({"views": [{"view": "p", "entities": [1]}]}),
            "serving.models.feature_lookup.views[0].entities.0",
        ),
        (lambda: FeatureLookup.from_dict({"views": ["planes"]}), "serving.models.feature_lookup.views[0]"),
    ]
    for make, key in cases:
        with pytest.raises(ConfigError) as info:
            make()
        assert info.value.key == key, (key, str(info.value))
    assert "is not a lookup setting. Did you mean 'event_time'" in _message(cases[2][0])
    assert "Did you mean 'entities'" in _message(cases[4][0])


def test_task_answer_schemas_come_from_their_models_and_hold_the_answers() -> None:
    """Each task's answer rows (built by hand on the hot path) validate against the schema its pydantic
    model generates; a row of another task's shape does not."""
    import numpy as np

    from raymlops.tasks.binary import BinaryTask
    from raymlops.tasks.multiclass import MulticlassTask
    from raymlops.tasks.regression import RegressionTask

    pred = np.array([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]], np.float32)
    tasks = {
        "binary": (BinaryTask(threshold=0.5), pred[:, 1]),
        "labels": (BinaryTask(positive="late", negative="on time"), pred[:, 1]),
        "multiclass": (MulticlassTask(classes=("a", "b", "c")), pred),
        "regression": (RegressionTask(), pred[:, 0] * 100),
    }
    rows = {}
    for name, (task, out) in tasks.items():
        validator = jsonschema.Draft202012Validator(task.answer_schema())
        rows[name] = task.answers(out)
        assert all(validator.is_valid(row) for row in rows[name]), name
    assert not jsonschema.Draft202012Validator(BinaryTask.answer_schema()).is_valid({"value": 3.0})
    assert not jsonschema.Draft202012Validator(MulticlassTask.answer_schema()).is_valid(
        {"label": "a", "probabilities": {"a": 1.5}}
    )
    assert not jsonschema.Draft202012Validator(RegressionTask.answer_schema()).is_valid(rows["binary"][0])
