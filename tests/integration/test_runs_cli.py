"""``runs list`` / ``runs compare`` against real MLflow runs in a temporary SQLite store (no Ray)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from raymlops.cli import main as cli
from raymlops.config import compose
from raymlops.registry.mlflow_registry import ModelRegistry
from raymlops.registry.tracking import JobTracker


def _config(lr: float, workers: int) -> dict:
    return {
        "run_name": "quickstart",
        "seed": 42,
        "model": {"name": "torch_mlp", "lr": lr, "epochs": 3, "hidden": [64, 32]},
        "trainer": {"scaling": {"num_workers": workers, "use_gpu": False}},
    }


def _job(registry: ModelRegistry, job_id: str, lr: float, workers: int, auc: float, trials: int = 0) -> str:
    tags = {
        "raymlops.run_id": job_id,
        "raymlops.run_name": "quickstart",
        "raymlops.env": "dev",
        "raymlops.git_sha": "0123456789abcdef",
        "raymlops.git_dirty": "true" if workers == 4 else "false",
    }
    tracker = JobTracker.start(registry, f"quickstart-{job_id}", tags, _config(lr, workers))
    history = [
        {
            "epoch": e,
            "train/loss": 0.7 - lr * e,
            "valid/loss": 0.72 - lr * e / 2,
            "train/rows_per_worker": 100,
        }
        for e in (1, 2, 3)
    ]
    tracker.log_metrics({"test/auc": auc, "test/logloss": 0.5, "baseline/test/auc": 0.5}, history)
    if trials:
        tracker.log_trials(
            [
                {
                    "name": f"trial_{i}",
                    "params": {"model": {"lr": lr * (i + 1)}},
                    "metrics": {"valid/loss": 0.6},
                }
                for i in range(trials)
            ]
        )
    tracker.set_tags({"raymlops.model_name": "flights-delay", "raymlops.model_version": job_id[-1]})
    tracker.finish(
        "succeeded", {}, {"data_version": f"delta:flights@{job_id[-1]}", "stage_seconds": {"train": 1.5}}
    )
    return tracker.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """Three job runs (the second with two Tune trials), oldest first; returns state_dir and MLflow ids."""
    state = tmp_path_factory.mktemp("state")
    cfg = compose([f"state_dir={state}"]).registry
    registry = ModelRegistry(cfg.tracking_uri, cfg.artifact_root, cfg.experiment)
    ids = [
        _job(registry, "20250101-000000-aaaaa1", lr=0.01, workers=2, auc=0.71),
        _job(registry, "20250101-000001-bbbbb2", lr=0.05, workers=2, auc=0.73, trials=2),
        _job(registry, "20250101-000002-ccccc3", lr=0.01, workers=4, auc=0.72),
    ]
    return str(state), ids


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_job_runs_newest_first(store, capsys) -> None:
    state, ids = store
    code, out, _ = _run(capsys, "runs", "list", f"state_dir={state}")
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.split()[:3] == ["RUN", "RAYMLOPS", "RUN"] and "test/auc" in header and "MODEL" in header
    assert [row.split()[0] for row in rows] == [i[:8] for i in reversed(ids)]  # children hidden
    newest = rows[0]
    for text in (
        "20250101-000002-ccccc3",
        "FINISHED",
        "delta:flights@3",
        "01234567*",
        "0.7200",
        "flights-delay v3",
    ):
        assert text in newest
    assert "01234567 " in rows[1]  # clean tree: no dirty mark
    assert "trial_" not in out

    code, out, _ = _run(capsys, "runs", "list", "--limit", "2", f"state_dir={state}")
    assert len(out.strip().splitlines()) == 3


def test_list_all_includes_tune_trials(store, capsys) -> None:
    state, ids = store
    code, out, _ = _run(capsys, "runs", "list", "--all", f"state_dir={state}")
    assert code == 0
    trials = [row for row in out.splitlines() if "trial_" in row]
    assert len(trials) == 2 and all(row.rstrip().endswith(ids[1][:8]) for row in trials)
    assert "PARENT" in out.splitlines()[0]


def test_compare_shows_differing_params_metrics_and_tags(store, capsys, tmp_path: Path) -> None:
    state, ids = store
    plot = tmp_path / "curves.png"
    # A full MLflow id, a unique prefix of one, a raymlops run id; the columns keep that order.
    code, out, _ = _run(
        capsys,
        "runs",
        "compare",
        ids[0],
        ids[1][:10],
        "20250101-000002-ccccc3",
        "--plot",
        str(plot),
        f"state_dir={state}",
    )
    assert code == 0, out
    params = out.split("params:")[1].split("metrics")[0]
    assert "2 differ, 6 identical (not shown)" in params
    lr = next(line for line in params.splitlines() if line.startswith("model.lr"))
    assert lr.split()[1:] == ["0.01", "0.05", "0.01"]
    workers = next(line for line in params.splitlines() if line.startswith("trainer.scaling.num_workers"))
    assert workers.split()[1:] == ["2", "2", "4"]
    assert "model.epochs" not in params and "seed" not in params

    metrics = out.split("metrics (")[1].split("tags:")[0]
    auc = next(line for line in metrics.splitlines() if line.startswith("test/auc"))
    assert auc.split()[1:] == ["0.71", "0.73", "0.72"]
    valid = next(line for line in metrics.splitlines() if line.startswith("valid/loss"))
    assert valid.split()[1:] == ["0.705", "0.645", "0.705"]  # the last epoch's value
    assert "time/train_seconds" in metrics

    tags = out.split("tags:")[1]
    assert "delta:flights@1" in tags and "delta:flights@3" in tags and "01234567*" in tags
    assert next(line for line in tags.splitlines() if line.startswith("env")).split()[1:] == ["dev"] * 3

    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1000 and height >= 300
    # Curves with more than one epoch; rows_per_worker never changes, so it is left out.
    assert out.strip().splitlines()[-1] == f"plot: {plot} (train/loss, valid/loss)"


def test_compare_plot_chosen_metric(store, capsys, tmp_path: Path) -> None:
    state, ids = store
    plot = tmp_path / "valid.png"
    # A unique prefix of a raymlops run id names a run too.
    code, out, _ = _run(
        capsys,
        "runs",
        "compare",
        ids[0],
        "20250101-000002",
        "--plot",
        str(plot),
        "--metric",
        "valid/loss",
        f"state_dir={state}",
    )
    assert code == 0 and out.strip().endswith("(valid/loss)") and plot.stat().st_size > 5_000

    code, _, err = _run(
        capsys,
        "runs",
        "compare",
        ids[0],
        ids[2],
        "--plot",
        str(plot),
        "--metric",
        "valid/los",
        f"state_dir={state}",
    )
    assert code == 2 and "valid/loss" in err


def test_unknown_run_is_a_clear_error(store, capsys) -> None:
    state, ids = store
    code, out, err = _run(capsys, "runs", "compare", ids[0], "20250101-000002-ccccc4", f"state_dir={state}")
    assert code == 2 and out == ""
    assert "Run '20250101-000002-ccccc4': no MLflow run id" in err
    assert "Closest ids: 20250101-000002-ccccc3" in err

    code, _, err = _run(capsys, "runs", "compare", ids[0], "20250101-00000", f"state_dir={state}")
    assert code == 2 and "prefix matches 3 runs" in err and "20250101-000001-bbbbb2" in err

    code, _, err = _run(capsys, "runs", "compare", ids[0], f"state_dir={state}")
    assert code == 2 and "at least two runs" in err
