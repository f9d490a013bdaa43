"""Batch scoring on a real MLflow registry (SQLite) and a real Delta table: ``jobs/batch_score.py`` as a
real command, ``batch_score()`` and ``score_dataset()`` in-process; every score checked against
onnxruntime run by hand on the same rows."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raymlops.config import compose
from raymlops.errors import ConfigError
from raymlops.registry.mlflow_registry import ModelRegistry
from raymlops.registry.model_ref import parse_model_ref
from raymlops.serving.batch import METADATA_FILE, batch_score
from raymlops.serving.batch_scorers import score_dataset
from tests.conftest import load_script
from tests.integration.test_serving import PRE, WEIGHTS, direct_probabilities, model_graph

pytestmark = pytest.mark.usefixtures("ray_local")

REPO = Path(__file__).resolve().parents[2]
NAME = "flights-delay"
TRAIN_DATA = "delta:/data/train@7"


@dataclass(frozen=True)
class Setup:
    state_dir: Path
    cfg: Any
    onnx_path: Path
    run_id: str
    table_uri: str  # Delta: version 0 holds 300 rows, version 1 adds 200 (ids 0..499)
    no_origin: Path  # parquet without the model's ``origin`` column
    job: subprocess.Popen[bytes]  # jobs/batch_score.py, started by the fixture (see ``setup``)
    job_output: Path
    job_logs: Path  # stdout.txt and stderr.txt of the job


def _rows(count: int, first_id: int, seed: int) -> pa.Table:
    """Raw rows with nulls, an unseen category, ints where the model takes floats, an extra column."""
    rng = np.random.default_rng(seed)
    distance = rng.uniform(50, 3000, count)
    hour = rng.integers(0, 24, count)
    origin = rng.choice(["EWR", "JFK", "LGA", "SFO"], count).astype(object)
    origin[::17] = None
    return pa.table(
        {
            "id": pa.array(np.arange(first_id, first_id + count), pa.int64()),
            "distance": pa.array(distance, mask=np.arange(count) % 11 == 0),
            "hour": pa.array(hour, pa.int64(), mask=np.arange(count) % 13 == 0),
            "origin": pa.array(origin, pa.string()),
            "note": pa.array([f"row {i}" for i in range(first_id, first_id + count)]),
        }
    )


@pytest.fixture(scope="module")
def setup(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A registered model (alias champion), a Delta table of two versions, and the job command started
    on them: it runs beside the in-process tests (it joins the test's Ray as a cluster) and the last
    test collects it, so the module takes the time of one, not the sum."""
    import onnx
    import ray
    from deltalake import write_deltalake

    from raymlops.models.export import compose_pipeline

    root = tmp_path_factory.mktemp("batch")
    state_dir = root / "state"
    cfg = compose([f"state_dir={state_dir}"])
    onnx_path = root / "src" / "model.onnx"  # the registry keeps the file name
    onnx_path.parent.mkdir()
    onnx.save(compose_pipeline(PRE, model_graph(WEIGHTS["1"])), str(onnx_path))

    registry = ModelRegistry.from_config(cfg.registry)
    run = registry.client.create_run(registry.experiment_id(), run_name="train")
    tags = {
        "raymlops.input_columns": ",".join(f"{k}:{v}" for k, v in PRE.input_columns.items()),
        "raymlops.data_version": TRAIN_DATA,
    }
    version = registry.register_version(
        model_name=NAME, run_id=run.info.run_id, model_files=[onnx_path], tags=tags
    )
    registry.client.set_terminated(run.info.run_id)
    registry.client.set_registered_model_alias(NAME, "champion", version.version)

    table_uri = str(root / "flights")
    write_deltalake(table_uri, _rows(300, 0, seed=0))
    write_deltalake(table_uri, _rows(200, 300, seed=1), mode="append")
    no_origin = root / "no_origin.parquet"
    pq.write_table(_rows(20, 0, seed=2).drop_columns(["origin"]), no_origin)

    job_output, job_logs = root / "scored", root / "job"
    job_logs.mkdir()
    command = [
        sys.executable,
        "jobs/batch_score.py",
        f"model={NAME}@champion",
        f"input=delta:{table_uri}",
        f"output={job_output}",
        "keep=id,origin",
        f"state_dir={state_dir}",
        f"ray.address={ray.get_runtime_context().gcs_address}",  # the test's Ray, as a cluster
    ]
    with (job_logs / "stdout.txt").open("wb") as out, (job_logs / "stderr.txt").open("wb") as err:
        job = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err)
    yield Setup(state_dir, cfg, onnx_path, run.info.run_id, table_uri, no_origin, job, job_output, job_logs)
    if job.poll() is None:  # a test failed before collecting it
        job.kill()
        job.wait()


