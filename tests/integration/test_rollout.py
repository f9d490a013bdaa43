"""Progressive rollout on a real router with a real registry, under steady client traffic.

A candidate that fails, one that is slow and one whose predictions are shifted are each rolled back
automatically while the client sees no failed request; a healthy candidate is promoted and the
``champion`` alias moves. The registry's audit log records each step and why it ended.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from raymlops.errors import GovernanceError
from raymlops.registry.governance import Governance
from raymlops.registry.mlflow_registry import ModelRegistry
from raymlops.serving import deploy
from raymlops.serving.operations import live_app, progressive_rollout, spec_from_registry
from raymlops.serving.rollout import RolloutPolicy, Verdict, judge
from tests.integration.test_router_policy import broken_graph
from tests.integration.test_serving import PRE, ROWS, free_port

pytestmark = [pytest.mark.usefixtures("ray_local")]

APP = "rollout-test"
NAME = "flights"
# Latency bounds loose enough for a loaded 2-core CI machine (p99 of 15 requests is their maximum),
# tight enough for a candidate that adds a quarter of a second.
POLICY = RolloutPolicy(
    steps=(10.0, 50.0, 100.0),
    min_requests=15,
    min_step_s=0.5,
    poll_s=0.25,
    step_timeout_s=60.0,
    max_p99_ratio=3.0,
    p99_slack_ms=40.0,
)


def graph(weights: list[float], bias: float = 0.0, slow: bool = False) -> Any:
    """features [N, 5] -> logistic regression. ``slow`` adds a 2000x2000 MatMul (~0.1 s here) that
    depends on the input, so onnxruntime cannot fold it away, and changes nothing in the answer."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("MatMul", ["features", "w"], ["score"]),
        helper.make_node("Add", ["score", "bias"], ["logit0"]),
    ]
    init = [
        numpy_helper.from_array(np.asarray(weights, dtype=np.float32), "w"),
        numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "bias"),
    ]
    if slow:
        nodes += [
            helper.make_node("ReduceSum", ["features"], ["total"], keepdims=0),
            helper.make_node("Mul", ["total", "zero"], ["nothing"]),
            helper.make_node("Add", ["big", "nothing"], ["big_live"]),
            helper.make_node("MatMul", ["big_live", "big_live"], ["product"]),
            helper.make_node("ReduceSum", ["product"], ["product_sum"], keepdims=0),
            helper.make_node("Mul", ["product_sum", "zero"], ["still_nothing"]),
            helper.make_node("Add", ["logit0", "still_nothing"], ["logit"]),
        ]
        init += [
            numpy_helper.from_array(np.asarray(0.0, dtype=np.float32), "zero"),
            numpy_helper.from_array(np.full((2000, 2000), 1e-3, dtype=np.float32), "big"),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["logit0"], ["logit"]))
    nodes.append(helper.make_node("Sigmoid", ["logit"], ["probability"]))
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "rollout_candidate",
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 5])],
            [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None])],
            init,
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    return model


CHAMPION = [0.8, -0.5, 0.3, -0.2, 0.1]
VERSIONS = {  # registered in this order: versions 1..5
    "champion": graph(CHAMPION),
    "broken": broken_graph(),
    "slow": graph(CHAMPION, slow=True),
    "shifted": graph(CHAMPION, bias=3.0),
    "healthy": graph([0.78, -0.48, 0.3, -0.2, 0.1]),
}


@dataclass
class Traffic:
    """A client sending predictions back to back until stopped; every status kept.

    Each request carries all of ROWS: every version then scores the same rows in the same proportions,
    so the mean-prediction check compares the models, not which rows the weighted split happened to send
    each one (with one row per request, 15 requests drawn from 4 rows whose probabilities differ put a
    healthy candidate's mean 0.11 from the champion's in a loaded run, past the 0.1 bound)."""

    url: str
    statuses: list[int] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                response = client.post(f"{self.url}/v1/models/{NAME}/predict", json={"records": ROWS})
                self.statuses.append(response.status_code)
                self.versions.append(response.headers.get("model-version", "?"))


@dataclass(frozen=True)
class Setup:
    registry: ModelRegistry
    governance: Governance
    versions: dict[str, str]  # label -> registered version
    overrides: list[str]  # for the CLI: the same registry and app


