"""Online serving: one Ray Serve router hosting every live ONNX version (DESIGN §4).

The router itself is ``raymlops.serving.app.Router``: not re-exported here, so that the package stays
below the app that builds on it.

``import raymlops.serving`` imports neither ray, onnxruntime nor pyarrow: ``spec`` and ``deploy`` are
light at import time, the rest resolves on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported eagerly on purpose: the submodule ``deploy`` shares its name with the function, and a lazy
# lookup would hand out the module once anything had imported ``raymlops.serving.deploy``.
from raymlops.serving.deploy import deploy, sample_requests
from raymlops.serving.policy import RoutePolicy, Shadow, Sticky
from raymlops.serving.spec import ModelSpec, build_user_config, choose_version, parse_user_config

__all__ = [
    "LoadedModel",
    "ModelSpec",
    "RoutePolicy",
    "Shadow",
    "Sticky",
    "build_user_config",
    "choose_version",
    "deploy",
    "parse_records",
    "parse_user_config",
    "records_to_table",
    "sample_requests",
]

_LAZY = {
    "LoadedModel": "onnx_model",
    "parse_records": "protocols.v1",
    "records_to_table": "protocols.v1",
}

if TYPE_CHECKING:
    from raymlops.serving.onnx_model import LoadedModel
    from raymlops.serving.protocols.v1 import parse_records, records_to_table


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
