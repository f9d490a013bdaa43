"""What the registry holds for a monitored version: its training profile, the reference distribution of
its predictions and its test metrics (the monitor compares a window with these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raymlops.data.profile import Profile
from raymlops.data.stats import table_stats
from raymlops.errors import ModelNotFoundError
from raymlops.monitoring.window_stats import PROBABILITY
from raymlops.registry.tags import INPUT_COLUMNS_TAG

__all__ = ["PREDICTION_PROFILE", "PROFILE", "VersionInfo", "prediction_profile", "version_info"]

PROFILE = "profile.json"  # the training data's profile, a model file of every version (register stage)
# The test split's served-probability distribution as a Profile with one column, "probability"; a model
# file when the register stage records it (see prediction_profile), else the first window is the reference.
PREDICTION_PROFILE = "prediction_profile.json"


def prediction_profile(probabilities: Any, data_version: str) -> Profile:
    """The profile of a set of predicted probabilities (e.g. a version's test split): the reference
    :func:`run_monitor` compares served probabilities with when saved as :data:`PREDICTION_PROFILE`."""
    table = pa.table({PROBABILITY: pa.array(np.asarray(probabilities, dtype=np.float64))})
    return Profile.from_stats(table_stats(table), table.num_rows, data_version, [PROBABILITY])


@dataclass
class VersionInfo:
    registered: Any = None  # RegisteredVersion
    profile: Profile | None = None
    prediction_reference: Profile | None = None
    prediction_reference_path: str | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    input_columns: list[str] | None = None
    problems: list[str] = field(default_factory=list)


def _artifact(registry: Any, version: Any, filename: str) -> Path | None:
    try:
        path = registry.local_artifact(version, filename)
    except Exception:  # a remote store without the file: download_artifacts raises
        return None
    return path if path.exists() else None


def version_info(registry: Any, model: str, version: str, split: str) -> VersionInfo:
    info = VersionInfo()
    try:
        registered = registry.version(model, version)
    except ModelNotFoundError:
        info.problems.append(f"v{version} is not in the registry: no profile, no test metrics")
        return info
    info.registered = registered
    tag = registered.tags.get(INPUT_COLUMNS_TAG)
    if tag:
        info.input_columns = [part.split(":", 1)[0] for part in tag.split(",") if part]
    profile_path = _artifact(registry, registered, PROFILE)
    if profile_path is None:
        info.problems.append(f"v{version} has no {PROFILE}: feature drift not computed")
    else:
        info.profile = Profile.load(profile_path)
    predictions_path = _artifact(registry, registered, PREDICTION_PROFILE)
    if predictions_path is not None:
        reference = Profile.load(predictions_path)
        if PROBABILITY in reference.columns:
            info.prediction_reference = reference
            info.prediction_reference_path = str(predictions_path)
        else:
            info.problems.append(f"v{version}: {PREDICTION_PROFILE} has no {PROBABILITY!r} column: ignored")
    try:
        metrics = registry.client.get_run(registered.run_id).data.metrics
    except Exception as exc:  # a deleted run: the version is still monitored
        info.problems.append(f"v{version}: its run {registered.run_id} cannot be read ({exc})")
        metrics = {}
    for name in ("accuracy", "auc"):
        value = metrics.get(f"test/{name}", metrics.get(f"{split}/{name}"))
        if value is not None:
            info.test_metrics[name] = float(value)
    return info
