"""pipeline: the quickstart's stages through raymlops vs the same work hand-written with plain Ray.

Ours: ``compose`` + ``run_pipeline`` with ingest -> validate -> features -> train -> evaluate -> export ->
register. deploy is left out (``serve.enabled=false``): Ray Serve start-up is measured by the serving
benchmarks, and a deployment would outlive the run.

Baseline, what a user would write without raymlops, on the same Delta table, Ray instance and settings:
Ray Data ``read_delta`` (+ the same seeded ``random_sample``) collected to one pyarrow table; the same
validation rules checked with pyarrow compute; label, time split, mean/std and frequent categories in
pyarrow on the driver; train shuffled with a numpy permutation; the transform applied with Ray Data
``map_batches``; a plain ``TorchTrainer`` (same MLP, optimiser, epochs, batch size, workers, per-epoch
validation loss, one checkpoint at the end); sklearn metrics and the same gates; ``torch.onnx.export`` of
the model alone (its preprocessing saved as JSON, not as a graph) checked with onnxruntime on 512 test
rows; an MLflow run with params, per-epoch metrics and the ONNX file, registered as a model version.

Both sides read a Delta table written before timing; heavy imports, one untimed read of the table (Ray
Data's worker processes) and both MLflow databases come before timing too, so that neither side pays
one-off costs the other does not.
``--quick``: ``data.sample_fraction=0.1``, ``model.epochs=1`` and the AUC gate lowered to 0.5 (at 10% and
one epoch the test AUC is ~0.54, under the quickstart's 0.60), one timed run per side and no warm-up.
``--smoke``: 20,000 of the table's rows, one epoch, no AUC gate (``test/auc>=0``: a tiny model's AUC
says nothing), one Ray Train worker on each side (a smoke run is start-up, and each further worker is one
more process to start), one run per side.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Run as ``python benchmarks/pipeline.py``: Python puts this folder first on sys.path.
from _harness import Figure, alternate, emit, flights_table, log, parser, start_ray, summary

from raymlops.evaluation.metrics import check_gates

NAME = "pipeline"
STAGES = ["ingest", "validate", "features", "train", "evaluate", "export", "register"]
SMOKE_ROWS = 20_000


# ----------------------------------------------------------------------------------- the baseline


def _baseline_train_loop(config: dict[str, Any]) -> None:
    """A plain Ray Train loop: DDP over the train shard, validation loss per epoch, one final checkpoint."""
    import os

    import ray.train
    import ray.train.torch
    import torch

    from raymlops.models.torch_mlp import build_mlp

    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(config["seed"])
    torch.set_num_threads(config["threads"])
    module = build_mlp(config["num_features"], config["hidden_sizes"], config["dropout"])
    model = ray.train.torch.prepare_model(module)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    loss_fn = torch.nn.BCEWithLogitsLoss()
    train, valid = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("valid")
    batch_size = config["batch_size"]
    history: list[dict[str, Any]] = []
    for epoch in range(config["epochs"]):
        model.train()
        total, rows = 0.0, 0
        for batch in train.iter_torch_batches(
            batch_size=batch_size, local_shuffle_buffer_size=4 * batch_size
        ):
            optimizer.zero_grad()
            loss = loss_fn(model(batch["x"]).squeeze(1), batch["y"])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch["y"])
            rows += len(batch["y"])
        model.eval()
        valid_total, valid_rows = 0.0, 0
        with torch.no_grad():
            for batch in valid.iter_torch_batches(batch_size=8192):
                valid_total += float(loss_fn(model(batch["x"]).squeeze(1), batch["y"])) * len(batch["y"])
                valid_rows += len(batch["y"])
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train/loss": total / max(rows, 1),
            "valid/loss": valid_total / max(valid_rows, 1),
        }
        history.append(metrics)
        if epoch + 1 == config["epochs"] and rank == 0:
            metrics = {**metrics, "history": history}
            with tempfile.TemporaryDirectory() as folder:
                torch.save(module.state_dict(), os.path.join(folder, "model.pt"))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        else:
            ray.train.report(metrics)


def _transform(batch: pa.Table, fitted: dict[str, Any]) -> dict[str, np.ndarray]:
    """Mean-impute + standardise the numerics, one-hot the frequent categories (unknown: all zeros)."""
    parts = []
    for name, mean, std in zip(fitted["numeric"], fitted["means"], fitted["stds"], strict=True):
        values = pc.cast(batch[name], pa.float32()).to_numpy(zero_copy_only=False).astype(np.float32)
        filled = np.where(np.isnan(values), np.float32(mean), values)
        parts.append(((filled - np.float32(mean)) / np.float32(std))[:, None])
    for name, values in zip(fitted["categorical"], fitted["categories"], strict=True):
        index = pc.index_in(batch[name], value_set=pa.array(values, pa.string()))
        codes = pc.fill_null(index, -1).to_numpy(zero_copy_only=False)
        onehot = np.zeros((batch.num_rows, len(values)), dtype=np.float32)
        known = codes >= 0
        onehot[np.flatnonzero(known), codes[known]] = 1.0
        parts.append(onehot)
    return {"x": np.hstack(parts), "y": batch["label"].to_numpy().astype(np.float32)}


def _kind(dtype: pa.DataType) -> str:
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
        return "numeric"
    if pa.types.is_string(dtype):
        return "string"
    return "timestamp" if pa.types.is_timestamp(dtype) else "other"


def _table_uri(cfg: Any) -> str:
    from raymlops.data.refs import parse_ref

    return parse_ref(cfg.data.ref).location


def _validate(table: pa.Table, min_rows: int, rules: dict[str, Any]) -> list[str]:
    failures = [] if table.num_rows >= min_rows else [f"rows {table.num_rows} < {min_rows}"]
    for name, rule in rules.items():
        column = table[name]
        kind = _kind(column.type)
        if kind != rule["type"]:
            failures.append(f"{name}: type {kind}")
        if column.null_count / max(len(column), 1) > rule["max_null_fraction"]:
            failures.append(f"{name}: nulls")
        if kind == "numeric":
            low, high = pc.min_max(column).as_py().values()
            if rule.get("min") is not None and low < rule["min"]:
                failures.append(f"{name}: min {low}")
            if rule.get("max") is not None and high > rule["max"]:
                failures.append(f"{name}: max {high}")
        if rule.get("allowed") is not None:
            unexpected = set(pc.unique(pc.drop_null(column)).to_pylist()) - set(rule["allowed"])
            if unexpected:
                failures.append(f"{name}: unexpected {sorted(unexpected)[:10]}")
    return failures


def run_baseline(cfg: Any, work: Path, phases: dict[str, float]) -> dict[str, Any]:
    """The quickstart by hand. Fills ``phases`` with seconds per step; returns split sizes and metrics."""
    import datetime as dt
    import os

    import mlflow
    import onnxruntime as ort
    import ray
    import ray.data
    import ray.train
    import torch
    from mlflow.entities import Metric, Param
    from omegaconf import OmegaConf
    from ray.train.torch import TorchTrainer
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    from raymlops.models.torch_mlp import build_mlp

    p = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # the data config holds enums (PII)
    assert isinstance(p, dict)
    data, feats, model_cfg, scaling = p["data"], p["features"], p["model"], p["trainer"]["scaling"]
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = now - clock
        clock = now

    # ingest
    ds = ray.data.read_delta(_table_uri(cfg))
    if data["sample_fraction"] < 1.0:
        ds = ds.random_sample(data["sample_fraction"], seed=p["seed"])
    table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    phase("ingest")

    failures = _validate(table, p["validate"]["min_rows"], p["validate"]["columns"])
    if failures:
        raise RuntimeError(f"validation failed: {failures}")
    phase("validate")

    # features: label, time split, statistics of train, frequent categories, shuffled train
    table = table.filter(pc.is_valid(table[feats["label"]["column"]]))
    label = pc.greater(table[feats["label"]["column"]], pa.scalar(float(feats["label"]["threshold"])))
    table = table.append_column("label", pc.cast(label, pa.float32()))
    when = table[feats["split"]["time_column"]]

    def instant(text: str) -> pa.Scalar:
        return pa.scalar(dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc), when.type)

    valid_start, test_start = instant(feats["split"]["valid_start"]), instant(feats["split"]["test_start"])
    train_t = table.filter(pc.less(when, valid_start))
    valid_t = table.filter(pc.and_(pc.greater_equal(when, valid_start), pc.less(when, test_start)))
    test_t = table.filter(pc.greater_equal(when, test_start))
    numeric, categorical = feats["numeric"], feats["categorical"]
    means = [pc.mean(train_t[c]).as_py() for c in numeric]
    stds = [pc.stddev(train_t[c], ddof=1).as_py() or 1.0 for c in numeric]
    categories = []
    for c in categorical:
        counts = pc.value_counts(pc.drop_null(train_t[c]).combine_chunks())
        frequent = sorted(
            (-n, v)
            for v, n in zip(
                counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
            )
            if n >= feats["min_frequency"]
        )
        categories.append(sorted(v for _, v in frequent[: feats["max_categories"]]))
    fitted = {
        "numeric": numeric,
        "means": means,
        "stds": stds,
        "categorical": categorical,
        "categories": categories,
    }
    num_features = len(numeric) + sum(len(c) for c in categories)
    train_t = train_t.take(np.random.default_rng(p["seed"]).permutation(train_t.num_rows))

    def to_xy(batch: pa.Table) -> dict[str, np.ndarray]:
        return _transform(batch, fitted)

    train_ds = ray.data.from_arrow(train_t).map_batches(to_xy, batch_format="pyarrow").materialize()
    valid_ds = ray.data.from_arrow(valid_t).map_batches(to_xy, batch_format="pyarrow").materialize()
    phase("features")

    workers = scaling["num_workers"]
    loop_config = {
        "num_features": num_features,
        "hidden_sizes": model_cfg["hidden_sizes"],
        "dropout": model_cfg["dropout"],
        "lr": model_cfg["lr"],
        "weight_decay": model_cfg["weight_decay"],
        "batch_size": model_cfg["batch_size"],
        "epochs": model_cfg["epochs"],
        "seed": p["seed"],
        "threads": max(1, (os.cpu_count() or 1) // workers),
    }
    trainer = TorchTrainer(
        _baseline_train_loop,
        train_loop_config=loop_config,
        datasets={"train": train_ds, "valid": valid_ds},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, resources_per_worker={"CPU": scaling["cpus_per_worker"]}
        ),
        run_config=ray.train.RunConfig(name="baseline_mlp", storage_path=str(work / "ray_train")),
    )
    result = trainer.fit()
    if result.checkpoint is None or result.metrics is None:
        raise RuntimeError(f"training reported no checkpoint: {result.error}")
    history = result.metrics["history"]
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / "model.pt")
    model = build_mlp(num_features, model_cfg["hidden_sizes"], model_cfg["dropout"])
    model.load_state_dict(state)
    model.eval()
    phase("train")

    test_xy = _transform(test_t, fitted)
    with torch.no_grad():
        proba = torch.sigmoid(model(torch.from_numpy(test_xy["x"]))).squeeze(1).numpy().astype(np.float64)
    proba = np.clip(proba, 1e-7, 1 - 1e-7)
    y = test_xy["y"]
    metrics = {
        "test/auc": roc_auc_score(y, proba),
        "test/logloss": log_loss(y, proba, labels=[0, 1]),
        "test/accuracy": accuracy_score(y, proba >= 0.5),
    }
    # Config plumbing, not the work compared: the same gate parser as ours (microseconds).
    low = check_gates(metrics, p["evaluate"]["gates"])
    if low:
        raise RuntimeError(f"gate failed: {low}")
    phase("evaluate")

    onnx_path = work / "model.onnx"
    wrapped = torch.nn.Sequential(model, torch.nn.Sigmoid(), torch.nn.Flatten(0)).eval()
    with warnings.catch_warnings():  # the TorchScript exporter (one self-contained file) warns it is legacy
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (torch.zeros(2, num_features),),
            str(onnx_path),
            dynamo=False,
            input_names=["features"],
            output_names=["probability"],
            opset_version=p["export"]["opset"],
            dynamic_axes={"features": {0: "rows"}, "probability": {0: "rows"}},
        )
    (work / "preprocessing.json").write_text(json.dumps(fitted))
    sample = test_xy["x"][: p["export"]["parity_rows"]]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = wrapped(torch.from_numpy(sample)).numpy()
    diff = float(np.max(np.abs(session.run(None, {"features": sample})[0] - expected)))
    if not diff <= p["export"]["parity_tolerance"]:
        raise RuntimeError(f"onnx parity {diff}")
    phase("export")

    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = mlflow.MlflowClient(
        tracking_uri=uri, registry_uri=uri
    )  # no global state: ours shares the process
    found = client.get_experiment_by_name("baseline")
    experiment_id = (
        found.experiment_id
        if found
        else client.create_experiment("baseline", artifact_location=(work / "artifacts").as_uri())
    )
    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    epochs = [
        Metric(k, float(v), now, int(row["epoch"])) for row in history for k, v in row.items() if "/" in k
    ]
    client.log_batch(
        run_id,
        params=[
            Param(k, json.dumps(v)) for k, v in (("model", model_cfg), ("features", feats), ("data", data))
        ],
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()] + epochs,
    )
    client.log_artifact(run_id, str(onnx_path), "model")
    client.log_artifact(run_id, str(work / "preprocessing.json"), "model")
    client.set_terminated(run_id)
    # The ONNX file is no MLflow flavour, so the version points at the run's artifact folder.
    try:
        client.get_registered_model("baseline-flights-delay")
    except mlflow.exceptions.MlflowException:
        client.create_registered_model("baseline-flights-delay")
    client.create_model_version("baseline-flights-delay", f"{run.info.artifact_uri}/model", run_id=run_id)
    phase("register")
    return {
        "train_rows": train_t.num_rows,
        "valid_rows": valid_t.num_rows,
        "test_rows": test_t.num_rows,
        "features": num_features,
        "auc": round(float(metrics["test/auc"]), 4),
    }


# ----------------------------------------------------------------------------------------- main


def _prewarm(table_uri: str, tracking_uris: list[str]) -> None:
    """One-off costs outside the timing, which would otherwise land on whichever side runs first:
    module imports, Ray Data's worker processes (one read of the table) and the MLflow schemas."""
    import mlflow
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import ray.data
    import sklearn.metrics  # noqa: F401
    import torch
    import torch.onnx  # noqa: F401

    ray.data.read_delta(table_uri).materialize()
    for uri in tracking_uris:
        mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    repeats = args.repeats or (1 if args.quick or args.smoke else 3)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick or args.smoke else 1)
    table, described = flights_table(args.rows or (SMOKE_ROWS if args.smoke else None), seed=0)
    if args.smoke:
        one_worker = ["trainer.scaling.num_workers=1", "trainer.scaling.cpus_per_worker=1.0"]
        quick = ["model.epochs=1", "evaluate.gates=['test/auc>=0']", *one_worker]
    elif args.quick:
        quick = ["data.sample_fraction=0.1", "model.epochs=1", "evaluate.gates=['test/auc>=0.5']"]
    else:
        quick = []

    from raymlops.config import compose
    from raymlops.data.delta import ensure_table
    from raymlops.pipeline.runner import run_pipeline

    with tempfile.TemporaryDirectory(prefix="raymlops-bench-pipeline-") as tmp:
        overrides = [
            "+experiment=quickstart",
            f"state_dir={tmp}/state",
            "ray.progress_bars=false",
            "serve.enabled=false",
            f"stages=[{','.join(STAGES)}]",
            *quick,
        ]
        cfg = compose(overrides)
        ensure_table(_table_uri(cfg), table, message="benchmark input")  # both sides read this table
        del table
        log(f"input: {described}; overrides={quick}; repeats={repeats} warmup={warmup}")
        start_ray(num_cpus=2)
        work = Path(tmp) / "baseline"
        work.mkdir()
        _prewarm(_table_uri(cfg), [cfg.registry.tracking_uri, f"sqlite:///{work / 'mlflow.db'}"])
        ours_stages: list[dict[str, float]] = []
        baseline_stages: list[dict[str, float]] = []
        seen: dict[str, Any] = {}

        def ours() -> None:
            ctx, _ = run_pipeline(compose(overrides))
            ours_stages.append(dict(ctx.lineage["stage_seconds"]))
            f = ctx.figures
            seen["ours"] = {
                **{k: f["features"][k] for k in ("train_rows", "valid_rows", "test_rows", "features")},
                "auc": f["evaluate"]["auc"],
            }

        def baseline() -> None:
            phases: dict[str, float] = {}
            seen["baseline"] = run_baseline(cfg, work, phases)
            baseline_stages.append(phases)

        ours_s, baseline_s = alternate(ours, baseline, repeats, warmup)
        log(f"ours: {seen['ours']}; baseline: {seen['baseline']}")
        sizes = ("train_rows", "valid_rows", "test_rows", "features")
        if any(seen["ours"][k] != seen["baseline"][k] for k in sizes):
            log("WARNING: the two sides trained on different data sizes (see above)")

    def stage_median(runs: list[dict[str, float]], name: str) -> float:
        timed_runs = runs[warmup:]  # warm-up runs are not part of the figures
        return statistics.median(r[name] for r in timed_runs)

    figures = [Figure(NAME, "end_to_end_seconds", ours_s, baseline_s, "s", higher_is_better=False)]
    for name in STAGES:
        figures.append(
            Figure(
                NAME,
                f"stage_seconds.{name}",
                stage_median(ours_stages, name),
                stage_median(baseline_stages, name),
                "s",
                higher_is_better=False,
            )
        )
    for figure in figures:
        emit(figure)
    summary(
        figures[:1],
        note=f"{described}{' (quick: 10% sample, 1 epoch, AUC gate 0.5)' if args.quick else ''}, "
        f"median of {repeats}; stages {'->'.join(STAGES)}; deploy not included (serve.enabled=false)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
