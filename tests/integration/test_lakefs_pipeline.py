"""A newcomer's table through the whole pipeline on ``lakefs://``: the lakeFS stand-in (credentials
required, pre-signed URLs offered, as a lakeFS on S3) instead of the embedded Delta table.

``raymlops init`` writes the table's configs; ``raymlops data ingest`` writes the file to a candidate
branch, audits it with the table's rules and merges it into main; the job then reads main, validates,
trains, evaluates, exports and registers a version whose data version is main's merge commit.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raymlops.cli.main import main
from tests.fakes.lakefs_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, start_fake_lakefs
from tests.task_tables import binary_yes_no

STAGES = "stages=[ingest,validate,features,train,evaluate,export,register]"
AFFORDABLE = ["model=xgboost", "model.num_boost_round=20", "trainer.scaling.num_workers=1"]


def test_lakefs_ingest_publishes_through_a_branch_and_the_job_registers_the_merge_commit(
    ray_local, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    from raymlops.config import compose
    from raymlops.pipeline.runner import run_pipeline
    from raymlops.registry.tags import DATA_VERSION_TAG

    fake = start_fake_lakefs(pre_sign=True)
    try:
        fake.create_repository("churn-data")
        source = tmp_path / "churn.parquet"
        pq.write_table(binary_yes_no(1_200), source)
        configs = tmp_path / "configs"
        assert main(["init", "--data", str(source), "--label", "target", "--out", str(configs)]) == 0
        # Credentials from the environment, as data.lakefs documents: never in a config file.
        monkeypatch.setenv("LAKEFS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        monkeypatch.setenv("LAKEFS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        overrides = [
            f"hydra.searchpath=[file://{configs}]",
            "+experiment=churn",
            "data.ref=lakefs://churn-data/main/tables/churn",
            f"data.lakefs.host={fake.url}",
            f"state_dir={tmp_path / 'state'}",
        ]
        assert main(["data", "ingest", str(source), *overrides]) == 0
        assert "published: lakefs://churn-data/" in capsys.readouterr().out
        repo = fake.repos["churn-data"]
        head = repo.commits[repo.branches["main"]]
        assert len(head.parents) == 2  # a merge: the rows were written and audited on a candidate branch
        assert set(repo.branches) == {"main"}  # ... which publishing removed
        assert any(r.path.endswith("/branches") and r.method == "POST" for r in fake.requests)

        cfg = compose([*overrides, STAGES, *AFFORDABLE])
        _, state = run_pipeline(cfg)
        registered = state.require("register")
        version = MlflowClient(cfg.registry.tracking_uri).get_model_version(
            registered.model_name, registered.version
        )
        assert version.tags[DATA_VERSION_TAG] == f"lakefs://churn-data/{head.id}/tables/churn"
        assert state.require("ingest").num_rows == 1_200
        assert {method for method, _ in fake.store.hits} == {"GET", "PUT"}  # bytes via pre-signed URLs
    finally:
        fake.close()
