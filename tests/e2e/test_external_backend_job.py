"""The real job command reads its data through a backend defined only in a test module: the quickstart
with ``data.ref`` naming tests/plugins/external_backend.py by its dotted path, seeded from
``data.source`` like the Delta default, and a registered version whose lineage is that backend's
version. Nothing in the package names the backend; config alone does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from raymlops.config import compose
from raymlops.data.refs import open_backend, parse_version
from raymlops.registry.lineage import lineage_of
from raymlops.registry.mlflow_registry import ModelRegistry

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BACKEND = "tests.plugins.external_backend:SnapshotFolderBackend"


def test_the_quickstart_runs_on_a_backend_named_in_config(tmp_path: Path) -> None:
    state, table = tmp_path / "state", tmp_path / "flights-snapshots"
    overrides = [
        "+experiment=quickstart",
        f"state_dir={state}",
        f"data.ref={BACKEND}:{table}",
        "data.sample_fraction=0.05",
        "model.epochs=1",
        "evaluate.gates=['test/auc>=0.5']",
        "ray.progress_bars=false",
        "stages=[ingest,validate,features,train,evaluate,export,register]",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "RAYMLOPS_HOME": str(state),
        "RAYMLOPS_PROGRESS": "0",
        "RAY_ADDRESS": "",
    }
    done = subprocess.run(
        [sys.executable, "-m", "raymlops.job", *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    seeded = open_backend(f"{BACKEND}:{table}").resolve()  # v0, written from data.source by the job
    assert (seeded.backend, seeded.version) == (BACKEND, "0")
    cfg = compose(overrides)
    registry = ModelRegistry.from_config(cfg.registry)
    (version,) = registry.versions(cfg.registry.model_name)
    lineage = lineage_of(registry, cfg.registry.model_name, version.version)
    assert lineage.data_version == str(seeded)
    assert parse_version(lineage.data_version, "lineage") == seeded  # and it reads back the same rows
