"""Feedback becomes training data, and the monitor drives a retrain: real Serve, real HTTP, real log.

One module setup: a generated YES/NO table (``tests/task_tables.binary_yes_no``) in a Delta table, with
``cat`` tagged PII (hashed in the prediction log); ``run_retrain(force=True)`` trains v1 on it (no model
yet), which is deployed to a real Serve router with the prediction log on. Then:

1. shifted traffic over HTTP (``num_a`` moved by +2.5: drift) with every outcome the opposite of the truth
   (live accuracy falls), outcomes sent to ``/v1/feedback``; ``publish_feedback`` publishes the joined
   rows as version 0 of the feedback table (``cat`` as the log's HMAC, the label in the table's own
   values), a second publish with nothing new adds no version;
2. more traffic; ``run_retrain`` (no report given: it runs the monitor on the real prediction log) sees
   drift and the accuracy drop fire, publishes the new outcomes (version 1: the table grows), retrains on
   data.ref plus the feedback rows capped at ``retrain.max_feedback_share``, and registers v2 whose
   lineage names both data versions.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import free_port
from tests.task_tables import binary_yes_no, table_overrides

pytestmark = [pytest.mark.usefixtures("ray_local")]

MODEL = "yesno-feedback"
BASE_ROWS = 600
FLUSH_WAIT_S = 2.5  # the router writes its logs every 2 s


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], Any]]:
    from ray import serve

    from raymlops.config import compose
    from raymlops.data.delta import DeltaBackend
    from raymlops.loop.retrain import run_retrain
    from raymlops.registry.mlflow_registry import ModelRegistry
    from raymlops.serving.operations import deploy_from_config, spec_from_registry

    state = tmp_path_factory.mktemp("feedback-loop")
    DeltaBackend(str(state / "yesno")).write(binary_yes_no(BASE_ROWS, seed=0), "generated", {})
    overrides = [
        f"state_dir={state}",
        *table_overrides(state / "unused.parquet"),
        f"data.ref=delta:{state}/yesno",
        "data.name=yesno",
        "+data.columns={cat: {pii: true}}",
        "model=xgboost",
        "model.num_boost_round=10",
        "model.early_stopping_rounds=null",
        "trainer=single",
        f"registry.model_name={MODEL}",
        "stages=[ingest,features,train,evaluate,export,register]",  # no validate: drift is the predictions'
        "evaluate.gates=['test/auc>=0.5']",
        "evaluate.champion.max_regression={test/auc: 0.5}",
        "evaluate.slices=[]",
        f"serve.port={free_port()}",
        "serve.sample_requests=1",
        "serve.enabled=false",  # the retrain registers; the test deploys v1 itself
        "ray.progress_bars=false",
        "retrain.on_new_data=false",
        "retrain.cooldown_s=0",
        "monitor.min_rows=100",
        "monitor.min_feedback_rows=50",
    ]
    cfg = compose(overrides)
    first = run_retrain(cfg, force=True)
    assert first.status == "registered" and first.version == "1", first.reason
    registry = ModelRegistry.from_config(cfg.registry)
    deploy_from_config(
        compose([*overrides, "serve.enabled=true"]),
        [spec_from_registry(registry, MODEL, "@champion", weight=1.0)],
    )
    try:
        yield overrides, cfg
    finally:
        serve.shutdown()


def _send(url: str, table: pa.Table, flip: bool, rows_per_request: int = 5) -> int:
    """Predict every row over HTTP, then send each row's outcome ("YES" / "NO"; the opposite of the
    truth when ``flip``) as feedback. Returns the rows answered."""
    import httpx

    records = table.select(["num_a", "num_b", "cat"]).to_pylist()
    truth = table["target"].to_pylist()
    items, answered = [], 0
    with httpx.Client(timeout=30.0) as client:
        for start in range(0, len(records), rows_per_request):
            chunk = records[start : start + rows_per_request]
            response = client.post(f"{url}/v1/models/{MODEL}/predict", json={"records": chunk})
            assert response.status_code == 200, response.text
            pid = response.headers["prediction-id"]
            for i, outcome in enumerate(truth[start : start + len(chunk)]):
                sent = {"YES": "NO", "NO": "YES"}[outcome] if flip else outcome
                items.append({"prediction_id": pid, "row": i, "outcome": sent})
            answered += len(chunk)
        for start in range(0, len(items), 200):
            client.post(
                f"{url}/v1/feedback", json={"feedback": items[start : start + 200]}
            ).raise_for_status()
    return answered


def _shifted(n: int, seed: int) -> pa.Table:
    table = binary_yes_no(n, seed=seed)
    return table.set_column(0, "num_a", pa.array(table["num_a"].to_numpy() + 2.5))


def test_feedback_is_published_as_a_versioned_table_with_pii_hashed_and_the_label_mapped(served) -> None:
    from raymlops.data.delta import DeltaBackend
    from raymlops.loop.feedback_ingest import read_feedback_version
    from raymlops.monitoring.feedback_data import publish_feedback
    from raymlops.security.pii import PIIPolicy
    from raymlops.serving.operations import live_app

    _, cfg = served
    sent = _shifted(300, seed=7)
    assert _send(live_app(cfg.serve.app_name).url, sent, flip=True) == 300
    time.sleep(FLUSH_WAIT_S)
    first = publish_feedback(cfg)
    assert first.version is not None and first.version.version == "0" and first.rows == 300
    version, table = read_feedback_version(cfg)
    assert str(version) == str(first.version) == f"delta:{cfg.state_dir}/data/feedback_yesno@0"
    assert {"num_a", "num_b", "cat", "target", "model_version", "prediction_id", "row", "feedback_ts"} <= set(
        table.column_names
    )
    # PII: the log's HMAC of each category (the prediction log's own masker and key), never the value.
    masker = PIIPolicy.from_config(cfg).masker()
    raw = set(sent["cat"].to_pylist())
    assert set(table["cat"].to_pylist()) == {masker.hash_text(c) for c in raw} and not raw & set(
        table["cat"].to_pylist()
    )
    # The label in the table's own values, from the (flipped) outcomes; the inputs as served.
    flipped = ["NO" if t == "YES" else "YES" for t in sent["target"].to_pylist()]
    assert sorted(table["target"].to_pylist()) == sorted(flipped)
    assert np.allclose(np.sort(table["num_a"].to_numpy()), np.sort(sent["num_a"].to_numpy()))
    assert set(table["model_version"].to_pylist()) == {"1"}
    # Nothing new: no new version.
    again = publish_feedback(cfg)
    assert again.version is None and again.rows == 0
    assert DeltaBackend(f"{cfg.state_dir}/data/feedback_yesno").resolve().version == "0"


def test_monitor_on_the_real_log_fires_and_retrains_on_data_plus_capped_feedback(served) -> None:
    from omegaconf import OmegaConf

    from raymlops.loop.retrain import run_retrain
    from raymlops.registry.lineage import lineage_of
    from raymlops.registry.mlflow_registry import ModelRegistry
    from raymlops.serving.operations import live_app

    _, cfg = served
    since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)  # the first test's traffic too
    assert _send(live_app(cfg.serve.app_name).url, _shifted(200, seed=8), flip=True) == 200
    time.sleep(FLUSH_WAIT_S)
    rcfg = OmegaConf.merge(cfg, {"retrain": {"include_feedback": True, "max_feedback_share": 0.25}})
    lines: list[str] = []
    outcome = run_retrain(rcfg, since=since, progress=lines.append)  # no report: the monitor runs here
    fired = {d.trigger for d in outcome.decisions if d.fired}
    assert fired == {"drift", "accuracy_drop"}, [d.line() for d in outcome.decisions]
    assert outcome.status == "registered" and outcome.version == "2", outcome.reason
    # The new outcomes were published first (the table grew to version 1), and the retrain read it.
    assert any(line.startswith("feedback: 200 labelled rows published as") for line in lines), lines
    assert outcome.feedback_version == f"delta:{cfg.state_dir}/data/feedback_yesno@1"
    lineage = lineage_of(ModelRegistry.from_config(cfg.registry), MODEL, "2")
    assert lineage.data_version == f"delta:{cfg.state_dir}/yesno@0"
    assert lineage.feedback_version == outcome.feedback_version and lineage.parent == "1"
    # The cap: 500 feedback rows beside 600 data rows, at most 25% of the union -> 200 kept.
    import json

    summary = json.loads((Path(cfg.state_dir) / "runs" / outcome.run_id / "summary.json").read_text())
    ingest = summary["figures"]["ingest"]
    assert ingest["feedback_rows"] == 200 and ingest["feedback_sampled_out"] == 300
    assert ingest["rows"] == BASE_ROWS + 200
    assert ingest["feedback_rows"] / ingest["rows"] <= 0.25
