"""The evaluate stage's distributed path (``execution.mode=distributed``: the held-out split scored per
block in Ray tasks, merged from metric partials) against its local path on the same state, for every
task: the real features stage, a small XGBoost, the held-out split cut into several real blocks, and for
binary a champion whose registered ONNX graph is scored in the blocks too.

Exact metrics must agree to floating-point summation order; the binned AUC within the bound the stage
computes and reports (``metric_bounds``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.task_tables import (
    binary_yes_no,
    multiclass_strings,
    regression_numbers,
    small_xgboost,
    table_overrides,
)

_TABLES = {"binary": binary_yes_no, "multiclass": multiclass_strings, "regression": regression_numbers}
_BLOCKS = 4


def _pipeline(tmp_path: Path, kind: str) -> tuple[Any, Any]:
    """ingest -> features (real stages) -> a fitted XGBoost; the test split in ``_BLOCKS`` blocks."""

    from raymlops.config import compose
    from raymlops.pipeline.context import RunContext
    from raymlops.pipeline.state import PipelineState, TrainOutput
    from raymlops.stages.features import FeaturesStage
    from raymlops.stages.ingest import IngestStage

    path = tmp_path / "table.parquet"
    pq.write_table(_TABLES[kind](1_600), path)
    overrides = [
        f"state_dir={tmp_path}",
        *table_overrides(path),
        f"data.name={kind}",
        "evaluate.slices=[cat]",
    ]
    ctx = RunContext(compose([*overrides, "evaluate.min_slice_rows=5"]))
    state = FeaturesStage().run(ctx, IngestStage().run(ctx, PipelineState()))
    features = state.require("features")
    model = small_xgboost(features, rounds=20)
    heldout = dict(features.heldout_raw)
    heldout["test"] = heldout["test"].repartition(_BLOCKS).materialize()
    features = dataclasses.replace(features, heldout_raw=heldout)
    return ctx, state.with_(features=features, train=TrainOutput(model, [], ""))


def _register_champion(ctx: Any, state: Any, tmp_path: Path) -> str:
    """The candidate's own exported graph registered as the champion (scored by onnxruntime)."""
    from raymlops.models.export import export_pipeline
    from raymlops.registry.governance import Governance
    from raymlops.registry.mlflow_registry import ModelRegistry
    from raymlops.registry.tags import INPUT_COLUMNS_TAG, TASK_TAG
    from raymlops.tasks.codec import task_to_json

    features = state.require("features")
    graph = tmp_path / "export" / "model.onnx"
    model = state.require("train").model
    export_pipeline(features.preprocessor, model, features.raw_sample, graph, opset=17, tolerance=1e-4)
    registry = ModelRegistry.from_config(ctx.cfg.registry)
    run = registry.client.create_run(registry.experiment_id(), run_name="champion")
    columns = ",".join(f"{k}:{v}" for k, v in dict(features.preprocessor.input_columns).items())
    tags = {TASK_TAG: task_to_json(features.task), INPUT_COLUMNS_TAG: columns}
    name = ctx.cfg.registry.model_name
    version = registry.register_version(
        model_name=name, run_id=run.info.run_id, model_files=[graph], tags=tags
    )
    Governance(registry).set_alias(name, "champion", version.version, why="the distributed evaluate test")
    return str(version.version)


