"""What the registry holds for a monitored version: its task, training profile, the reference distribution
of its predictions and its test metrics (the monitor compares a window with these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from raymlops.data.profile import Profile
from raymlops.data.stats import table_stats
from raymlops.errors import ModelNotFoundError
from raymlops.monitoring.prediction_log import prediction_kind
from raymlops.monitoring.window_stats import PREDICTED_CLASS, PROBABILITY, VALUE
from raymlops.registry.tags import INPUT_COLUMNS_TAG, TASK_TAG

if TYPE_CHECKING:
    from raymlops.tasks.base import Task

__all__ = [
    "PREDICTION_PROFILE",
    "PROFILE",
    "STATISTIC_COLUMNS",
    "VersionInfo",
    "prediction_profile",
    "prediction_profile_from_stats",
    "prediction_statistic_table",
    "statistic_column",
    "version_info",
]

PROFILE = "profile.json"  # the training data's profile, a model file of every version (register stage)
# The test split's prediction statistic as a Profile with one column (statistic_column: "probability"
# for binary as it always was, "value", "predicted_class"); a model file when the register stage records
# it (see prediction_profile), else the first window is the reference.
PREDICTION_PROFILE = "prediction_profile.json"
# The column of the prediction log's statistics (window_stats) that holds a task's prediction statistic.
STATISTIC_COLUMNS = {"probability": PROBABILITY, "value": VALUE, "classes": PREDICTED_CLASS}


def statistic_column(task: Task | None) -> str:
    """Where a task's prediction statistic is, in the window's statistics and the reference profile."""
    return STATISTIC_COLUMNS[prediction_kind(task)]


def prediction_profile(pred: Any, data_version: str, task: Task | None = None) -> Profile:
    """The profile of a version's predictions (e.g. its test split; ``pred`` in the task's shape): the
    reference :func:`run_monitor` compares served predictions with when saved as
    :data:`PREDICTION_PROFILE`. Binary (and ``task`` None): the probabilities; regression: the values;
    multiclass: the answered classes (``task.prediction_statistic``, as categories)."""
    table = prediction_statistic_table(pred, task)
    return prediction_profile_from_stats(table_stats(table), table.num_rows, data_version, task)


def prediction_statistic_table(pred: Any, task: Task | None = None) -> pa.Table:
    """The one column :func:`prediction_profile` profiles, for ``pred`` (rows of the task's output): its
    ``table_stats`` per block merge (``ColumnStats.merge``) into the statistics of all the rows."""
    column = statistic_column(task)
    values = np.asarray(pred, dtype=np.float64)
    statistic = task.prediction_statistic(values) if task is not None else values.reshape(-1)
    if column == PREDICTED_CLASS:
        array = pa.array(statistic.astype(np.int64)).cast(pa.string())
    else:
        array = pa.array(statistic.astype(np.float64))
    return pa.table({column: array})


def prediction_profile_from_stats(
    stats: dict[str, Any], rows: int, data_version: str, task: Task | None = None
) -> Profile:
    """:func:`prediction_profile` from the (merged) statistics of :func:`prediction_statistic_table`."""
    return Profile.from_stats(stats, rows, data_version, [statistic_column(task)])


@dataclass
class VersionInfo:
    registered: Any = None  # RegisteredVersion
    task: Task | None = None  # None: not registered (read as the legacy binary task)
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
    from raymlops.tasks.codec import task_from_json

    try:
        info.task = task_from_json(registered.tags.get(TASK_TAG))  # absent: the flights binary task
    except Exception as exc:  # a tag a newer raymlops wrote: monitored as far as the log allows
        info.problems.append(f"v{version}: its {TASK_TAG} tag cannot be read ({exc}): read as binary")
    tag = registered.tags.get(INPUT_COLUMNS_TAG)
    if tag:
        info.input_columns = [part.split(":", 1)[0] for part in tag.split(",") if part]
    profile_path = _artifact(registry, registered, PROFILE)
    if profile_path is None:
        info.problems.append(f"v{version} has no {PROFILE}: feature drift not computed")
    else:
        info.profile = Profile.load(profile_path)
    predictions_path = _artifact(registry, registered, PREDICTION_PROFILE)
    column = statistic_column(info.task)
    if predictions_path is not None:
        reference = Profile.load(predictions_path)
        if column in reference.columns:
            info.prediction_reference = reference
            info.prediction_reference_path = str(predictions_path)
        else:
            info.problems.append(f"v{version}: {PREDICTION_PROFILE} has no {column!r} column: ignored")
    try:
        metrics = registry.client.get_run(registered.run_id).data.metrics
    except Exception as exc:  # a deleted run: the version is still monitored
        info.problems.append(f"v{version}: its run {registered.run_id} cannot be read ({exc})")
        metrics = {}
    from raymlops.tasks.codec import LEGACY_TASK

    for name in (info.task or LEGACY_TASK).live_metrics():
        value = metrics.get(f"test/{name}", metrics.get(f"{split}/{name}"))
        if value is not None:
            info.test_metrics[name] = float(value)
    return info
