"""YAML scalars and flow lists written by hand, so init's configs keep their comments and order.

Every string is quoted (``NO``, ``yes``, ``on`` and ``1.0`` stay strings whatever YAML version reads
them); a string holding ``${`` is escaped so OmegaConf does not take it for an interpolation.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["ceil_fraction", "flow_list", "key", "outward", "scalar"]

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# Words YAML 1.1 (PyYAML, OmegaConf) reads as booleans or null: they stay strings only when quoted.
_SPECIAL = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"})


def _number(value: float) -> str:
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    text = repr(value)  # the shortest text that reads back as exactly this float
    if "e" in text and "." not in text:
        text = text.replace("e", ".0e")  # YAML 1.1 floats need a dot: 1e-05 would read as a string
    return text


def scalar(value: Any) -> str:
    """One YAML scalar that reads back as ``value`` (in OmegaConf, interpolations escaped)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number(value) if math.isfinite(value) else "null"
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _SPECIAL:
        return text  # bare, as the shipped configs write names
    if "${" in text:  # single-quoted: a backslash is literal there, and OmegaConf reads \${ as ${
        return "'" + text.replace("'", "''").replace("${", "\\${") + "'"
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def key(name: str) -> str:
    """A mapping key: bare when YAML reads it back as the same string, else quoted."""
    return scalar(name)


def outward(value: float, up: bool, digits: int = 4) -> float:
    """``value`` rounded to ``digits`` significant digits away from the data (down for a minimum, up for
    a maximum): a readable bound the observed value still satisfies."""
    if value == 0 or not math.isfinite(value):
        return value
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(abs(value))))
    bound = (math.ceil(value * scale) if up else math.floor(value * scale)) / scale
    if (bound < value) if up else (bound > value):  # float error: step once more outward
        bound += (1 if up else -1) / scale
    return bound


def flow_list(values: list[Any]) -> str:
    """``[a, b]`` with each item a :func:`scalar`."""
    return "[" + ", ".join(scalar(v) for v in values) + "]"


def ceil_fraction(value: float, places: int = 4) -> float:
    """``value`` rounded up at ``places`` decimals: a limit the observed fraction never exceeds."""
    if value <= 0:
        return 0.0
    scale = 10**places
    limit = math.ceil(value * scale - 1e-9) / scale
    return limit if limit >= value else limit + 1 / scale
