"""Lineage of a registered version: the exact data version, code, config and reports behind it.

Recorded as version tags by the register stage; ``lineage_of`` reads them back and ``training_config``
returns the run's resolved config after checking it against the digest recorded at registration,
so "which data and which settings made this model" has one checked answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from raymlops.errors import GovernanceError
from raymlops.registry.mlflow_registry import ModelRegistry, RegisteredVersion
from raymlops.registry.tags import (
    CONFIG_DIGEST_TAG,
    DATA_VERSION_TAG,
    ENV_TAG,
    EVALUATION_REPORT_TAG,
    FEEDBACK_VERSION_TAG,
    GIT_SHA_TAG,
    LIFECYCLE_TAG,
    PARENT_TAG,
    RUN_ID_TAG,
    SEED_TAG,
    VALIDATION_REPORT_TAG,
)

__all__ = ["LINEAGE_TAGS", "Lineage", "lineage_of", "training_config"]

# Lineage field -> the version tag that holds it.
LINEAGE_TAGS = {
    "data_version": DATA_VERSION_TAG,
    "git_sha": GIT_SHA_TAG,
    "config_digest": CONFIG_DIGEST_TAG,
    "job_run_id": RUN_ID_TAG,
    "env": ENV_TAG,
    "seed": SEED_TAG,
    "parent": PARENT_TAG,
    "validation_report": VALIDATION_REPORT_TAG,
    "evaluation_report": EVALUATION_REPORT_TAG,
    "lifecycle": LIFECYCLE_TAG,
    "feedback_version": FEEDBACK_VERSION_TAG,  # empty unless a retrain learnt from feedback
}


@dataclass(frozen=True)
class Lineage:
    model: str
    version: str
    mlflow_run_id: str
    data_version: str
    git_sha: str
    config_digest: str
    job_run_id: str
    env: str
    seed: str
    parent: str
    validation_report: str
    evaluation_report: str
    lifecycle: str
    aliases: tuple[str, ...]
    feedback_version: str = ""  # the feedback table's version a retrain learnt from, if any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lineage_of(registry: ModelRegistry, name: str, version: str) -> Lineage:
    found: RegisteredVersion = registry.version(name, version)
    values = {field: found.tags.get(tag, "") for field, tag in LINEAGE_TAGS.items()}
    values["lifecycle"] = found.lifecycle
    return Lineage(
        model=name, version=found.version, mlflow_run_id=found.run_id, aliases=found.aliases, **values
    )


def training_config(registry: ModelRegistry, lineage: Lineage) -> dict[str, Any]:
    """The resolved job config that trained the version, verified against its recorded digest."""
    from mlflow.artifacts import download_artifacts
    from omegaconf import OmegaConf

    from raymlops.registry.tracking import config_digest

    path = download_artifacts(
        run_id=lineage.mlflow_run_id, artifact_path="config.yaml", tracking_uri=registry.tracking_uri
    )
    with open(path) as handle:
        text = handle.read()
    if lineage.config_digest and config_digest(text) != lineage.config_digest:
        raise GovernanceError(
            f"{lineage.model} v{lineage.version}: the run's config.yaml no longer matches the digest "
            f"recorded at registration ({lineage.config_digest}); the artifact store was modified."
        )
    config = OmegaConf.to_container(OmegaConf.create(text))
    assert isinstance(config, dict)
    return {str(k): v for k, v in config.items()}
