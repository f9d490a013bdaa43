"""Plug-in points kept as data: per kind, a name -> ``module:Class`` map, with a dotted-path fallback.

A shipped implementation is found by its short name in its kind's map (e.g. ``raymlops.data.versioning.
BACKENDS``); a name that is not in the map may itself be a dotted path ``package.module:Class``, so a
user's own implementation is named in config without editing the package. Modules are imported only
when a name is resolved, so listing a kind costs nothing.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

from raymlops.errors import ConfigError, did_you_mean

__all__ = ["DOTTED_PATH", "is_dotted_path", "load_object", "resolve_plugin"]

# ``package.module:Class`` (the attribute may be nested: ``module:Outer.Inner``).
DOTTED_PATH = re.compile(r"^[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


def is_dotted_path(name: str) -> bool:
    return bool(DOTTED_PATH.match(name))


def load_object(path: str, key: str) -> Any:
    """The object a ``module:attribute`` path names; a ConfigError naming ``key`` when it cannot be had."""
    if not is_dotted_path(path):
        raise ConfigError(key, f"{path!r} is not a dotted path of the form package.module:Class.")
    module_name, _, attribute = path.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(key, f"cannot import {module_name!r} (from {path!r}): {exc}.") from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigError(key, f"module {module_name!r} has no {attribute!r} (from {path!r}).") from None
    return found


def resolve_plugin(name: str, registry: Mapping[str, str], kind: str, key: str) -> Any:
    """The implementation ``name`` stands for: a registered name, else a dotted path ``module:Class``.

    Raises:
        ConfigError: ``name`` is neither (naming the registered ones, with a "did you mean"), or its
            module cannot be imported.
    """
    if name in registry:
        return load_object(registry[name], key)
    if is_dotted_path(name):
        return load_object(name, key)
    raise ConfigError(
        key,
        f"{name!r} is not a {kind}: name one of the registered ones or a dotted path package.module:Class."
        + did_you_mean(str(name), registry),
    )
