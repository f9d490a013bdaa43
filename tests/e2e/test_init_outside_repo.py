"""Issue 16's "done when": three tables kept outside the repository — a YES/NO string label without a
timestamp, a multiclass string label, a numeric target — each go from ``python -m raymlops init`` (the
real command, run in a folder outside the repository) through the exact job command it prints, unedited,
to a model served over HTTP with its task's answer shape and registered under its own name.

Each job runs the printed command's own arguments, composed by the same Hydra call the job makes, through
``run_pipeline`` on the test session's Ray, with test-only overrides appended: where state and the HTTP port
go, one Ray Train worker, fewer boosting rounds and explained rows (the configs themselves untouched).
Not a job process per table: each costs its own Ray and Serve start (two to three minutes of CI on two
cores); tests/e2e/test_job_command.py runs ``python -m raymlops.job`` as a process. Tiny tables (600 rows).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.conftest import free_port
from tests.mlflow_checks import pyfunc_answers, served_by_mlflow, task_fields
from tests.task_tables import CLASSES, binary_yes_no, multiclass_strings, regression_numbers

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
AFFORDABLE = [
    "trainer.scaling.num_workers=1",  # each Ray Train worker is a process to start: one is enough here
    "model.num_boost_round=20",
    "explain.background_rows=20",
    "explain.rows=20",
    "serve.sample_requests=2",
]


def _env(state_dir: Path) -> dict[str, str]:
    return {**os.environ, "RAYMLOPS_HOME": str(state_dir), "RAYMLOPS_PROGRESS": "0", "RAY_ADDRESS": ""}


def _init(folder: Path, data: str, name: str) -> list[str]:
    """Run ``raymlops init`` in ``folder``; the job command it prints, as argv."""
    done = subprocess.run(
        [sys.executable, "-m", "raymlops", "init", "--data", data, "--label", "target", "--name", name],
        cwd=folder,
        env=_env(folder / "state"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [command] = [line.strip() for line in done.stdout.splitlines() if "python -m raymlops.job" in line]
    configs = folder / f"configs-{name}"
    assert command == f"python -m raymlops.job 'hydra.searchpath=[file://{configs}]' +experiment={name}"
    return shlex.split(command)


def _binary(answer: dict) -> None:
    assert set(answer) >= {"probability", "label"}
    assert 0.0 <= answer["probability"] <= 1.0 and answer["label"] in ("YES", "NO")
    assert (answer["label"] == "YES") == (answer["probability"] >= 0.5)


def _multiclass(answer: dict) -> None:
    assert answer["label"] in CLASSES and set(answer["probabilities"]) == set(CLASSES)
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert answer["label"] == max(answer["probabilities"], key=answer["probabilities"].get)


def _regression(answer: dict) -> None:
    assert set(answer) >= {"value"} and "probability" not in answer
    assert 100.0 < answer["value"] < 300.0  # the target is about 200 +- 40


@contextlib.contextmanager
def _served_in_process(command: list[str], folder: Path, port: int) -> Iterator[str]:
    """The job command's overrides run by ``run_pipeline`` on this session's Ray; its summary."""
    from ray import serve

    from raymlops.config import compose
    from raymlops.job import format_summary
    from raymlops.pipeline.runner import run_pipeline

    cfg = compose([*command[3:], f"state_dir={folder / 'state'}", f"serve.port={port}", *AFFORDABLE])
    try:
        ctx, state = run_pipeline(cfg)
        yield format_summary(ctx, state)
    finally:
        serve.shutdown()


CASES: list[tuple[str, Callable[[int], pa.Table], str, str, str, Callable[[dict], None]]] = [
    # name, table, file format, task, split init must choose, the answer's shape
    ("churn", binary_yes_no, "csv", "binary", "stratified", _binary),
    ("tiers", multiclass_strings, "parquet", "multiclass", "stratified", _multiclass),
    ("prices", regression_numbers, "csv", "regression", "random", _regression),
]


@pytest.mark.parametrize(("name", "make", "fmt", "task", "split", "check"), CASES, ids=[c[0] for c in CASES])
def test_init_output_runs_unedited_to_a_served_model_under_its_own_name(
    ray_local: None,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    make: Callable[[int], pa.Table],
    fmt: str,
    task: str,
    split: str,
    check: Callable[[dict], None],
) -> None:
    from raymlops.config import compose
    from raymlops.registry.mlflow_registry import ModelRegistry
    from raymlops.registry.tags import TASK_TAG
    from raymlops.tasks.codec import task_from_json

    folder = tmp_path_factory.mktemp(f"outside-{name}")
    assert REPO not in folder.parents
    table = make(600)
    data = folder / f"{name}.{fmt}"
    pacsv.write_csv(table, data) if fmt == "csv" else pq.write_table(table, data)
    command = _init(folder, data.name, name)
    features = (folder / f"configs-{name}" / "features" / f"{name}.yaml").read_text()
    assert f"task: {task} " in features and f"  kind: {split} " in features

    port = free_port()
    with _served_in_process(command, folder, port) as output:
        # The job's own summary: registered under the table's name, sample answers of the task's shape.
        assert f"registered model: {name} version 1" in output, output[-5000:]
        records = [{k: row[k] for k in ("num_a", "num_b", "cat")} for row in table.slice(0, 5).to_pylist()]
        url = f"http://127.0.0.1:{port}/v1/models/{name}/predict"
        response = httpx.post(url, json={"records": records}, timeout=60)
        assert response.status_code == 200, response.text
        assert response.headers["model-name"] == name
        answers = response.json()["predictions"]
        assert len(answers) == 5
        for answer in answers:
            check(answer)

    cfg = compose([*command[3:], f"state_dir={folder / 'state'}"])  # the job command's overrides
    registry = ModelRegistry.from_config(cfg.registry)
    [version] = registry.versions(name)
    assert task_from_json(version.tags[TASK_TAG]).name == task
    assert name in cfg.registry.intended_use  # the model card's placeholder names the table, not flights

    # Issue 19: the version is an MLflow model too, answering exactly what the router answered over HTTP.
    assert "champion" in version.aliases
    uri, model = cfg.registry.tracking_uri, f"models:/{name}@champion"
    assert pyfunc_answers(uri, model, records) == task_fields(answers)  # the router adds "ood" itself
    if task == "multiclass":  # one `mlflow models serve` process (its start is the cost): the richest answer
        assert served_by_mlflow(uri, model, records) == {"predictions": task_fields(answers)}
