"""RunContext: what every stage of one run shares (identity, config, folders, lineage)."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

__all__ = ["RunContext", "git_sha", "package_versions"]

_TRACKED_PACKAGES = (
    "raymlops",
    "ray",
    "torch",
    "xgboost",
    "pyarrow",
    "deltalake",
    "onnx",
    "onnxruntime-gpu",
    "onnxruntime",
    "mlflow",
    "hydra-core",
)


def git_sha(cwd: Path | None = None) -> str:
    """The commit of the code that runs, with '-dirty' if the tree has changes; 'unknown' outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class RunContext:
    """Identity and shared state of one pipeline run.

    ``figures`` collects the key numbers each stage wants in the final summary table and
    ``lineage`` what a registered model must record to be reproduced.
    """

    cfg: DictConfig
    run_id: str = field(
        default_factory=lambda: (
            dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        )
    )
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    tracker: Any = None  # the job's MLflow run (registry.tracking.JobTracker) once the pipeline starts
    # resume=<run>: the data version the failed run read; ingest reads it instead of resolving data.ref.
    pinned_data_version: str | None = None

    @property
    def state_dir(self) -> Path:
        return Path(self.cfg.state_dir)

    @property
    def run_dir(self) -> Path:
        path = self.state_dir / "runs" / self.run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def record(self, stage: str, **figures: Any) -> None:
        """Key figures of a stage for the summary table (e.g. rows=..., auc=...)."""
        self.figures.setdefault(stage, {}).update(figures)
