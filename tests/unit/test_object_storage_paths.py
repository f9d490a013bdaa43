"""Where state goes on object storage: experiment artifact locations and deltalake's S3 options.

The end-to-end checks (a real S3 endpoint and tracking server) are tests/integration/test_object_storage.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from raymlops.data.delta import storage_options
from raymlops.registry.mlflow_registry import ModelRegistry


@pytest.mark.parametrize(
    ("root", "location"),
    [
        ("s3://bucket/mlflow/", "s3://bucket/mlflow/dev-flights"),  # was folded into a local "s3:/" path
        ("gs://bucket/mlflow", "gs://bucket/mlflow/dev-flights"),
        ("mlflow-artifacts:/", "mlflow-artifacts:/dev-flights"),  # proxied by a tracking server
        ("file:///srv/artifacts", "file:///srv/artifacts/dev-flights"),
        ("", None),  # the tracking server's default
    ],
)
def test_artifact_location_of_a_uri_root_is_kept(root: str, location: str | None) -> None:
    registry = ModelRegistry("http://127.0.0.1:5000", root, "dev-flights")
    assert registry._artifact_location() == location


def test_artifact_location_of_a_local_root_is_an_absolute_file_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    registry = ModelRegistry("sqlite:///x.db", "state/artifacts", "dev-flights")
    assert registry._artifact_location() == (tmp_path / "state/artifacts/dev-flights").as_uri()


@pytest.mark.parametrize(
    ("uri", "env", "options"),
    [
        ("s3://b/t", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}, {"AWS_ALLOW_HTTP": "true"}),
        ("s3://b/t", {"AWS_ENDPOINT_URL_S3": "http://minio:9000"}, {"AWS_ALLOW_HTTP": "true"}),
        ("s3://b/t", {"AWS_ENDPOINT_URL": "https://s3.example.com"}, None),
        ("s3://b/t", {}, None),  # AWS itself: TLS
        # The operator's own setting wins (deltalake reads it from the environment).
        ("s3://b/t", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ALLOW_HTTP": "false"}, None),
        ("/data/flights", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}, None),
    ],
)
def test_delta_allows_http_only_for_an_http_endpoint_the_operator_named(
    uri: str, env: dict[str, str], options: dict[str, str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ALLOW_HTTP"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert storage_options(uri) == options