def _check_scores(scored: pa.Table, source: pa.Table, onnx_path: Path, threshold: float) -> None:
    """Every source row scored once, as onnxruntime scores it, and labelled at ``threshold``."""
    scored = scored.sort_by("id")
    assert scored["id"].to_pylist() == sorted(source["id"].to_pylist())
    source = source.sort_by("id")
    rows = source.select(["distance", "hour", "origin"]).to_pylist()
    expected = direct_probabilities(str(onnx_path), rows)
    probability = scored["probability"].to_numpy()
    np.testing.assert_allclose(probability, expected, rtol=0, atol=1e-6)
    assert scored["label"].to_pylist() == [int(p >= threshold) for p in probability]
    assert 0 < sum(scored["label"].to_pylist()) < scored.num_rows  # both classes occur
    assert scored.schema.field("probability").type == pa.float32()
    assert scored.schema.field("label").type == pa.int8()


def _delta(uri: str, version: int | None = None) -> pa.Table:
    from deltalake import DeltaTable

    return DeltaTable(uri, version=version).to_pyarrow_table()


def test_batch_score_in_process_reads_exactly_the_pinned_version(setup: Setup, tmp_path: Path) -> None:
    result = batch_score(
        f"{NAME}@1",
        f"delta:{setup.table_uri}@0",
        str(tmp_path / "out"),
        setup.cfg,
        threshold=0.4,
        batch_size=64,
    )
    assert (result.model_version, result.model_run_id, result.rows) == ("1", setup.run_id, 300)
    assert result.data_version == f"delta:{setup.table_uri}@0"
    scored = pq.read_table(tmp_path / "out")
    assert scored.column_names == ["id", "distance", "hour", "origin", "note", "probability", "label"]
    _check_scores(scored, _delta(setup.table_uri, 0), setup.onnx_path, 0.4)
    assert json.loads(Path(result.metadata_path).read_text()) == json.loads(json.dumps(result.as_dict()))

    # A second run into the same folder is refused unless asked to overwrite.
    with pytest.raises(ConfigError, match="is not empty"):
        batch_score(NAME, f"delta:{setup.table_uri}@0", str(tmp_path / "out"), setup.cfg)


def test_score_dataset_appends_scores_and_keeps_the_asked_columns(setup: Setup) -> None:
    import ray.data

    source = _delta(setup.table_uri)
    ds = ray.data.from_arrow(source).repartition(3)
    scored = score_dataset(ds, setup.onnx_path, PRE.input_columns, keep_columns=["id"], batch_size=50)
    table = pa.concat_tables(list(scored.iter_batches(batch_format="pyarrow", batch_size=None)))
    assert table.column_names == ["id", "probability", "label"]
    _check_scores(table, source, setup.onnx_path, 0.5)
    with pytest.raises(ConfigError, match="0 GPU"):  # CUDA asked for on a cluster without GPUs
        score_dataset(ds, setup.onnx_path, PRE.input_columns, use_gpu=True)


def _job_module() -> ModuleType:
    return load_script("jobs/batch_score.py", "batch_score_job")


