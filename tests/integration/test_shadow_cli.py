"""Shadow deployment from the CLI and the job, on a real router over HTTP with a real registry.

``serve shadow NAME VERSION --fraction F`` mirrors requests to a version that never answers: clients get
the champion's answers only, the prediction log holds the shadow's rows (``route=shadow``), ``serve
status`` and the monitor's report show its agreement and latency beside the champion's, the ``shadow``
alias follows it, ``--stop`` ends it and ``--promote`` rolls it out (the existing progressive rollout).
The job's deploy stage with ``serve.strategy=shadow`` puts a new version in shadow the same way.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

from raymlops.registry.governance import Governance
from raymlops.registry.mlflow_registry import ModelRegistry
from raymlops.serving.operations import live_app
from tests.integration.test_rollout import CHAMPION, graph
from tests.integration.test_serving import PRE, ROWS, free_port

APP = "shadow-test"
NAME = "flights"
VERSIONS = {  # registered in this order: 1, 2, 3
    "champion": graph(CHAMPION),
    "candidate": graph([0.78, -0.48, 0.3, -0.2, 0.1]),
    "next": graph([0.8, -0.5, 0.3, -0.2, 0.12]),
}
# A quick rollout for --promote: two steps, a few requests each, latency bounds loose for a busy CI.
FAST_ROLLOUT = [
    "serve.rollout.steps=[50,100]",
    "serve.rollout.min_requests=5",
    "serve.rollout.min_step_s=0.3",
    "serve.rollout.poll_s=0.2",
    "serve.rollout.step_timeout_s=60",
    "serve.rollout.max_p99_ratio=3",
    "serve.rollout.p99_slack_ms=40",
]


@dataclass(frozen=True)
class Setup:
    folder: Path
    registry: ModelRegistry
    governance: Governance
    versions: dict[str, str]
    overrides: list[str]


@pytest.fixture(scope="module")
def setup(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    import onnx
    from ray import serve

    from raymlops.models.export import compose_pipeline

    folder = tmp_path_factory.mktemp("shadow")
    registry = ModelRegistry(f"sqlite:///{folder}/mlflow.db", str(folder / "artifacts"), "shadow")
    tags = {"raymlops.input_columns": ",".join(f"{k}:{v}" for k, v in PRE.input_columns.items())}
    numbers = {}
    for label, model in VERSIONS.items():
        run = registry.client.create_run(registry.experiment_id(), run_name=label)
        path = folder / label / "model.onnx"
        path.parent.mkdir()
        onnx.save(compose_pipeline(PRE, model), str(path))
        version = registry.register_version(
            model_name=NAME, run_id=run.info.run_id, model_files=[path], tags={**tags}
        )
        numbers[label] = version.version
    governance = Governance(registry)
    governance.set_alias(NAME, "champion", numbers["champion"], why="first model")
    overrides = [
        f"state_dir={folder}",
        f"registry.model_name={NAME}",
        f"serve.app_name={APP}",
        f"serve.port={free_port()}",
        f"security.audit_log={folder / 'audit.jsonl'}",
    ]
    try:
        yield Setup(folder, registry, governance, numbers, overrides)
    finally:
        serve.shutdown()


def _predict(url: str, n: int) -> list[str]:
    with httpx.Client(timeout=30) as client:
        answers = [client.post(f"{url}/v1/models/{NAME}/predict", json={"records": ROWS}) for _ in range(n)]
    assert {a.status_code for a in answers} == {200}
    return [a.headers["model-version"] for a in answers]


def _wait(what: str, check: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_cli_shadow_mirrors_traffic_reports_agreement_and_stops(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    from raymlops.cli import main
    from raymlops.cli.serve import _shadow_line
    from raymlops.config import compose
    from raymlops.monitoring.monitor import run_monitor
    from raymlops.monitoring.prediction_log import read_predictions
    from raymlops.security.audit import read_audit

    champion, candidate = setup.versions["champion"], setup.versions["candidate"]
    assert main(["serve", "deploy", f"{NAME}@{champion}", *setup.overrides]) == 0
    assert main(["serve", "shadow", NAME, candidate, "--fraction", "1", *setup.overrides]) == 0
    assert f"{NAME} v{candidate} shadows 1 of the requests" in capsys.readouterr().out
    app = live_app(APP)
    assert app.versions(NAME) == {champion: 1.0, candidate: 0.0}
    assert app.user_config["policies"][NAME] == {"shadow": {"version": candidate, "fraction": 1.0}}
    assert setup.governance.aliases(NAME) == {"champion": champion, "shadow": candidate}

    # Clients get the champion's answers only; the shadow scores every request after the answer.
    assert set(_predict(app.url, 20)) == {champion}

    def finished() -> bool:
        stats = httpx.get(f"{app.url}/v1/models/{NAME}/stats", timeout=10).json()
        route = stats["versions"][candidate]["shadow"] or {}
        return route.get("requests_total", 0) + stats["shadow"]["dropped_total"] >= 20

    _wait("20 shadow calls", finished)
    assert main(["serve", "status", "--json", *setup.overrides]) == 0
    status = json.loads(capsys.readouterr().out)["models"][NAME]["shadow"]
    assert status["version"] == candidate and status["champion"] == champion and status["fraction"] == 1.0
    assert status["errors"] == 0 and status["compared"] == status["requests"] > 0
    assert 0.7 <= status["agreement"] <= 1.0 and status["mean_abs_diff"] < 0.1
    assert status["p50_ms"] > 0 and status["champion_p50_ms"] > 0
    assert _shadow_line(status).startswith(
        f"shadow v{candidate} (1 of requests) vs v{champion}: agreement={status['agreement']:.3f} over"
    )

    # The prediction log: the shadow's rows beside the answers, under the same prediction ids.
    root = setup.folder / "prediction_log"

    def logged() -> pa.Table | None:
        rows = read_predictions(root, NAME)
        shadow = rows.filter(pa.compute.equal(rows["route"], "shadow")) if rows.num_rows else rows
        return rows if shadow.num_rows >= status["requests"] * len(ROWS) else None

    rows = _wait("the shadow rows in the prediction log", logged)
    by_route = {r: set() for r in ("served", "shadow")}
    for route, version in zip(rows["route"].to_pylist(), rows["version"].to_pylist(), strict=True):
        by_route[route].add(version)
    assert by_route == {"served": {champion}, "shadow": {candidate}}

    # The monitor's report: agreement and latency vs the champion, from the log's rows.
    report = run_monitor(compose(setup.overrides), model=NAME)
    section = report.versions[candidate]["shadow"]["against"][champion]
    assert section["compared"] and section["rows"] == status["requests"] * len(ROWS)
    assert abs(section["agreement"] - status["agreement"]) < 0.05
    assert section["latency_ms"]["shadow"]["p50"] > 0 and section["latency_ms"]["served"]["p50"] > 0
    assert f"shadow of v{champion}: agreement {section['agreement']:.3f}" in report.summary()
    assert "shadow" not in report.versions[champion]

    assert main(["serve", "shadow", NAME, "--stop", *setup.overrides]) == 0
    assert live_app(APP).versions(NAME) == {champion: 1.0}
    assert NAME not in live_app(APP).user_config.get("policies", {})
    assert setup.governance.aliases(NAME) == {"champion": champion}
    actions = [r.action for r in setup.governance.history(NAME)]
    assert actions.index("shadow") < actions.index("clear") < actions.index("shadow-stop")
    audited = [r for r in read_audit(setup.folder / "audit.jsonl") if r.action == "serve.shadow"]
    assert [r.outcome for r in audited] == ["ok", "ok"]


def test_promote_rolls_the_shadow_version_out(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    from raymlops.cli import main

    champion, candidate = setup.versions["champion"], setup.versions["candidate"]
    assert main(["serve", "shadow", NAME, candidate, "--fraction", "0.5", *setup.overrides]) == 0
    url, stop = live_app(APP).url, threading.Event()
    answered: list[str] = []

    def traffic() -> None:
        while not stop.is_set():
            answered.extend(_predict(url, 1))

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        code = main(["serve", "shadow", NAME, "--promote", *setup.overrides, *FAST_ROLLOUT])
    finally:
        stop.set()
        worker.join(30)
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{NAME} v{candidate}: promoted" in out
    assert live_app(APP).versions(NAME) == {candidate: 100.0}
    assert setup.governance.aliases(NAME) == {"champion": candidate}  # shadow and challenger cleared
    assert candidate in answered and champion in answered
    history = [r.action for r in setup.governance.history(NAME)]
    assert history.index("shadow-promote") < history.index("rollout-promote")


def test_job_deploy_stage_with_strategy_shadow(setup: Setup) -> None:
    """The deploy stage itself, on the state the earlier stages hand it: the new version shadows the
    live champion (promoted above), which keeps answering the sample requests."""
    from raymlops.config import compose
    from raymlops.data.refs import parse_version
    from raymlops.pipeline.context import RunContext
    from raymlops.pipeline.state import (
        ExportOutput,
        FeaturesOutput,
        IngestOutput,
        PipelineState,
        RegisterOutput,
    )
    from raymlops.stages.deploy import DeployStage

    champion, new = setup.versions["candidate"], setup.versions["next"]
    cfg = compose([*setup.overrides, "serve.strategy=shadow", "serve.shadow_fraction=0.5"])
    registered = setup.registry.version(NAME, new)
    onnx_path = setup.registry.local_artifact(registered, "model.onnx")
    state = PipelineState(
        ingest=IngestOutput(None, parse_version("delta:/t@3", "data"), pa.schema([]), 0),  # type: ignore[arg-type]
        features=FeaturesOutput(
            None,
            None,
            None,
            None,
            pa.Table.from_pylist([{k: r[k] for k in PRE.input_columns} for r in ROWS[:3]]),
            {},
            0.5,
        ),  # type: ignore[arg-type]
        export=ExportOutput(onnx_path, dict(PRE.input_columns), 0.0),
        register=RegisterOutput(NAME, new, registered.run_id, f"models:/{NAME}/{new}", onnx_path),
    )
    ctx = RunContext(cfg)
    out = DeployStage().run(ctx, state)
    assert ctx.figures["deploy"]["outcome"] == "shadowed" and ctx.figures["deploy"]["shadow_fraction"] == 0.5
    assert live_app(APP).versions(NAME) == {champion: 100.0, new: 0.0}
    assert live_app(APP).user_config["policies"][NAME]["shadow"] == {"version": new, "fraction": 0.5}
    assert setup.governance.aliases(NAME) == {"champion": champion, "shadow": new}
    assert len(out.deploy.sample_answers) == 3
    assert {a["headers"]["model-version"] for a in out.deploy.sample_answers} == {champion}