def _same(
    local: dict[str, float], dist: dict[str, float], bounds: dict[str, float], slack: float, rel: float = 1e-9
) -> None:
    assert set(local) == set(dist)
    for name, value in local.items():
        if value is None or value != value:  # NaN (one class only) or a slice's None
            assert dist[name] is None or dist[name] != dist[name], name
        elif name in bounds:  # binned AUC: within the bound computed from the merged histograms
            assert abs(dist[name] - value) <= bounds[name] + slack + 1e-12, (
                name,
                value,
                dist[name],
                bounds[name],
            )
        else:  # exact: equal up to summation order (and the report's rounding of slices)
            assert dist[name] == pytest.approx(value, rel=rel, abs=slack), name


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_distributed_evaluation_matches_the_local_one(ray_local, tmp_path: Path, kind: str) -> None:
    from raymlops.data.profile import Profile
    from raymlops.stages.evaluate import EvaluateStage

    ctx, state = _pipeline(tmp_path, kind)
    champion = _register_champion(ctx, state, tmp_path) if kind == "binary" else None
    ctx.cfg.execution.mode = "auto"  # a small split: auto picks the local path, and says why
    local = EvaluateStage().run(ctx, state).require("evaluate")
    local_report = json.loads(local.report_path.read_text())
    local_profile = Profile.load(local.prediction_profile_path)
    assert ctx.figures["evaluate"]["execution"] == "local" and "metric_bounds" not in local_report
    assert "execution.local_max_rows" in ctx.figures["evaluate"]["execution_reason"]

    ctx.cfg.execution.mode = "distributed"
    dist = EvaluateStage().run(ctx, state).require("evaluate")
    report = json.loads(dist.report_path.read_text())
    assert ctx.figures["evaluate"]["execution"] == "distributed"
    assert (
        report["execution"]["path"] == "distributed"
        and "execution.mode=distributed" in report["execution"]["reason"]
    )
    assert report["partials"]["blocks"] == _BLOCKS  # a real multi-block Dataset, one record per block
    # No rows came back: a few KB of partials (sparse AUC histograms) per block, whatever the split's size.
    assert 0 < report["partials"]["driver_bytes_received"] < 40_000 * _BLOCKS

    bounds = report.get("metric_bounds", {})
    if kind == "binary":  # the AUC is binned: its bound is reported, small, and holds
        # XGBoost's few distinct scores rarely share a bin with another score: a small bound, often 0.
        assert 0 <= bounds["metrics"]["test/auc"] < 0.01
        assert bounds["baseline"]["test/auc"] == 0.0  # a constant: its tied pairs are true ties
    else:
        assert bounds == {}  # every metric of multiclass and regression is exact
    _same(local.metrics, dist.metrics, bounds.get("metrics", {}), 0.0)
    _same(local.baseline, dist.baseline, bounds.get("baseline", {}), 0.0)
    assert dist.passed == local.passed and [g.gate for g in dist.gates] == [g.gate for g in local.gates]

    if champion is not None:  # the ONNX graph scored in the blocks: the local champion's figures
        assert dist.champion["version"] == local.champion["version"] == champion
        # onnxruntime's float32 outputs differ in the last bits with the batch's size (a block, not the
        # whole split): about 1e-9 relative in the log loss, so the champion's tolerance is 1e-6.
        _same(local.champion["metrics"], dist.champion["metrics"], bounds["champion"], 0.0, rel=1e-6)

    # Slices: the same values and counts (most frequent first), their metrics as the local ones.
    assert [(r["value"], r["rows"]) for r in dist.slices["cat"]] == [
        (r["value"], r["rows"]) for r in local.slices["cat"]
    ]
    for mine, theirs in zip(local.slices["cat"], dist.slices["cat"], strict=True):
        slice_bounds = {
            k: v for k, v in bounds.get("slices", {}).get("cat", {}).get(mine["value"], {}).items()
        }
        drop = ("value",)
        mine, theirs = ({k: v for k, v in r.items() if k not in drop} for r in (mine, theirs))
        _same(mine, theirs, slice_bounds, 2e-6)  # the report rounds slice metrics to 6 decimals

    picture, local_picture = report["picture"], local_report["picture"]
    if kind == "regression":  # a bounded sample by row content: every point a real (actual, predicted) pair
        assert picture["kind"] == "predicted_vs_actual" and picture["rows"] == local_picture["rows"]
        assert len(picture["actual"]) == min(500, picture["rows"])
        pairs = set(zip(local_picture["actual"], local_picture["predicted"], strict=True))
        assert (
            pairs >= set(zip(picture["actual"], picture["predicted"], strict=True)) or picture["rows"] > 500
        )
    else:
        assert picture == local_picture  # the confusion matrix from merged counts: exact

    profile = Profile.load(dist.prediction_profile_path)
    assert profile.rows == local_profile.rows == int(local.metrics["test/rows"])
    [(column, theirs)] = profile.columns.items()
    mine = local_profile.columns[column]
    assert theirs.count == mine.count and theirs.kind == mine.kind
    if mine.mean is not None:
        assert theirs.mean == pytest.approx(mine.mean, rel=1e-9)
    else:
        assert theirs.frequencies == mine.frequencies


def test_slice_values_of_an_id_like_column_stay_bounded_in_the_driver(
    ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa
    import ray

    from raymlops.data import value_counts
    from raymlops.evaluation.partials import slice_values

    ids = [f"id{i}" for i in range(8_000)] + ["hub"] * 3_000 + ["second"] * 1_000
    table = pa.table({"who": ids, "small": [f"s{i % 4}" for i in range(len(ids))]})
    ds = ray.data.from_arrow(table).repartition(4).materialize()
    exact = slice_values(ds, ["who", "small"], max_values=3)
    assert exact["who"][:2] == [("hub", 3_000), ("second", 1_000)]
    monkeypatch.setattr(value_counts, "MAX_EXACT_DISTINCT", 1_000)  # the id column goes to sketches
    bounded = slice_values(ds, ["who", "small"], max_values=3)
    assert [value for value, _ in bounded["who"][:2]] == ["hub", "second"]
    assert abs(bounded["who"][0][1] - 3_000) <= 0.0018 * len(ids)  # the frequent-items error bound
    assert bounded["small"] == exact["small"]  # 4 values: still exact
