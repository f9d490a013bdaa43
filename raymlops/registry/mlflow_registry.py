"""MLflow tracking + Model Registry: runs with params, metrics per epoch, artifacts, and lineage-tagged
model versions. Embedded default: a SQLite file and a local artifact folder; a tracking server at scale."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from raymlops.errors import ModelNotFoundError

__all__ = ["ModelRegistry", "RegisteredVersion"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    source: str  # artifact URI of the model folder
    tags: dict[str, str]


class ModelRegistry:
    """A thin, typed layer over ``MlflowClient`` for what raymlops records."""

    def __init__(self, tracking_uri: str, artifact_root: str, experiment: str) -> None:
        self.tracking_uri, self.artifact_root, self.experiment = tracking_uri, artifact_root, experiment

    @property
    def client(self):  # -> mlflow.MlflowClient
        if not hasattr(self, "_client"):
            from mlflow import MlflowClient

            if self.tracking_uri.startswith("sqlite:///"):
                Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        # An explicit artifact location: MLflow's default is ./mlruns under the working directory.
        location = Path(self.artifact_root).expanduser().resolve() / self.experiment
        return self.client.create_experiment(self.experiment, artifact_location=location.as_uri())

    def register_version(
        self, *, model_name: str, run_id: str, model_files: Sequence[Path], tags: Mapping[str, str]
    ) -> RegisteredVersion:
        """Log ``model_files`` into the run's ``model`` folder and register that folder as a new version.

        If anything fails no version is created (the caller's run is closed FAILED by its tracker).
        """
        client = self.client
        for path in model_files:
            client.log_artifact(run_id, str(path), artifact_path="model")
        if not self._has_model(model_name):
            client.create_registered_model(model_name, description="Registered by raymlops.")
        source = f"{client.get_run(run_id).info.artifact_uri}/model"
        version = client.create_model_version(model_name, source=source, run_id=run_id, tags=dict(tags))
        logger.info("registered model=%s version=%s run_id=%s", model_name, version.version, run_id)
        return RegisteredVersion(model_name, str(version.version), run_id, source, dict(tags))

    def _has_model(self, name: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            return False
        return True

    def versions(self, name: str) -> list[RegisteredVersion]:
        """Every version of ``name``, oldest first."""
        if not self._has_model(name):
            known = [m.name for m in self.client.search_registered_models()]
            raise ModelNotFoundError(name, known)
        found = self.client.search_model_versions(f"name='{name}'")
        return sorted(
            (RegisteredVersion(v.name, str(v.version), v.run_id, v.source, dict(v.tags)) for v in found),
            key=lambda v: int(v.version),
        )

    def model_names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    def local_artifact(self, version: RegisteredVersion, filename: str) -> Path:
        """The local path of a file in a version's model folder (embedded store: a file URI)."""
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        if version.source.startswith("file:"):
            return Path(url2pathname(urlparse(version.source).path)) / filename
        from mlflow.artifacts import download_artifacts

        return Path(download_artifacts(f"{version.source}/{filename}", tracking_uri=self.tracking_uri))
