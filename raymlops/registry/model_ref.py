"""Model references (``name@alias``, ``name@3``, ``name``) and their resolution in the registry.

The one parser the batch job, the serve CLI and operations share.
"""

from __future__ import annotations

from dataclasses import dataclass

from raymlops.errors import ConfigError, ModelNotFoundError
from raymlops.registry.mlflow_registry import ModelRegistry, RegisteredVersion

__all__ = ["DEFAULT_ALIAS", "ModelRef", "parse_model_ref", "resolve_model"]

DEFAULT_ALIAS = "champion"


@dataclass(frozen=True)
class ModelRef:
    """``<name>@<alias>``, ``<name>@<version>`` (also ``@v<version>``) or ``<name>`` (= ``@champion``)."""

    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.version if self.version is not None else self.alias}"


_MODEL_FORMS = "<name>@<alias>, <name>@<version> or <name> (= <name>@champion)"


def parse_model_ref(ref: str, default_name: str | None = None) -> ModelRef:
    """Parse a model reference; an empty name (``@challenger``) means ``default_name``."""
    text = ref.strip()
    name, sep, pin = text.rpartition("@") if "@" in text else (text, "", "")
    name = name or (default_name or "")
    if not name:
        raise ConfigError("model", f"{ref!r} names no model: use {_MODEL_FORMS}.")
    if sep and not pin:
        raise ConfigError("model", f"{ref!r} has an empty alias or version after '@': use {_MODEL_FORMS}.")
    pin = pin or DEFAULT_ALIAS
    number = pin[1:] if pin[:1] in "vV" else pin  # MLflow reserves v<N> as a version, never an alias
    if number.isdigit():
        return ModelRef(name, version=str(int(number)))
    return ModelRef(name, alias=pin)


def resolve_model(registry: ModelRegistry, ref: ModelRef) -> RegisteredVersion:
    """The registered version ``ref`` names; an unknown one lists the aliases and versions that exist."""
    if ref.version is not None:
        return registry.version(ref.name, ref.version)
    assert ref.alias is not None
    found = registry.by_alias(ref.name, ref.alias)
    if found is not None:
        return found
    versions = registry.versions(ref.name)  # ModelNotFoundError naming the models when there is none
    aliases = {alias: v.version for v in versions for alias in v.aliases}
    available = [f"{ref.name}@{a} (version {v})" for a, v in aliases.items()]
    available += [f"{ref.name}@{v.version}" for v in versions]
    raise ModelNotFoundError(f"{ref.name}@{ref.alias}", available) from None
