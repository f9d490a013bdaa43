"""Out-of-distribution inputs: request values far outside the training data's profile.

At deploy time (on the driver) ``input_profile`` reduces the training profile registered with a
version (``profile.json``, :class:`raymlops.data.profile.Profile`) to what a replica needs, a few
numbers per input column, carried in the version's ``ModelSpec.input_profile``:

- a numeric column: ``{"q01": ..., "q99": ...}``, its 1st and 99th training percentiles;
- a string column: ``{"categories": [...]}``, every category seen in training, when the profile
  lists them all (at most ``TOP_CATEGORIES``; beyond that an unseen category cannot be told from a
  rare one, and the column is not checked).

Per request the replica flags a row's value as out of distribution when it lies outside
``[q01 - m * IQR99, q99 + m * IQR99]`` with ``IQR99 = q99 - q01`` and ``m = serve.ood.range_margin``,
or is a category never seen in training. Missing values (null, NaN, "") are never flagged: the graph
imputes them as it did in training. ``action: flag`` answers with the flags; ``action: reject``
refuses the request with 422 naming the column, the value and the bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from raymlops.errors import ConfigError, RequestError
from raymlops.settings_model import validate_settings

if TYPE_CHECKING:
    from raymlops.data.profile import Profile
    from raymlops.serving.model_inputs import ModelInputs

__all__ = ["OOD_ACTIONS", "OODCheck", "OODSettings", "input_profile"]

OOD_ACTIONS = ("flag", "reject")


class _OODShape(BaseModel):
    """``serve.ood``'s shape: what :class:`OODSettings` accepts."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool = True
    action: Literal["flag", "reject"] = "flag"
    # inter-quantile ranges beyond [q01, q99]
    range_margin: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0


@dataclass(frozen=True)
class OODSettings:
    """``serve.ood``: whether to check, what to do with a flagged row, and the range margin."""

    enabled: bool = True
    action: str = "flag"
    range_margin: float = 1.0

    def __post_init__(self) -> None:
        validate_settings(_OODShape, asdict(self), "serve.ood")

    def to_dict(self) -> dict[str, Any]:
        data = _OODShape.model_construct(**asdict(self)).model_dump()
        return {**data, "range_margin": float(data["range_margin"])}

    @classmethod
    def from_dict(cls, data: Any) -> OODSettings:
        if data is None:
            return cls()
        if isinstance(data, OODSettings):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(
                "serve.ood",
                f'must be {{"enabled": bool, "action": "flag"|"reject", "range_margin": M}}, got {data!r}.',
            )
        values = dict(data)
        if "action" in values and not isinstance(values["action"], str):  # an OODAction enum from Hydra
            values["action"] = getattr(values["action"], "value", values["action"])
        shape = validate_settings(_OODShape, values, "serve.ood")
        return cls(shape.enabled, shape.action, shape.range_margin)


