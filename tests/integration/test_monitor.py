"""The monitor on a real MLflow registry (SQLite) and a prediction log written by ``ParquetLog``.

One registered version (v1, the champion) carries a training profile built by ``raymlops.data.profile``
from a reference table, the test split's probability profile and a logged ``test/accuracy``; a second
(v2) shadows every request and has no recorded test-split distribution, so its prediction reference
is the first window the monitor sees. Two days of logged traffic with feedback:

- day A, drawn like the reference: no drift, live accuracy close to test;
- day B: ``distance`` and ``origin`` shifted (the model ignores both, so v1's predictions do not
  move), every outcome the opposite of the truth (accuracy falls), and v2's probabilities pushed up
  (its predictions drift against day A).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from raymlops.config import compose
from raymlops.data.profile import Profile
from raymlops.data.stats import table_stats
from raymlops.monitoring.exporter import GAUGES
from raymlops.monitoring.monitor import run_monitor
from raymlops.monitoring.parquet_log import ParquetLog
from raymlops.monitoring.prediction_log import (
    FEEDBACK_DIR,
    LEGACY_FEEDBACK_SCHEMA,
    PREDICTIONS_DIR,
    TIMESTAMP,
    prediction_schema,
)
from raymlops.monitoring.version_info import PREDICTION_PROFILE, PROFILE, prediction_profile
from raymlops.registry.mlflow_registry import ModelRegistry

MODEL = "flights-delay"
INPUTS = {"distance": "float", "dep_delay": "float", "hour": "float", "origin": "string"}
ROOT = Path(__file__).resolve().parents[2]
DAY_A = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)
DAY_B = dt.datetime(2026, 1, 11, tzinfo=dt.UTC)
REQUESTS, ROWS_PER_REQUEST = 800, 2


def flights(n: int, seed: int, *, shifted: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    distance = rng.lognormal(6.6, 0.5, n) + (900.0 if shifted else 0.0)
    origins = ["EWR", "JFK", "LGA"]
    origin = rng.choice(origins, n, p=[0.1, 0.1, 0.8] if shifted else [0.36, 0.33, 0.31])
    return pa.table(
        {
            "distance": distance,
            "dep_delay": rng.normal(10.0, 25.0, n),
            "hour": rng.integers(5, 24, n).astype(np.float64),
            "origin": origin,
            "arr_delay": rng.normal(5.0, 30.0, n),  # profiled, but no model input: never compared
        }
    )


def probability(table: pa.Table) -> np.ndarray:
    """The "model": depends on dep_delay and hour only."""
    z = 0.08 * (table["dep_delay"].to_numpy() - 10.0) + 0.15 * (table["hour"].to_numpy() - 14.0)
    return 1.0 / (1.0 + np.exp(-z))


def accuracy(table: pa.Table, seed: int) -> tuple[np.ndarray, float]:
    """True outcomes drawn from the model's probabilities, and the model's accuracy on them."""
    p = probability(table)
    y = (np.random.default_rng(seed).random(len(p)) < p).astype(np.float64)
    return y, float(np.mean((p >= 0.5) == y))


def register(state: Path, cfg: Any) -> ModelRegistry:
    registry = ModelRegistry.from_config(cfg.registry)
    reference = flights(20_000, seed=1)
    profile = Profile.from_stats(table_stats(reference), reference.num_rows, "delta:/flights@3")
    test = flights(4_000, seed=2)
    _, test_accuracy = accuracy(test, seed=3)
    files = state / "files"
    files.mkdir()
    (files / "model.onnx").write_bytes(b"stand-in")
    profile.save(files / PROFILE)
    prediction_profile(probability(test), "delta:/flights@3 test split").save(files / PREDICTION_PROFILE)
    tag = ",".join(f"{c}:{k}" for c, k in INPUTS.items())
    for version, model_files in (
        ("1", ["model.onnx", PROFILE, PREDICTION_PROFILE]),
        ("2", ["model.onnx", PROFILE]),
    ):
        run = registry.client.create_run(registry.experiment_id(), run_name=f"v{version}")
        registry.client.log_metric(run.info.run_id, "test/accuracy", test_accuracy)
        registry.client.log_metric(run.info.run_id, "test/auc", 0.8)
        registered = registry.register_version(
            model_name=MODEL,
            run_id=run.info.run_id,
            model_files=[files / f for f in model_files],
            tags={"raymlops.input_columns": tag},
        )
        assert registered.version == version
        registry.client.set_terminated(run.info.run_id)
    registry.client.set_registered_model_alias(MODEL, "champion", "1")
    return registry


def write_day(root: Path, day: dt.datetime, seed: int, *, shifted: bool) -> None:
    n = REQUESTS * ROWS_PER_REQUEST
    features = flights(n, seed, shifted=shifted)
    p = probability(features)
    truth, _ = accuracy(features, seed + 1)
    outcome = 1.0 - truth if shifted else truth
    rng = np.random.default_rng(seed + 2)
    request = np.repeat(np.arange(REQUESTS), ROWS_PER_REQUEST)
    ids = np.array([f"{day:%m%d}-{i:05d}" for i in request], dtype=object)
    ts_us = int(day.timestamp() * 1e6) + request.astype(np.int64) * 60_000_000  # a request a minute
    latency = np.repeat(rng.lognormal(1.5, 0.3, REQUESTS), ROWS_PER_REQUEST)
    schema = prediction_schema(INPUTS)
    log = ParquetLog(
        root / PREDICTIONS_DIR, schema=schema, partition_cols=("model", "date"), flush_rows=100_000
    )
    for version, route, probabilities in (
        ("1", "served", p),
        ("2", "shadow", np.clip(p + (0.35 if shifted else 0.0), 0, 1)),
    ):
        columns = {
            "prediction_id": pa.array(ids, pa.string()),
            "row": pa.array(np.tile(np.arange(ROWS_PER_REQUEST), REQUESTS).astype(np.int32)),
            "ts": pa.array(ts_us, pa.int64()).cast(TIMESTAMP),
            "model": pa.array([MODEL] * n),
            "version": pa.array([version] * n),
            "route": pa.array([route] * n),
            "probability": pa.array(probabilities),
            "label": pa.array((probabilities >= 0.5).astype(np.int8)),
            "latency_ms": pa.array(latency * (3 if route == "shadow" else 1)),
            **{f"f_{c}": features[c] for c in INPUTS},
        }
        log.append(pa.table(columns, schema=schema))
    log.close()
    # Feedback files as written before outcomes of every task (a number only): they still read.
    feedback = ParquetLog(
        root / FEEDBACK_DIR, schema=LEGACY_FEEDBACK_SCHEMA, partition_cols=("model", "date")
    )
    labelled = np.arange(0, n, 2)  # feedback for half the rows, a minute after the answer
    feedback.append(
        pa.table(
            {
                "prediction_id": pa.array(ids[labelled], pa.string()),
                "row": pa.array(np.tile(np.arange(ROWS_PER_REQUEST), REQUESTS)[labelled].astype(np.int32)),
                "outcome": pa.array(outcome[labelled]),
                "ts": pa.array(ts_us[labelled] + 60_000_000, pa.int64()).cast(TIMESTAMP),
                "model": pa.array([MODEL] * len(labelled)),
            },
            schema=LEGACY_FEEDBACK_SCHEMA,
        )
    )
    feedback.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, float]:
    state = tmp_path_factory.mktemp("monitor")
    cfg = compose([f"state_dir={state}"])
    register(state, cfg)
    write_day(Path(cfg.monitor.log_root), DAY_A, seed=10, shifted=False)
    write_day(Path(cfg.monitor.log_root), DAY_B, seed=20, shifted=True)
    test_accuracy = (
        ModelRegistry.from_config(cfg.registry)
        .client.get_run(ModelRegistry.from_config(cfg.registry).version(MODEL, "1").run_id)
        .data.metrics["test/accuracy"]
    )
    return cfg, state, test_accuracy


def day(start: dt.datetime) -> dict[str, Any]:
    return {"since": start, "until": start + dt.timedelta(days=1)}


def test_a_window_like_the_training_data_raises_nothing(setup: tuple[Any, Path, float]) -> None:
    cfg, _, test_accuracy = setup
    report = run_monitor(cfg, model=MODEL, **day(DAY_A))
    assert report.ok, report.summary()
    assert report.read_with == "pyarrow" and report.rows == 2 * REQUESTS * ROWS_PER_REQUEST
    v1, v2 = report.versions["1"], report.versions["2"]
    assert v1["aliases"] == ["champion"] and v1["rows"] == {"served": 1600} and v2["rows"] == {"shadow": 1600}
    assert v1["requests"] == {"served": REQUESTS}
    drift = v1["feature_drift"]
    assert sorted(drift["features"]) == sorted(INPUTS) and drift["drifted_features"] == []
    assert all(f["psi"] < 0.05 for f in drift["features"].values()), drift["features"]
    assert v1["training_data_version"] == "delta:/flights@3"
    # v1's reference is its recorded test split; v2 has none, so this first window becomes its reference.
    assert v1["prediction_drift"]["reference"] == "test_split" and v1["prediction_drift"]["psi"] < 0.05
    assert v2["prediction_drift"]["reference"] == "first_window"
    assert v2["prediction_drift"]["established_now"] and v2["prediction_drift"]["psi"] < 1e-6
    live = v1["accuracy"]
    assert live["rows"] == REQUESTS and live["judged"] and not live["dropped"]
    assert abs(live["live"]["accuracy"] - test_accuracy) < 0.04, (live, test_accuracy)
    assert live["test"]["accuracy"] == pytest.approx(test_accuracy)
    assert v1["latency"]["ok"] and 2 < v1["latency"]["p50_ms"] < 8
    assert v2["latency"]["routes"]["shadow"]["p50_ms"] > 2 * v1["latency"]["p50_ms"]


def test_a_shifted_window_flags_the_shifted_columns_and_the_accuracy_drop(
    setup: tuple[Any, Path, float],
) -> None:
    cfg, _, test_accuracy = setup
    run_monitor(cfg, model=MODEL, **day(DAY_A))  # v2's first-window reference (idempotent)
    report = run_monitor(cfg, model=MODEL, **day(DAY_B))
    assert not report.ok
    v1, v2 = report.versions["1"], report.versions["2"]
    assert sorted(v1["feature_drift"]["drifted_features"]) == ["distance", "origin"]
    assert v1["feature_drift"]["features"]["distance"]["psi"] > 1.0
    assert not v1["prediction_drift"]["drifted"]  # the model ignores both shifted columns
    assert (
        v2["prediction_drift"]["reference"] == "first_window"
        and not v2["prediction_drift"]["established_now"]
    )
    assert v2["prediction_drift"]["drifted"] and v2["prediction_drift"]["psi"] > 0.5
    live = v1["accuracy"]
    assert live["dropped"] and live["drop"]["accuracy"] > 0.3
    assert live["live"]["accuracy"] == pytest.approx(1 - test_accuracy, abs=0.05)
    kinds = {(a["version"], a["kind"]) for a in report.alerts}
    assert {("1", "feature_drift"), ("1", "accuracy_drop"), ("2", "prediction_drift")} <= kinds
    assert ("1", "prediction_drift") not in kinds
    assert "ALERT v1 accuracy_drop" in report.summary()

    # An alias selects one version; an unknown alias names the ones that exist.
    only = run_monitor(cfg, model=f"{MODEL}@champion", **day(DAY_B))
    assert list(only.versions) == ["1"] and only.selector == "champion"
    from raymlops.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="champion"):
        run_monitor(cfg, model=MODEL, alias_or_version="champoin", **day(DAY_B))


def test_outputs_prom_text_and_the_job_exit_code(setup: tuple[Any, Path, float]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from raymlops.monitoring.monitor import write_outputs

    cfg, state, _ = setup
    report = run_monitor(cfg, model=MODEL, **day(DAY_B))
    paths = write_outputs(report, cfg.monitor.out_dir)
    assert json.loads(paths["report"].read_text())["ok"] is False
    page = paths["html"].read_text()  # the same figures as a page, with the data report's drift table
    assert 'data-feature="distance" data-status="drift"' in page
    assert 'data-feature="dep_delay" data-status="ok"' in page
    assert 'data-metric="accuracy"' in page and 'data-route="served"' in page and "ALERT(S)" in page
    text = paths["prom"].read_text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    names = {name for name, _ in samples}
    assert names == {g.name for g in GAUGES}
    ids = (("model", MODEL), ("version", "1"))
    assert samples[("raymlops_feature_drifted", (("feature", "distance"), *ids))] == 1
    assert samples[("raymlops_feature_drifted", (("feature", "dep_delay"), *ids))] == 0
    assert samples[("raymlops_feature_drift_psi", (("feature", "distance"), *ids))] > 1
    assert samples[("raymlops_accuracy_drop", ids)] > 0.3
    assert samples[("raymlops_feedback_rows", ids)] == REQUESTS
    assert samples[("raymlops_monitor_window_rows", (ids[0], ("route", "served"), ids[1]))] == 1600
    assert samples[("raymlops_monitor_last_run_timestamp_seconds", (("model", MODEL),))] == pytest.approx(
        report.generated_at
    )
    # The same gauges on a scrape endpoint; a rerun without v2 drops v2's series.
    import httpx

    from raymlops.monitoring.exporter import MonitorExporter

    exporter = MonitorExporter()
    exporter.update(report)
    port = exporter.serve(0)
    try:
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        exporter.stop()
    assert 'raymlops_feature_drifted{feature="distance",model="flights-delay",version="1"} 1.0' in scraped
    assert 'version="2"' in exporter.text()
    exporter.update({**report.to_dict(), "versions": {"1": report.versions["1"]}})
    assert 'version="2"' not in exporter.text() and 'version="1"' in exporter.text()

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install the Debian package 'prometheus' (make system-deps)"
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "jobs" / "monitor.py"),
            "--since",
            DAY_B.isoformat(),
            "--until",
            (DAY_B + dt.timedelta(days=1)).isoformat(),
            f"state_dir={state}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ALERT v1 feature_drift: distance" in done.stdout and "report:" in done.stdout


def test_per_file_partials_merge_to_the_whole_window(setup: tuple[Any, Path, float]) -> None:
    """What each Ray Data task of a large window computes (one file's rows, the window's row filter,
    the feedback join), merged, equals the one-table pass (sketch merges aside)."""
    import pickle

    from raymlops.monitoring.prediction_log import read_feedback, read_predictions
    from raymlops.monitoring.window import block_partials, log_dataset
    from raymlops.monitoring.window_stats import feature_drift, merge_partials, window_partials

    cfg, _, _ = setup
    root, window = str(cfg.monitor.log_root), day(DAY_B)
    feedback = read_feedback(root, MODEL, since=window["since"])
    # A window that also covers day A's last 10 requests: the row filter must drop the rest of day A.
    since = DAY_A + dt.timedelta(minutes=REQUESTS - 10)
    dataset, row_filter, size = log_dataset(root, MODEL, since, window["until"])
    assert size > 0 and len(list(dataset.get_fragments())) >= 2
    blocks = [
        pickle.loads(
            block_partials(f.to_table(schema=dataset.schema), row_filter, feedback)["partials"][0].as_py()
        )
        for f in dataset.get_fragments()
    ]
    merged = merge_partials(blocks)
    whole = window_partials(read_predictions(root, MODEL, since, window["until"]), feedback)
    assert sorted(merged) == sorted(whole) == ["1", "2"]
    profile = Profile.load(Path(cfg.state_dir) / "files" / PROFILE)
    for version in ("1", "2"):
        a, b = whole[version], merged[version]
        assert a.rows == b.rows and a.requests == b.requests
        assert a.rows == {"served" if version == "1" else "shadow": 1600 + 2 * 10}
        assert sorted(a.outcome) == sorted(b.outcome) and len(a.probability) == len(b.probability)
        drift_a = feature_drift(profile, a, list(INPUTS))
        drift_b = feature_drift(profile, b, list(INPUTS))
        assert drift_a["drifted_features"] == drift_b["drifted_features"] == ["distance", "origin"]
        for name, entry in drift_a["features"].items():
            assert drift_b["features"][name]["psi"] == pytest.approx(entry["psi"], rel=0.05, abs=0.01)
