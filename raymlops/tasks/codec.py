"""A task as text: what lineage and the registry's ``raymlops.task`` tag hold, and back.

A version registered before tasks existed has no tag; it was the flights binary task (a label made by a
threshold, answered as 0 / 1), so an empty text reads back as that.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from raymlops.errors import ConfigError
from raymlops.tasks.base import Task
from raymlops.tasks.binary import BinaryTask
from raymlops.tasks.registry import task_class

__all__ = ["LEGACY_TASK", "task_from_dict", "task_from_json", "task_to_json"]

LEGACY_TASK = BinaryTask(threshold=0.0)


def task_to_json(task: Task) -> str:
    """Canonical JSON of ``task.describe()`` (sorted keys, no spaces): equal tasks give equal text."""
    return json.dumps(task.describe(), sort_keys=True, separators=(",", ":"))


def task_from_dict(description: Mapping[str, Any]) -> Task:
    """The task a ``describe()`` dict stands for; an empty dict is the legacy binary task."""
    if not description:
        return LEGACY_TASK
    name = description.get("task")
    if not isinstance(name, str):
        raise ConfigError("task", f"{dict(description)!r} names no task (a 'task' key).")
    return task_class(name).from_description(description)


def task_from_json(text: str | None) -> Task:
    """The task recorded as ``text`` by :func:`task_to_json`; None or "" is the legacy binary task."""
    if not text:
        return LEGACY_TASK
    try:
        description = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("task", f"{text!r} is not a recorded task (JSON): {exc}.") from None
    if not isinstance(description, dict):
        raise ConfigError("task", f"{text!r} is not a recorded task (a JSON object).")
    return task_from_dict(description)
