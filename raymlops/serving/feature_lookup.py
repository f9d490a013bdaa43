"""Serving-time feature lookup: a request's entity keys -> the model's feature inputs, from the online store.

The router validates a request against the model's *request* columns (``FeatureLookup.request_columns``:
its other inputs, the entity keys, the event time when a feature is derived from it), then
``with_features`` fetches every view's rows for the whole batch in one store round trip and completes
the model inputs. An entity the store does not hold gets nulls, which the graph imputes exactly as the
training pipeline imputed a row the point-in-time join found nothing for; the answer lists, per row,
the views that were missing (``imputed``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np

from raymlops.errors import RequestError
from raymlops.features.online.base import OnlineStore, entity_key
from raymlops.features.online.lookup import FeatureLookup
from raymlops.serving.model_inputs import ModelInputs, describe

__all__ = ["with_features"]


def _event_years(values: Any, column: str) -> np.ndarray:
    """UTC years of the request's event times (ISO 8601 strings; null -> NaN, so the age is imputed)."""
    years = np.full(len(values), np.nan)
    for index, value in enumerate(values):
        if value is None:
            continue
        try:
            instant = dt.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise RequestError(
                f"record {index} column {column!r} must be an ISO 8601 time such as "
                f"2013-12-31T08:00:00Z, got {describe(value)}."
            ) from None
        years[index] = (instant.astimezone(dt.timezone.utc) if instant.tzinfo else instant).year
    return years


def _as_float(value: Any) -> float:
    if value is None:
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan  # a stored value the graph cannot take numerically: imputed like a missing one


def with_features(
    request: ModelInputs, lookup: FeatureLookup, input_columns: Mapping[str, str], store: OnlineStore
) -> tuple[ModelInputs, list[list[str]]]:
    """The model inputs of a validated request, its features fetched in one store round trip.

    Returns:
        The inputs in ``input_columns`` order, and per row the views whose entity was not found.

    Raises:
        OnlineStoreError: The store cannot be read (the router answers 503).
        RequestError: An event time that is not an ISO 8601 instant (422).
    """
    keys = {
        view.view: [
            entity_key(values) for values in zip(*(request.columns[e] for e in view.entities), strict=True)
        ]
        for view in lookup.views
    }
    found = store.lookup(keys)
    columns: dict[str, Any] = {}
    imputed: list[list[str]] = [[] for _ in range(request.rows)]
    for view in lookup.views:
        rows = found[view.view]
        for index, row in enumerate(rows):
            if row is None:
                imputed[index].append(view.view)
        for feature in view.features:
            values = [None if row is None else row.get(feature) for row in rows]
            if input_columns[feature] == "float":
                columns[feature] = np.array([_as_float(v) for v in values], dtype=np.float64)
            else:
                columns[feature] = [None if v is None else str(v) for v in values]
        if view.derived:
            assert lookup.event_time is not None  # FeatureLookup checks it
            years = _event_years(request.columns[lookup.event_time], lookup.event_time)
            for output, year_feature in view.derived.items():
                stored = np.array([_as_float(None if r is None else r.get(year_feature)) for r in rows])
                columns[output] = years - stored
    inputs = ModelInputs(
        input_columns,
        {name: columns[name] if name in columns else request.columns[name] for name in input_columns},
        request.rows,
        request.nan_is_null,
    )
    return inputs, imputed
