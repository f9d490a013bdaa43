"""Task name -> class, kept as data; a ``module:Class`` path names a task outside the package."""

from __future__ import annotations

import importlib

from raymlops.errors import ConfigError
from raymlops.tasks.base import Task

__all__ = ["TASKS", "task_class"]

TASKS = {
    "binary": "raymlops.tasks.binary:BinaryTask",
    "multiclass": "raymlops.tasks.multiclass:MulticlassTask",
    "regression": "raymlops.tasks.regression:RegressionTask",
}


def task_class(name: str) -> type[Task]:
    """The class a task name (or a ``module:Class`` path) stands for."""
    path = TASKS.get(name, name if ":" in name else None)
    if path is None:
        raise ConfigError("features.task", f"{name!r} is not a task.", [*TASKS, "auto"])
    module, _, attr = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("features.task", f"{path!r} cannot be imported: {exc}.") from None
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError("features.task", f"{path!r} is not a raymlops.tasks.Task subclass.")
    return cls