def input_profile(profile: Profile, input_columns: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The per-column reference a replica checks requests against (see the module docstring).

    Columns the profile lacks, has no values for, or (strings) does not list completely are left out:
    they are not checked.
    """
    from raymlops.data.profile import OTHER

    reference: dict[str, dict[str, Any]] = {}
    for column, kind in input_columns.items():
        feature = profile.columns.get(column)
        if feature is None:
            continue
        if kind == "float" and feature.kind == "numeric" and feature.quantiles:
            q01, q99 = feature.quantiles[1], feature.quantiles[99]
            reference[column] = {"q01": float(q01), "q99": float(q99)}
        elif kind == "string" and feature.kind == "categorical" and feature.complete:
            categories = sorted(c for c in (feature.frequencies or {}) if c != OTHER)
            reference[column] = {"categories": categories}
    return reference


def check_input_profile(key: str, reference: Any) -> dict[str, dict[str, Any]] | None:
    """Validate a ``ModelSpec.input_profile`` as it comes from ``user_config``; raises ConfigError."""
    if reference is None:
        return None
    if not isinstance(reference, Mapping):
        raise ConfigError(key, f"must map column -> {{q01, q99}} or {{categories}}, got {reference!r}.")
    checked: dict[str, dict[str, Any]] = {}
    for column, entry in reference.items():
        where = f"{key}.{column}"
        if isinstance(entry, Mapping) and set(entry) == {"q01", "q99"}:
            q01, q99 = entry["q01"], entry["q99"]
            if not all(
                isinstance(q, int | float) and not isinstance(q, bool) and math.isfinite(q)
                for q in (q01, q99)
            ):
                raise ConfigError(where, f"q01 and q99 must be finite numbers, got {q01!r}, {q99!r}.")
            if q01 > q99:
                raise ConfigError(where, f"q01 {q01!r} is above q99 {q99!r}.")
            checked[str(column)] = {"q01": float(q01), "q99": float(q99)}
        elif isinstance(entry, Mapping) and set(entry) == {"categories"}:
            categories = entry["categories"]
            if not isinstance(categories, list | tuple) or not all(isinstance(c, str) for c in categories):
                raise ConfigError(where, f"categories must be a list of strings, got {categories!r}.")
            checked[str(column)] = {"categories": sorted(categories)}
        else:
            raise ConfigError(
                where, f'must be {{"q01": X, "q99": Y}} or {{"categories": [...]}}, got {entry!r}.'
            )
    return checked


class OODCheck:
    """A version's bounds at one margin, precomputed once per routing table (per ``reconfigure``)."""

    def __init__(self, reference: Mapping[str, Mapping[str, Any]], margin: float) -> None:
        self.ranges: dict[str, tuple[float, float]] = {}
        self.categories: dict[str, frozenset[str]] = {}
        for column, entry in reference.items():
            if "categories" in entry:
                self.categories[column] = frozenset(entry["categories"])
            else:
                q01, q99 = float(entry["q01"]), float(entry["q99"])
                spread = margin * (q99 - q01)
                self.ranges[column] = (q01 - spread, q99 + spread)

    def flags(self, inputs: ModelInputs) -> list[list[str]]:
        """Per row, the columns whose value is out of distribution (in input order; [] when none)."""
        rows: list[list[str]] = [[] for _ in range(inputs.rows)]
        for column in inputs.columns:  # the spec's order, so that answers list columns stably
            values = inputs.columns[column]
            bounds = self.ranges.get(column)
            if bounds is not None:
                array = np.asarray(values, dtype=np.float64)
                # NaN (a missing value) compares false both ways: never flagged.
                for row in np.flatnonzero((array < bounds[0]) | (array > bounds[1])).tolist():
                    rows[row].append(column)
                continue
            seen = self.categories.get(column)
            if seen is not None:
                for row, value in enumerate(values):
                    if value and value not in seen:  # None and "" are missing values
                        rows[row].append(column)
        return rows

    def refusal(self, inputs: ModelInputs, flags: list[list[str]]) -> RequestError:
        """The 422 for ``action: reject``: the first flagged row's first column, its value and bound."""
        row = next(i for i, columns in enumerate(flags) if columns)
        column = flags[row][0]
        value = inputs.columns[column][row]
        flagged = sum(1 for columns in flags if columns)
        if column in self.ranges:
            low, high = self.ranges[column]
            why = f"value {float(value):g} is outside the training range [{low:g}, {high:g}]"
        else:
            seen = sorted(self.categories[column])
            shown = ", ".join(map(repr, seen[:10])) + (", ..." if len(seen) > 10 else "")
            why = f"category {value!r} was never seen in training (seen: {shown})"
        return RequestError(
            f"out-of-distribution input: row {row} column {column!r}: {why}; {flagged} of "
            f"{inputs.rows} row(s) flagged. This version refuses such rows (serve.ood.action=reject): "
            "send values within the training profile, or deploy with serve.ood.action=flag.",
            status=422,
        )
