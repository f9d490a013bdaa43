"""MLflow tracking + Model Registry: runs with params, metrics per epoch, artifacts, and lineage-tagged
model versions. Embedded default: a SQLite file and a local artifact folder; a tracking server at scale."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raymlops.errors import GovernanceError, ModelNotFoundError
from raymlops.registry.tags import ENV_TAG, LIFECYCLE_TAG
from raymlops.security.names import safe_name

__all__ = ["ModelRegistry", "RegisteredVersion", "check_owner"]

logger = logging.getLogger(__name__)

# s3://, gs://, file:, mlflow-artifacts:/; two letters at least, so C:\ stays a path.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    source: str  # artifact URI of the model folder
    tags: dict[str, str]
    aliases: tuple[str, ...] = field(default=())

    @property
    def lifecycle(self) -> str:
        return self.tags.get(LIFECYCLE_TAG, "candidate")


def _version(v: Any) -> RegisteredVersion:  # v: mlflow ModelVersion
    aliases = tuple(sorted(getattr(v, "aliases", ()) or ()))
    return RegisteredVersion(v.name, str(v.version), v.run_id, v.source, dict(v.tags), aliases)


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float = 60.0) -> Iterator[None]:
    """An exclusive lock on ``path`` (``filelock``: ``flock`` on POSIX): registry writes take turns.

    MLflow has no compare-and-set for aliases and SQLite refuses concurrent writers ("database is
    locked"); every raymlops registry write goes through this lock, held for milliseconds.
    """
    import filelock

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with filelock.FileLock(path, timeout=timeout_s, poll_interval=0.02):
            yield
    except filelock.Timeout:
        raise GovernanceError(
            f"The registry lock {path} was held for more than {timeout_s:.0f} s; "
            "another raymlops process is stuck holding it."
        ) from None


def check_owner(name: str, owner: str | None, env: str) -> None:
    """Refuse a change to a model that another env owns: an experiment (env=dev) must not move a
    prod alias, register into prod's model or change its lifecycle. A model without owner is open."""
    if owner is not None and owner != env:
        raise GovernanceError(
            f"{name} belongs to env={owner}; this run is env={env} and may not change it. "
            f"Run with env={owner}, or use this env's own model name (registry.model_name)."
        )


class ModelRegistry:
    """A thin, typed layer over ``MlflowClient`` for what raymlops records."""

    def __init__(
        self, tracking_uri: str, artifact_root: str, experiment: str, lock_path: str | None = None
    ) -> None:
        self.tracking_uri, self.artifact_root, self.experiment = tracking_uri, artifact_root, experiment
        if lock_path is None and tracking_uri.startswith("sqlite:///"):
            lock_path = tracking_uri.removeprefix("sqlite:///") + ".lock"
        self.lock_path = Path(lock_path).expanduser() if lock_path else None

    @classmethod
    def from_config(cls, cfg: Any) -> ModelRegistry:  # cfg: the job's ``registry`` config group
        return cls(cfg.tracking_uri, cfg.artifact_root, cfg.experiment, cfg.get("lock_path"))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise registry writes across processes (a no-op without a lock path)."""
        if self.lock_path is None:
            yield
            return
        with file_lock(self.lock_path):
            yield

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
        return self.client.create_experiment(self.experiment, artifact_location=self._artifact_location())

    def _artifact_location(self) -> str | None:
        """Where the experiment's artifacts go: ``<artifact_root>/<experiment>``.

        A local folder becomes a file URI (MLflow's default would be ./mlruns under the working
        directory); a URI (``s3://bucket/prefix``: the client writes to S3 itself; ``mlflow-artifacts:/``:
        through a tracking server started with ``--artifacts-destination``) is kept as it is, since
        ``Path`` would fold ``s3://`` into ``s3:/``; an empty root leaves the choice to the server.
        """
        root = self.artifact_root.strip()
        if not root:
            return None
        if _URI.match(root):
            return f"{root.rstrip('/')}/{self.experiment}"
        return (Path(root).expanduser().resolve() / self.experiment).as_uri()

    def register_version(
        self,
        *,
        model_name: str,
        run_id: str,
        model_files: Sequence[Path],
        tags: Mapping[str, str],
        env: str | None = None,
    ) -> RegisteredVersion:
        """Log ``model_files`` into the run's ``model`` folder and register that folder as a new version.

        A new registered model belongs to ``env`` (tag ``raymlops.env``); a model of another env is
        refused before anything is logged (``Governance.check_env``).
        If anything fails no version is created (the caller's run is closed FAILED by its tracker).
        """
        safe_name(model_name, "model name")
        if env is not None and self._has_model(model_name):
            check_owner(model_name, self.client.get_registered_model(model_name).tags.get(ENV_TAG), env)
        client = self.client
        for path in model_files:
            client.log_artifact(run_id, str(path), artifact_path="model")
        source = f"{client.get_run(run_id).info.artifact_uri}/model"
        with self.locked():  # two jobs registering at once both succeed with distinct versions
            if not self._has_model(model_name):
                client.create_registered_model(
                    model_name,
                    description="Registered by raymlops.",
                    tags={ENV_TAG: env} if env is not None else None,
                )
            version = client.create_model_version(model_name, source=source, run_id=run_id, tags=dict(tags))
        logger.info("registered model=%s version=%s run_id=%s", model_name, version.version, run_id)
        return _version(version)

    def _has_model(self, name: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            return False
        return True

    def versions(self, name: str) -> list[RegisteredVersion]:
        """Every version of ``name``, oldest first, with its aliases."""
        safe_name(name, "model name")  # also keeps quotes out of the MLflow filter string below
        if not self._has_model(name):
            known = [m.name for m in self.client.search_registered_models()]
            raise ModelNotFoundError(name, known)
        # search_model_versions leaves ``aliases`` empty: take them from the registered model.
        held: dict[str, list[str]] = {}
        for alias, version in (self.client.get_registered_model(name).aliases or {}).items():
            held.setdefault(str(version), []).append(alias)
        found = self.client.search_model_versions(f"name='{name}'")
        return sorted(
            (
                dataclasses.replace(_version(v), aliases=tuple(sorted(held.get(str(v.version), []))))
                for v in found
            ),
            key=lambda v: int(v.version),
        )

    def version(self, name: str, version: str) -> RegisteredVersion:
        """One version; an unknown name or version is a ModelNotFoundError listing what exists."""
        safe_name(str(version), "model version")
        known = self.versions(name)
        for v in known:
            if v.version == str(version):
                return v
        raise ModelNotFoundError(f"{name} v{version}", [f"{name} v{v.version}" for v in known])

    def by_alias(self, name: str, alias: str) -> RegisteredVersion | None:
        """The version holding ``alias``, or None when no version holds it."""
        from mlflow.exceptions import MlflowException

        safe_name(name, "model name")
        safe_name(alias, "alias")
        if not self._has_model(name):
            return None
        try:
            return _version(self.client.get_model_version_by_alias(name, alias))
        except MlflowException:
            return None

    def model_names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    def local_artifact(self, version: RegisteredVersion, filename: str) -> Path:
        """The local path of a file in a version's model folder (``filename``: safe names joined by
        ``/``; ``..``, absolute paths and the like are refused).

        Embedded store (a file URI): the file where it lies. Remote store (``s3://``, a tracking
        server's ``mlflow-artifacts:/``): the whole model folder is downloaded once per version into a
        temporary folder, so the files read beside the ONNX graph (``profile.json`` for the OOD checks,
        the explainer) are there too.
        """
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        for part in filename.split("/"):  # a file in a sub-folder ("explainer/explainer.json") is fine
            safe_name(part, "artifact file name")
        if version.source.startswith("file:"):
            return Path(url2pathname(urlparse(version.source).path)) / filename
        from raymlops.registry.downloads import model_folder

        return model_folder(version.source, self.tracking_uri) / filename
