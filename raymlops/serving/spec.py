"""What the router serves: one ``ModelSpec`` per live version, carried in Serve's ``user_config``.

``build_user_config`` (driver side) and ``parse_user_config`` (replica side) apply the same checks,
so a bad routing table fails in ``deploy()`` before anything reaches the cluster, and a replica
never swaps in a table it cannot serve.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raymlops.errors import ConfigError

__all__ = [
    "INPUT_KINDS",
    "ModelSpec",
    "RoutingConfig",
    "build_user_config",
    "choose_version",
    "parse_user_config",
]

INPUT_KINDS = ("float", "string")  # the wire types of a served graph's raw-column inputs


@dataclass(frozen=True)
class ModelSpec:
    """One servable model version.

    Attributes:
        name: The model name clients call (``/v1/models/{name}/predict``).
        version: The registry version; returned in the ``model-version`` header.
        onnx_path: Path of the composed ONNX graph (preprocessing + model), readable by every replica.
        data_version: Version of the data the model was trained on; returned in ``data-version``.
        input_columns: Raw column -> ``"float"`` or ``"string"``, as the graph's inputs expect.
        weight: Relative share of the name's traffic (0 = loaded but not routed to).
        threshold: ``label = probability >= threshold``.
    """

    name: str
    version: str
    onnx_path: str
    data_version: str
    input_columns: dict[str, str]
    weight: float = 1.0
    threshold: float = 0.5

    def __post_init__(self) -> None:
        key = f"serving.models[{self.name!r}]"
        for field in ("name", "version", "onnx_path"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{key}.{field}", f"must be a non-empty string, got {value!r}.")
        if not isinstance(self.data_version, str):
            raise ConfigError(f"{key}.data_version", f"must be a string, got {self.data_version!r}.")
        if not self.input_columns:
            raise ConfigError(f"{key}.input_columns", "is empty: the graph needs at least one input column.")
        for column, kind in self.input_columns.items():
            if kind not in INPUT_KINDS:
                raise ConfigError(
                    f"{key}.input_columns.{column}", f"kind {kind!r} is not one of {', '.join(INPUT_KINDS)}."
                )
        if not (isinstance(self.weight, int | float) and math.isfinite(self.weight) and self.weight >= 0):
            raise ConfigError(f"{key}.weight", f"must be a finite number >= 0, got {self.weight!r}.")
        if not (isinstance(self.threshold, int | float) and 0.0 <= self.threshold <= 1.0):
            raise ConfigError(f"{key}.threshold", f"must be in [0, 1], got {self.threshold!r}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (Serve's ``user_config`` must be JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Inverse of ``to_dict``; unknown keys are an error, so a typo does not pass silently."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(
                f"serving.models[{data.get('name')!r}].{unknown[0]}", "is not a ModelSpec field.", fields
            )
        missing = sorted(
            f.name for f in dataclasses.fields(cls) if f.name not in data and f.default is dataclasses.MISSING
        )
        if missing:
            raise ConfigError(
                f"serving.models[{data.get('name')!r}]", f"missing field(s): {', '.join(missing)}."
            )
        values = dict(data)
        values["input_columns"] = dict(values["input_columns"])
        return cls(**values)


@dataclass(frozen=True)
class RoutingConfig:
    """The router's whole state from ``user_config``: specs per name plus request limits."""

    models: dict[str, tuple[ModelSpec, ...]]
    use_gpu: bool = False
    max_rows_per_request: int = 10_000


def choose_version(specs: Sequence[ModelSpec], rng: random.Random) -> ModelSpec:
    """Pick the version that answers one request: a weighted random choice on ``weight``.

    This is the seam where canary, shadow and sticky routing plug in.
    """
    if len(specs) == 1:
        return specs[0]
    return rng.choices(specs, weights=[s.weight for s in specs])[0]


def _check_routing(models: Mapping[str, tuple[ModelSpec, ...]]) -> None:
    for name, specs in models.items():
        if not specs:
            raise ConfigError(f"serving.models[{name!r}]", "has no version: drop the name or add a version.")
        versions = [s.version for s in specs]
        duplicates = sorted({v for v in versions if versions.count(v) > 1})
        if duplicates:
            raise ConfigError(
                f"serving.models[{name!r}]", f"version(s) listed twice: {', '.join(duplicates)}."
            )
        if any(s.name != name for s in specs):
            raise ConfigError(f"serving.models[{name!r}]", "holds a spec whose name differs from its key.")
        if sum(s.weight for s in specs) <= 0:
            raise ConfigError(
                f"serving.models[{name!r}].weight",
                "all versions have weight 0: at least one must take traffic.",
            )


def build_user_config(
    models: Iterable[ModelSpec], *, use_gpu: bool = False, max_rows_per_request: int = 10_000
) -> dict[str, Any]:
    """The ``user_config`` dict for the router: ``{"models": {name: [spec, ...]}, ...}``."""
    grouped: dict[str, list[ModelSpec]] = {}
    for spec in models:
        grouped.setdefault(spec.name, []).append(spec)
    if max_rows_per_request < 1:
        raise ConfigError("serving.max_rows_per_request", f"must be >= 1, got {max_rows_per_request}.")
    _check_routing({name: tuple(specs) for name, specs in grouped.items()})
    return {
        "models": {name: [s.to_dict() for s in specs] for name, specs in grouped.items()},
        "use_gpu": bool(use_gpu),
        "max_rows_per_request": int(max_rows_per_request),
    }


def parse_user_config(user_config: Mapping[str, Any]) -> RoutingConfig:
    """Validate a ``user_config`` dict (as ``build_user_config`` makes) into a ``RoutingConfig``."""
    known = {"models", "use_gpu", "max_rows_per_request"}
    unknown = sorted(set(user_config) - known)
    if unknown:
        raise ConfigError(f"serving.user_config.{unknown[0]}", "is not a router setting.", known)
    raw_models = user_config.get("models", {})
    if not isinstance(raw_models, Mapping):
        raise ConfigError("serving.user_config.models", f"must map name -> [spec, ...], got {raw_models!r}.")
    models = {name: tuple(ModelSpec.from_dict(s) for s in specs) for name, specs in raw_models.items()}
    _check_routing(models)
    max_rows = user_config.get("max_rows_per_request", 10_000)
    if not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 1:
        raise ConfigError("serving.max_rows_per_request", f"must be an integer >= 1, got {max_rows!r}.")
    return RoutingConfig(
        models=models, use_gpu=bool(user_config.get("use_gpu", False)), max_rows_per_request=max_rows
    )
