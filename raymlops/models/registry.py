"""Model families by name, kept as data, with a dotted-path fallback for a user's own.

``model._target_`` names the family: a registered name (``torch_mlp``), ``package.module:Class`` or
Hydra's ``package.module.Class``. A family outside this package needs no edit here: its class (a
:class:`~raymlops.models.family.ModelFamily`) and a YAML in a config folder of its own, chosen with
``hydra.searchpath=[file:///path/to/configs] model=<file>`` (docs/plugins.md). Nothing is imported until
a family is asked for, so reading this module costs nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from raymlops.errors import ConfigError
from raymlops.models.family import ModelFamily
from raymlops.plugins import resolve_plugin

__all__ = ["FAMILIES", "build_model", "family_class", "family_of", "family_parameters", "model_params"]

# name -> "module:Class". A shipped family is one line here plus configs/model/<name>.yaml.
FAMILIES: dict[str, str] = {
    "torch_mlp": "raymlops.models.torch_mlp:TorchMLP",
    "xgboost": "raymlops.models.xgboost_model:XGBoostModel",
}


def family_class(ref: str, key: str = "model._target_") -> type[ModelFamily]:
    """The family class ``ref`` names: a key of :data:`FAMILIES`, ``module:Class`` or ``module.Class``.

    Raises:
        ConfigError: ``ref`` names no importable class, or a class that is not a ``ModelFamily``.
    """
    if ref not in FAMILIES and ":" not in ref and "." in ref:  # Hydra's spelling of a _target_
        module_name, _, attribute = ref.rpartition(".")
        ref = f"{module_name}:{attribute}"
    found = resolve_plugin(ref, FAMILIES, "model family", key)
    if not (isinstance(found, type) and issubclass(found, ModelFamily)):
        raise ConfigError(
            key,
            f"{ref!r} is not a model family: subclass raymlops.models.family.ModelFamily (docs/plugins.md).",
        )
    return found


def family_of(model_cfg: Any) -> type[ModelFamily]:
    """The family class of a ``model`` config (its ``_target_``)."""
    target = model_cfg.get("_target_") if model_cfg is not None else None
    if not target:
        raise ConfigError(
            "model._target_", "is not set: name a family, e.g. model=torch_mlp.", list(FAMILIES)
        )
    return family_class(str(target))


def family_parameters(cls: type[ModelFamily]) -> list[str]:
    """The constructor parameters of ``cls``: the keys its ``model`` config may have."""
    signature = inspect.signature(cls.__init__)
    return [
        name
        for name, p in signature.parameters.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def model_params(model_cfg: Any) -> dict[str, Any]:
    """The ``model`` config as plain constructor arguments, without Hydra's ``_target_``."""
    plain = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else model_cfg
    assert isinstance(plain, Mapping), "the model config is a mapping"
    return {str(k): v for k, v in plain.items() if not str(k).startswith("_")}


def build_model(model_cfg: Any, **overrides: Any) -> ModelFamily:
    """A new, unfitted model of the configured family; ``overrides`` replace config keys (Tune's trials).

    Raises:
        ConfigError: An unknown family, or a key that is not a parameter of it (with "did you mean").
    """
    cls = family_of(model_cfg)
    params = {**model_params(model_cfg), **overrides}
    allowed = family_parameters(cls)
    for name in params:
        if name not in allowed:
            raise ConfigError(
                f"model.{name}",
                f"{name!r} is not a parameter of {cls.__module__}:{cls.__qualname__}.",
                allowed,
            )
    return cls(**params)
