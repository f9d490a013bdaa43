"""The quickstart from config alone on plug-ins the package never names: the model family of
tests/plugins/external_family.py (``model=external_linear``, a config found through Hydra's search path)
trained on data read through tests/plugins/external_backend.py (``data.ref`` names it by its dotted
path, seeded from ``data.source`` like the Delta default). One run checks both, end to end: the family
trained, the version registered with that backend's version as its lineage, and the served HTTP answers
equal to onnxruntime's on the registered graph."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from raymlops.config import compose
from raymlops.data.refs import open_backend, parse_version

pytestmark = pytest.mark.slow

PLUGIN_CONFIGS = Path(__file__).resolve().parents[1] / "plugins" / "configs"
BACKEND = "tests.plugins.external_backend:SnapshotFolderBackend"


def test_an_outside_family_on_an_outside_backend_runs_the_quickstart(tmp_path: Path, serve_port: int) -> None:
    import onnxruntime as ort

    from raymlops.models.export import onnx_feeds
    from raymlops.pipeline.runner import run_pipeline
    from raymlops.registry.lineage import lineage_of
    from raymlops.registry.mlflow_registry import ModelRegistry

    table = tmp_path / "flights-snapshots"
    cfg = compose(
        [
            "+experiment=quickstart",
            f"hydra.searchpath=[file://{PLUGIN_CONFIGS}]",
            "model=external_linear",  # tests/plugins/configs/model/external_linear.yaml
            f"data.ref={BACKEND}:{table}",
            f"state_dir={tmp_path / 'state'}",
            f"serve.port={serve_port}",
            "data.sample_fraction=0.05",
            "ray.progress_bars=false",
            "evaluate.gates=['test/auc>=0.55']",
            "explain.background_rows=20",
            "explain.rows=20",
        ]
    )
    _, state = run_pipeline(cfg)
    assert type(state.train.model).__name__ == "LinearFamily"

    seeded = open_backend(f"{BACKEND}:{table}").resolve()  # v0, written from data.source by the job
    assert (seeded.backend, seeded.version) == (BACKEND, "0")
    registry = ModelRegistry.from_config(cfg.registry)
    [version] = registry.versions(cfg.registry.model_name)
    assert version.version == state.register.version == "1"
    lineage = lineage_of(registry, cfg.registry.model_name, version.version)
    assert lineage.data_version == str(seeded)
    assert parse_version(lineage.data_version, "lineage") == seeded  # and it reads back the same rows

    sample = state.features.raw_sample.slice(0, 20)
    columns = state.export.input_columns
    session = ort.InferenceSession(str(state.register.onnx_path), providers=["CPUExecutionProvider"])
    expected = session.run(["probability"], onnx_feeds(sample, columns))[0]
    records = [{k: row[k] for k in columns} for row in sample.to_pylist()]
    url = f"{state.deploy.url}/v1/models/{cfg.registry.model_name}/predict"
    response = httpx.post(url, json={"records": records}, timeout=30)
    assert response.status_code == 200, response.text
    served = np.array([p["probability"] for p in response.json()["predictions"]])
    np.testing.assert_allclose(served, expected, atol=1e-6)