def test_unknown_alias_exits_2_naming_it_and_what_exists(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = [f"model={NAME}@staging", f"input=delta:{setup.table_uri}", f"output={out}"]
    assert _job_module().main([*args, f"state_dir={setup.state_dir}"]) == 2
    err = capsys.readouterr().err
    assert f"Unknown model '{NAME}@staging'" in err and f"{NAME}@champion (version 1)" in err
    assert not out.exists()


def test_bad_input_exits_2_before_any_work(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = _job_module()
    out = tmp_path / "out"
    common = [f"output={out}", f"state_dir={setup.state_dir}"]

    assert job.main([f"model={NAME}", f"input={setup.no_origin}", *common]) == 2
    err = capsys.readouterr().err
    assert "lacks column(s) origin" in err and "Model inputs: distance, hour, origin" in err

    assert job.main([f"model={NAME}", f"input=delta:{setup.table_uri}", "keep=id,nope", *common]) == 2
    assert "column(s) nope are not in the data" in capsys.readouterr().err

    assert job.main([f"model={NAME}@9", f"input=delta:{setup.table_uri}", *common]) == 2
    assert f"Unknown model '{NAME} v9'" in capsys.readouterr().err

    assert job.main([f"model={NAME}", *common]) == 2
    assert "missing key(s) input=" in capsys.readouterr().err

    assert job.main([f"model={NAME}", f"input=delta:{setup.table_uri}", "outptu=x", *common]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'outptu'" in err and "Did you mean 'output'" in err
    assert not out.exists()


def test_model_references() -> None:
    assert parse_model_ref("m@champion") == parse_model_ref("m")
    assert (parse_model_ref("m@3").version, parse_model_ref("m@v3").version) == ("3", "3")
    assert parse_model_ref("@challenger", default_name="flights").name == "flights"
    with pytest.raises(ConfigError, match="empty alias"):
        parse_model_ref("m@")
    with pytest.raises(ConfigError, match="names no model"):
        parse_model_ref("@champion")


def test_onnx_feeds_vectorised_strings_equal_the_per_row_values() -> None:
    from raymlops.models.export import onnx_feeds

    table = pa.table(
        {
            "x": pa.array([1, None, 3], pa.int64()),
            "s": pa.array(["a", None, "c"]),
            "large": pa.array(["a", "b", None], pa.large_string()),
            "dict": pa.array(["u", None, "u"]).dictionary_encode(),
            "code": pa.array([7, None, 9], pa.int64()),  # declared a string: str(v), as onnx_feeds does
        }
    )
    columns = {"x": "float", "s": "string", "large": "string", "dict": "string", "code": "string"}
    feeds = onnx_feeds(table, columns)
    assert list(feeds) == list(columns)
    expected = {
        "s": ["a", "", "c"],
        "large": ["a", "b", ""],
        "dict": ["u", "", "u"],
        "code": ["7", "", "9"],
    }
    for name, values in expected.items():
        assert feeds[name].dtype == object and feeds[name].shape == (3, 1), name
        assert feeds[name].ravel().tolist() == values, name
    np.testing.assert_array_equal(feeds["x"].ravel(), np.array([1, np.nan, 3], dtype=np.float32))


def test_job_command_scores_the_champion_on_the_latest_version(setup: Setup) -> None:
    """Last in the module: the command started by the ``setup`` fixture has run beside the others."""
    returncode = setup.job.wait(timeout=180)
    stdout = (setup.job_logs / "stdout.txt").read_text()
    stderr = (setup.job_logs / "stderr.txt").read_text()
    assert returncode == 0, stderr[-3000:]
    summary = stdout.strip().splitlines()[-1]
    assert f"{NAME} version 1" in summary and "500 rows" in summary, summary
    assert "batch_score started" in stderr and "batch_score finished rows=500" in stderr
    output = setup.job_output

    scored = pq.read_table(output)  # _raymlops_batch.json is skipped: a leading _ marks metadata
    assert scored.column_names == ["id", "origin", "probability", "label"]
    _check_scores(scored, _delta(setup.table_uri), setup.onnx_path, 0.5)

    meta = json.loads((output / METADATA_FILE).read_text())
    assert (meta["model_name"], meta["model_version"], meta["model_run_id"]) == (NAME, "1", setup.run_id)
    assert meta["model_ref"] == f"{NAME}@champion" and meta["model_data_version"] == TRAIN_DATA
    assert meta["data_ref"] == f"delta:{setup.table_uri}"
    assert meta["data_version"] == f"delta:{setup.table_uri}@1"  # resolved: the latest version then
    assert meta["rows"] == 500 and meta["seconds"] > 0
    assert meta["started_at"] < meta["finished_at"] and meta["started_at"].endswith("+00:00")
    assert meta["columns"] == scored.column_names and meta["threshold"] == 0.5
    assert sorted(Path(f).name for f in meta["files"]) == sorted(p.name for p in output.glob("*.parquet"))
