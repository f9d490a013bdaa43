"""What a model trained with feature views needs from the online store at serving time.

A ``FeatureLookup`` travels with the model: registered as the ``raymlops.feature_lookup`` tag (JSON,
beside ``raymlops.feature_views``, the views' data versions) and read back into its ``ModelSpec`` for the
router. Per view it names the entity columns the request must carry, the stored features to fetch, and
the features derived from them at the request's event time (``age_at_event``); the model's other inputs
still come from the request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from raymlops.errors import ConfigError
from raymlops.settings_model import validate_settings

if TYPE_CHECKING:
    from raymlops.features.views import FeatureView

__all__ = ["FeatureLookup", "ViewLookup", "lookup_for_config", "lookup_for_views"]


_KEY = "serving.models.feature_lookup"


class _ViewShape(BaseModel):
    """One view of a lookup as the ``raymlops.feature_lookup`` tag and ``user_config`` carry it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    view: str = Field(min_length=1, description="must be a non-empty view name")
    entities: list[str] = []
    features: list[str] = []
    derived: dict[str, str] = {}


class _LookupShape(BaseModel):
    """A lookup: its views (each a :class:`_ViewShape`) and the event-time column."""

    model_config = ConfigDict(extra="forbid", strict=True)
    unknown_problem: ClassVar[str] = "is not a lookup setting."

    views: list[Any] = Field(description="must be a list of views")
    event_time: str | None = None


@dataclass(frozen=True)
class ViewLookup:
    """One view's part of a lookup.

    Attributes:
        view: The feature view (its name in the online store).
        entities: Its entity key columns, which the request carries.
        features: Stored features to fetch, each a model input.
        derived: Model input -> stored year feature: ``year(event time) - value`` (``age_at_event``).
    """

    view: str
    entities: tuple[str, ...]
    features: tuple[str, ...] = ()
    derived: dict[str, str] = field(default_factory=dict)

    @property
    def fetched(self) -> tuple[str, ...]:
        """Every stored feature the lookup reads."""
        return tuple(dict.fromkeys([*self.features, *self.derived.values()]))

    @property
    def columns(self) -> tuple[str, ...]:
        """The model inputs this view supplies."""
        return (*self.features, *self.derived)


@dataclass(frozen=True)
class FeatureLookup:
    """The views a model's inputs come from, and the request column holding the event time."""

    views: tuple[ViewLookup, ...]
    event_time: str | None = None  # needed only when a view derives a feature at the event time

    def __post_init__(self) -> None:
        key = _KEY
        if not self.views:
            raise ConfigError(key, "names no view: a model without views has no lookup (null).")
        names = [v.view for v in self.views]
        if len(set(names)) != len(names):
            raise ConfigError(key, f"lists a view twice: {names}.")
        supplied = [c for v in self.views for c in v.columns]
        if len(set(supplied)) != len(supplied):
            raise ConfigError(key, f"two views supply the same column: {supplied}.")
        if any(v.derived for v in self.views) and not self.event_time:
            raise ConfigError(f"{key}.event_time", "is needed by a feature derived at the event time.")

    @property
    def columns(self) -> frozenset[str]:
        """Model inputs the store supplies (the request need not carry them)."""
        return frozenset(c for v in self.views for c in v.columns)

    def request_columns(self, input_columns: Mapping[str, str]) -> dict[str, str]:
        """What a request must carry: the model's other inputs, every entity key, the event time."""
        supplied = self.columns
        columns = {c: k for c, k in input_columns.items() if c not in supplied}
        for view in self.views:
            for entity in view.entities:
                columns.setdefault(entity, "string")
        if self.event_time and any(v.derived for v in self.views):
            columns.setdefault(self.event_time, "string")  # ISO 8601, as JSON carries instants
        return columns

    def to_dict(self) -> dict[str, Any]:
        views = [
            _ViewShape.model_construct(
                view=v.view, entities=list(v.entities), features=list(v.features), derived=v.derived
            ).model_dump()
            for v in self.views
        ]
        return _LookupShape.model_construct(views=views, event_time=self.event_time).model_dump()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> FeatureLookup:
        if isinstance(data, FeatureLookup):
            return data
        if isinstance(data, str):
            data = json.loads(data)
        shape = validate_settings(_LookupShape, data, _KEY)
        views = []
        for i, raw in enumerate(shape.views):
            view = validate_settings(_ViewShape, raw, f"{_KEY}.views[{i}]")
            views.append(ViewLookup(view.view, tuple(view.entities), tuple(view.features), view.derived))
        return cls(tuple(views), shape.event_time)


def lookup_for_views(
    views: Sequence[FeatureView], input_columns: Mapping[str, str], event_time: str
) -> FeatureLookup | None:
    """The lookup of a model with ``input_columns`` trained on ``views``; None when it uses none of them.

    Views none of whose columns the model takes are left out: serving never fetches what it ignores.
    """
    lookups = []
    for view in views:
        features = tuple(f for f in view.features if f in input_columns)
        derived = {out: year for out, year in view.age_at_event.items() if out in input_columns}
        if features or derived:
            lookups.append(ViewLookup(view.name, tuple(view.entities), features, derived))
    if not lookups:
        return None
    return FeatureLookup(tuple(lookups), event_time if any(v.derived for v in lookups) else None)


def lookup_for_config(cfg: Any, input_columns: Mapping[str, str]) -> FeatureLookup | None:
    """``lookup_for_views`` of a job config's ``features.views`` (None when it names none)."""
    names = [str(n) for n in cfg.features.views]
    if not names:
        return None
    from raymlops.features.views import load_views

    views = load_views(names, state_dir=str(cfg.state_dir), check_columns=False)
    return lookup_for_views(views, input_columns, str(cfg.features.event_time))
