"""The step cache and resume (raymlops.pipeline.cache) through run_pipeline on the session's Ray: a small
generated YES/NO table in a Delta table, XGBoost on one Ray Train worker, every stage before deploy.

One test, one state folder, seven runs in sequence (three of them train): an identical run reuses every
stage and the registered version; a changed model key, a stage's code and the data each invalidate exactly
what lies downstream; a run failed at its gate resumes, on the data version it read, into the lineage it
would have registered; cache.enabled=false reuses nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.task_tables import binary_yes_no, table_overrides

pytestmark = pytest.mark.usefixtures("ray_local")

BEFORE_DEPLOY = ["ingest", "validate", "features", "train", "evaluate", "export", "explain", "register"]


def _cfg(tmp_path: Path, *extra: str) -> Any:
    from raymlops.config import compose
    from raymlops.config.schema import ColumnRule

    source = tmp_path / "table.parquet"
    cfg = compose(
        [
            f"state_dir={tmp_path / 'state'}",
            *(o for o in table_overrides(source) if not o.startswith("data.")),
            f"data.ref=delta:{tmp_path / 'state' / 'data' / 'table'}",
            f"data.source={source}",
            "data.name=cached",
            "registry.model_name=cached-model",
            "model=xgboost",
            "model.num_boost_round=8",
            "model.early_stopping_rounds=null",
            "trainer.scaling.num_workers=1",
            "explain.background_rows=20",
            "explain.rows=20",
            "serve.enabled=false",
            "evaluate.champion.max_regression={}",  # each version judged on its own gates
            "ray.progress_bars=false",
            *extra,
        ]
    )
    cfg.validate.min_rows = 100
    cfg.validate.unique.key = []
    cfg.validate.columns = {"num_a": ColumnRule(min=-10.0, max=10.0)}  # the flights rules replaced
    return cfg


def _run(cfg: Any) -> tuple[Any, Any, dict[str, Any]]:
    from raymlops.pipeline.runner import run_pipeline

    ctx, state = run_pipeline(cfg)
    return ctx, state, json.loads((ctx.run_dir / "summary.json").read_text())


def test_reuse_invalidation_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from raymlops.data.delta import DeltaBackend
    from raymlops.errors import GateFailedError
    from raymlops.pipeline.context import RunContext
    from raymlops.pipeline.runner import run_pipeline
    from raymlops.registry.mlflow_registry import ModelRegistry
    from raymlops.registry.tags import DATA_VERSION_TAG, RUN_ID_TAG
    from raymlops.stages.export import ExportStage

    table = binary_yes_no(600)
    pq.write_table(table, tmp_path / "table.parquet")
    cfg = _cfg(tmp_path)
    registry = ModelRegistry.from_config(cfg.registry)

    first, state1, summary1 = _run(cfg)
    assert summary1["cached"] == {} and state1.register.version == "1"

    # An identical run reuses every stage before deploy, and the registered version itself.
    second, state2, summary2 = _run(cfg)
    assert summary2["cached"] == dict.fromkeys(BEFORE_DEPLOY, first.run_id)
    assert all(second.figures[s]["cached"] == first.run_id for s in BEFORE_DEPLOY)
    assert [v.version for v in registry.versions("cached-model")] == ["1"]
    assert state2.register.version == "1" and state2.register.aliases == ("champion",)
    assert second.lineage[DATA_VERSION_TAG] == first.lineage[DATA_VERSION_TAG]
    assert second.lineage[RUN_ID_TAG] == first.run_id  # the lineage of the version it reuses
    assert state2.features.train.count() == state1.features.train.count()
    assert state2.features.train.num_blocks() == state1.features.train.num_blocks()
    assert state2.evaluate.metrics == state1.evaluate.metrics
    # Files the stages wrote are restored into this run's folder, as the stage left them.
    assert state2.export.onnx_path == second.run_dir / "model.onnx"
    assert state2.export.onnx_path.read_bytes() == state1.export.onnx_path.read_bytes()
    assert state2.explain.explainer_dir.is_dir() and any(state2.explain.explainer_dir.iterdir())
    assert (second.run_dir / "validation_report.json").exists()

    # A model key: train and everything after it run; the data stages are reused.
    _, state3, summary3 = _run(_cfg(tmp_path, "model.num_boost_round=9"))
    assert summary3["cached"] == dict.fromkeys(["ingest", "validate", "features"], first.run_id)
    assert state3.register.version == "2"

    # A stage's code (its cache_version, beside its module's source): export and what reads it run.
    monkeypatch.setattr(ExportStage, "cache_version", "2")
    _, state4, summary4 = _run(cfg)
    assert summary4["cached"] == dict.fromkeys(
        ["ingest", "validate", "features", "train", "evaluate"], first.run_id
    )
    assert state4.register.version == "3"
    monkeypatch.undo()

    # New data: nothing downstream of ingest is reused. The run stops at a gate it cannot pass.
    backend = DeltaBackend(cfg.data.ref.removeprefix("delta:"))
    backend.write(binary_yes_no(300, seed=1), "more rows", {}, "append")
    failing = _cfg(tmp_path, "evaluate.gates=['test/auc>=0.999']", "evaluate.on_fail=skip")
    failed = RunContext(failing)
    with pytest.raises(GateFailedError):
        run_pipeline(failing, failed)
    summary5 = json.loads((failed.run_dir / "summary.json").read_text())
    assert summary5["status"] == "failed" and summary5["cached"] == {}
    assert failed.lineage["data_version"].endswith("@1")

    # More data arrives; the failed run resumes on the version it read, its stages up to the gate reused.
    backend.write(binary_yes_no(300, seed=2), "even more rows", {}, "append")
    resumed, state6, summary6 = _run(_cfg(tmp_path, "resume=last"))
    assert summary6["lineage"]["resumed_from"] == failed.run_id
    assert summary6["cached"] == dict.fromkeys(["ingest", "validate", "features", "train"], failed.run_id)
    registered = registry.version("cached-model", state6.register.version)
    assert registered.tags[DATA_VERSION_TAG] == failed.lineage["data_version"]
    assert state6.register.version == "4" and resumed.lineage[RUN_ID_TAG] == resumed.run_id

    # cache.enabled=false: every stage runs.
    _, _, summary7 = _run(_cfg(tmp_path, "cache.enabled=false", "stages=[ingest,validate,features]"))
    assert summary7["cached"] == {}


def test_an_encrypting_job_stores_no_plaintext_and_restores_what_the_stage_left(tmp_path: Path) -> None:
    import os

    import pyarrow as pa
    import ray.data

    from raymlops.config import compose
    from raymlops.data.versioning import DataVersion
    from raymlops.pipeline.cache import StageCache
    from raymlops.pipeline.context import RunContext
    from raymlops.pipeline.state import IngestOutput, PipelineState, ValidateOutput
    from raymlops.security import crypto
    from raymlops.stages.validate import ValidateStage

    cfg = compose([f"state_dir={tmp_path}"])
    writer, reader = RunContext(cfg), RunContext(cfg)
    report = writer.run_dir / "validation_report.json"
    report.write_text('{"max": 4711.0625}')
    blocks = [pa.table({"x": [1.0, 2.0]}), pa.table({"x": [4711.0625]})]
    ingest = IngestOutput(ray.data.from_arrow(blocks), DataVersion("delta", "/t", "0"), blocks[0].schema, 3)
    made = PipelineState(ingest=ingest, validate=ValidateOutput(report, True, (), (), report, report))
    previous = crypto.active_keyring()
    crypto.configure(crypto.Keyring([crypto.LocalKek("k1", os.urandom(32))]))
    try:
        cache = StageCache(tmp_path / "cache")
        cache.store(ValidateStage(), "k" * 32, writer, PipelineState(), made, {})
        entry = cache.entry("validate", "k" * 32)
        stored = [p for p in entry.rglob("*") if p.is_file() and p.name != "meta.json"]
        # output.pkl, two Parquet blocks, the report's copy: all encrypted.
        assert len(stored) == 4 and all(crypto.is_encrypted(p.read_bytes()) for p in stored)
        hit = cache.load(ValidateStage(), "k" * 32, reader, PipelineState())
    finally:
        crypto.configure(previous)
    assert hit is not None and hit.run_id == writer.run_id and set(hit.slots) == {"ingest", "validate"}
    restored = hit.state.validate
    assert restored.report_path == reader.run_dir / "validation_report.json"
    assert restored.report_path.read_text() == '{"max": 4711.0625}'  # plaintext again, as the stage left it
    dataset = hit.state.ingest.dataset
    assert dataset.num_blocks() == 2 and sorted(dataset.to_pandas()["x"]) == [1.0, 2.0, 4711.0625]
    assert reader.figures["validate"]["cached"] == writer.run_id