@pytest.fixture(scope="module")
def setup(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    import onnx
    from ray import serve

    from raymlops.models.export import compose_pipeline

    folder = tmp_path_factory.mktemp("rollout")
    registry = ModelRegistry(f"sqlite:///{folder}/mlflow.db", str(folder / "artifacts"), "rollout")
    tags = {"raymlops.input_columns": ",".join(f"{k}:{v}" for k, v in PRE.input_columns.items())}
    numbers = {}
    for label, model in VERSIONS.items():
        run = registry.client.create_run(registry.experiment_id(), run_name=label)
        path = folder / label / "model.onnx"
        path.parent.mkdir()
        onnx.save(compose_pipeline(PRE, model), str(path))
        version = registry.register_version(
            model_name=NAME,
            run_id=run.info.run_id,
            model_files=[path],
            tags={**tags, "raymlops.data_version": f"delta:/t@{label}"},
        )
        numbers[label] = version.version
    governance = Governance(registry)
    governance.set_alias(NAME, "champion", numbers["champion"], why="first model")
    champion = spec_from_registry(registry, NAME, "@champion", weight=1.0)
    port = free_port()
    overrides = [
        f"state_dir={folder}",
        f"registry.model_name={NAME}",
        f"serve.app_name={APP}",
        f"serve.port={port}",
    ]
    try:
        deploy([champion], app_name=APP, host="127.0.0.1", port=port, timeout_s=90)
        governance.record_deployment(NAME, APP, {champion.version}, why="test setup")
        yield Setup(registry, governance, numbers, overrides)
    finally:
        serve.shutdown()


def _rollout_under_traffic(setup: Setup, label: str) -> tuple[Any, Traffic]:
    traffic = Traffic(live_app(APP).url)
    worker = threading.Thread(target=traffic.run, daemon=True)
    worker.start()
    try:
        candidate = spec_from_registry(setup.registry, NAME, setup.versions[label])
        result = progressive_rollout(APP, NAME, candidate, POLICY, setup.governance)
    finally:
        traffic.stop.set()
        worker.join(30)
    return result, traffic


@pytest.mark.parametrize(
    ("label", "reason"),
    [("broken", "error rate"), ("slow", "latency p"), ("shifted", "mean prediction")],
)
def test_bad_candidates_roll_back_and_clients_never_see_a_failure(
    setup: Setup, label: str, reason: str
) -> None:
    champion = setup.versions["champion"]
    result, traffic = _rollout_under_traffic(setup, label)
    assert result.outcome == "rolled_back" and any(reason in r for r in result.reasons), result
    assert set(traffic.statuses) == {200}, f"{len(traffic.statuses)} requests: {set(traffic.statuses)}"
    assert live_app(APP).versions(NAME) == {champion: 100.0}
    assert setup.governance.aliases(NAME) == {"champion": champion}  # challenger cleared, champion kept
    [rollback] = [r for r in setup.governance.history(NAME) if r.action == "rollout-rollback"][-1:]
    assert rollback.to_version == setup.versions[label] and reason in rollback.why
    assert rollback.details["figures"]["candidate_requests"] >= 1


def test_healthy_candidate_is_promoted_step_by_step(setup: Setup) -> None:
    old, new = setup.versions["champion"], setup.versions["healthy"]
    result, traffic = _rollout_under_traffic(setup, "healthy")
    assert result.outcome == "promoted", result
    assert set(traffic.statuses) == {200} and new in traffic.versions
    assert [e["percent"] for e in result.timeline if e["action"] == "rollout-step"] == [10.0, 50.0, 100.0]
    assert live_app(APP).versions(NAME) == {new: 100.0}
    assert setup.governance.aliases(NAME) == {"champion": new}
    assert setup.registry.version(NAME, new).lifecycle == "production"
    assert setup.registry.version(NAME, old).lifecycle == "candidate"
    assert setup.governance.deployed_apps(setup.registry.version(NAME, new)) == [APP]
    steps = {"rollout-step", "rollout-promote", "promote", "clear"}
    actions = [r.action for r in setup.governance.history(NAME) if r.action in steps][-6:]
    assert actions == ["rollout-step", "rollout-step", "rollout-step", "rollout-promote", "promote", "clear"]


def test_judge_waits_for_evidence_then_decides() -> None:
    window = {"error_rate": 0.0, "latency_ms": {"p99": 2.0}, "mean_probability": 0.3, "requests": 50}
    calm = judge({"window": window}, {"window": window}, POLICY, requests_at_step=5, seconds_at_step=1)
    assert calm == Verdict("wait", (), calm.figures)
    ready = judge({"window": window}, {"window": window}, POLICY, requests_at_step=20, seconds_at_step=1)
    assert ready.action == "advance"
    failing = {**window, "error_rate": 0.5}
    assert judge(
        {"window": failing}, {"window": window}, POLICY, requests_at_step=1, seconds_at_step=0
    ).action == ("rollback")
    starved = judge({"window": window}, {"window": window}, POLICY, requests_at_step=3, seconds_at_step=61)
    assert starved.action == "rollback" and "only 3 requests" in starved.reasons[0]
    with pytest.raises(Exception, match="end at 100"):
        RolloutPolicy(steps=(10.0, 50.0))


def test_serve_cli_status_traffic_and_rollback(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    from raymlops.cli import main

    old, new = setup.versions["champion"], setup.versions["healthy"]  # new is champion after the rollout
    assert main(["serve", "status", "--json", *setup.overrides]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["models"][NAME]["versions"][new]["weight"] == 100.0
    assert status["models"][NAME]["versions"][new]["requests"] > 0
    assert main(["serve", "deploy", f"{NAME}@{old}", *setup.overrides]) == 0  # back in, at weight 0
    assert main(["serve", "traffic", NAME, f"{old}=30", f"{new}=70", *setup.overrides]) == 0
    assert live_app(APP).versions(NAME) == {new: 70.0, old: 30.0}
    assert main(["serve", "traffic", NAME, "9=1", *setup.overrides]) == 2
    assert "'traffic.9': is not a version" in capsys.readouterr().err
    assert main(["serve", "rollback", NAME, "--reason", "v5 complaints", *setup.overrides]) == 0
    assert f"champion v{new} -> v{old}" in capsys.readouterr().out
    assert live_app(APP).versions(NAME) == {new: 0.0, old: 100.0}
    assert setup.governance.aliases(NAME) == {"champion": old}


def test_archive_with_undeploy_takes_the_version_out_of_serving(setup: Setup) -> None:
    from raymlops.serving.operations import undeploy_version

    retired = setup.versions["healthy"]  # still loaded at 0% after the rollback above
    with pytest.raises(GovernanceError, match="pass --undeploy"):
        setup.governance.archive(NAME, retired, why="superseded")
    setup.governance.archive(
        NAME, retired, why="superseded", undeploy=lambda app: undeploy_version(app, NAME, retired)
    )
    assert retired not in live_app(APP).versions(NAME)
    assert setup.registry.version(NAME, retired).lifecycle == "archived"


def test_a_tampered_graph_is_refused_and_the_live_app_keeps_serving(
    setup: Setup, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A registered version whose model.onnx lost one bit after registration: `serve deploy` refuses it
    with IntegrityError (file, expected and actual digest) and an audit record; the app is untouched."""
    import onnx

    from raymlops.cli import main
    from raymlops.errors import IntegrityError
    from raymlops.models.export import compose_pipeline
    from raymlops.security.audit import read_audit
    from raymlops.security.integrity import Signer, digest_bytes, integrity_tags
    from raymlops.serving.operations import add_version

    path = tmp_path / "model.onnx"
    onnx.save(compose_pipeline(PRE, graph(CHAMPION, bias=0.1)), str(path))
    tags = {
        "raymlops.input_columns": ",".join(f"{k}:{v}" for k, v in PRE.input_columns.items()),
        **integrity_tags({"model.onnx": digest_bytes(path.read_bytes())}, Signer()),
    }
    run = setup.registry.client.create_run(setup.registry.experiment_id(), run_name="tampered")
    version = setup.registry.register_version(
        model_name=NAME, run_id=run.info.run_id, model_files=[path], tags=tags
    )
    stored = setup.registry.local_artifact(version, "model.onnx")
    weight = np.asarray(CHAMPION[0], dtype=np.float32).tobytes()
    data = bytearray(stored.read_bytes())
    data[bytes(data).index(weight)] ^= 0x01  # the lowest bit of one weight: still a valid graph
    stored.write_bytes(bytes(data))

    before = live_app(APP).versions(NAME)
    audit = tmp_path / "audit.jsonl"
    code = main(
        ["serve", "deploy", f"{NAME}@{version.version}", *setup.overrides, f"security.audit_log={audit}"]
    )
    assert code == 2
    err = capsys.readouterr().err
    expected, actual = json.loads(tags["raymlops.artifact_digests"])["model.onnx"], digest_bytes(bytes(data))
    assert str(stored) in err and expected in err and actual in err
    refused = [r for r in read_audit(audit) if r.action == "artifact-refused"]
    assert [(r.target, r.outcome, r.details["actual"]) for r in refused] == [
        (f"{NAME} v{version.version}", "refused", actual)
    ]
    with pytest.raises(IntegrityError):  # the library path refuses it too, before the app changes
        add_version(APP, spec_from_registry(setup.registry, NAME, version.version))
    assert live_app(APP).versions(NAME) == before  # nothing changed: the previous version answers
    response = httpx.post(
        f"{live_app(APP).url}/v1/models/{NAME}/predict", json={"records": ROWS[:2]}, timeout=30
    )
    assert response.status_code == 200
    assert response.headers["model-version"] in {v for v, w in before.items() if w > 0}
