"""Settings validated by a pydantic model, with errors in the house's form: the key, the problem, and the
valid choices ("did you mean") — pydantic's own message names neither the config path nor the choices.

A settings class declares its shape once as a pydantic model (``extra="forbid"``, strict types) and
calls :func:`validate_settings` with its config prefix, instead of a hand-written unknown-key check and
one ``isinstance`` test per field. A field whose ``description`` starts with "must" gives that text as
its error ("must be an integer >= 1, got 0."); a shape's ``missing_noun`` class variable names what a
missing entry is ("missing field(s): ...", default "key"), its ``unknown_problem`` what an unknown key
is told (default "is not a setting here.").
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from raymlops.errors import ConfigError

__all__ = ["settings_error", "validate_settings"]

M = TypeVar("M")


def _choices(model: Any, name: str) -> tuple[str, ...] | None:
    field = model.model_fields.get(name)
    if field is None or typing.get_origin(field.annotation) is not typing.Literal:
        return None
    return tuple(str(c) for c in typing.get_args(field.annotation))


def _description(model: Any, loc: tuple[Any, ...]) -> str | None:
    """A top-level field's own error text (its description when it starts with "must")."""
    field = model.model_fields.get(str(loc[0])) if len(loc) == 1 else None
    text = getattr(field, "description", None) or ""
    return text if text.startswith("must") else None


def settings_error(model: Any, exc: Any, prefix: str, *, extra_prefix: str | None = None) -> ConfigError:
    """The first of a pydantic ``ValidationError``'s errors as a :class:`ConfigError` under ``prefix``
    (an unknown key under ``extra_prefix`` when given: the router names those ``serving.user_config``)."""
    errors = exc.errors()
    error = errors[0]
    path = ".".join(str(part) for part in error["loc"])
    key = f"{prefix}.{path}" if path else prefix
    fields = tuple(model.model_fields)
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        problem = getattr(model, "unknown_problem", "is not a setting here.")
        return ConfigError(f"{extra_prefix or prefix}.{path}", problem, fields)
    if error["type"] == "missing" and len(error["loc"]) == 1:
        missing = sorted(str(e["loc"][0]) for e in errors if e["type"] == "missing" and len(e["loc"]) == 1)
        noun = getattr(model, "missing_noun", "key")
        return ConfigError(prefix, f"missing {noun}(s): {', '.join(missing)}.")
    choices = _choices(model, str(error["loc"][0])) if len(error["loc"]) == 1 else None
    if choices is not None:
        return ConfigError(key, f"{value!r} is not one of {', '.join(choices)}.", choices)
    own = _description(model, tuple(error["loc"]))
    if own is not None:
        return ConfigError(key, f"{own}, got {value!r}.")
    return ConfigError(key, f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {value!r}.")


def validate_settings(
    model: type[M], data: Mapping[str, Any], prefix: str, *, extra_prefix: str | None = None
) -> M:
    """``model`` validated from ``data``; a bad or unknown key is a ConfigError naming ``prefix.key``."""
    from pydantic import ValidationError

    if not isinstance(data, Mapping):
        fields = ", ".join(model.model_fields)
        raise ConfigError(prefix, f"must be a mapping of {fields}, got {data!r}.")
    try:
        return model.model_validate(dict(data))  # type: ignore[attr-defined]
    except ValidationError as exc:
        raise settings_error(model, exc, prefix, extra_prefix=extra_prefix) from None
