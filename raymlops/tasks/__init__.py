"""Tasks: the one concept that knows the shape of the problem (binary, multiclass, regression).

Every other room asks the task — label preparation, loss and objective, the graph's outputs, metrics and
their direction, the constant baseline, the answer's fields — instead of branching on its name.
"""

from __future__ import annotations

from raymlops.tasks.base import OutputSpec, Task
from raymlops.tasks.codec import task_from_dict, task_from_json, task_to_json
from raymlops.tasks.registry import TASKS, task_class

__all__ = ["TASKS", "OutputSpec", "Task", "task_class", "task_from_dict", "task_from_json", "task_to_json"]
