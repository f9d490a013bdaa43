"""A model card's data: plain JSON-able fields, so a card can be written next to a run, stored as a
registry artifact and rebuilt from it later (:meth:`ModelCard.to_json` / :meth:`ModelCard.from_json`)."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CARD_FORMAT", "NOT_RECORDED", "SHAP_PNG_NAME", "ModelCard", "jsonable"]

SHAP_PNG_NAME = "shap_summary.png"
NOT_RECORDED = "not recorded"
CARD_FORMAT = 1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ModelCard:
    """Everything a model card shows, as plain data.

    ``metrics``/``baseline``/``champion["metrics"]`` map metric names (``"test/auc"``) to floats on the
    same test split; ``baseline`` is a constant predictor and ``champion`` the current champion re-scored
    on that data. ``slices`` maps a slice column to rows ``{"value": str, "rows": int, <metric>: float}``.
    ``gates`` is a list of ``{"gate", "passed", "detail"}``. ``shap_png`` is the bytes of a PNG.
    ``task`` is the task's ``describe()`` plus ``why`` (how it was chosen) and, for a binary task, the
    serving ``decision`` threshold; ``directions`` maps a metric's last name to "higher" or "lower"
    (which way is better); ``picture`` is the task's picture of the test predictions
    (:mod:`raymlops.evaluation.model_card.picture`). Empty strings, empty collections and ``None`` mean
    "not recorded".
    """

    model_name: str
    version: str
    created: str = ""
    intended_use: str = ""
    limitations: list[str] = field(default_factory=list)
    training_data: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    slices: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)
    champion: dict[str, Any] | None = None
    shap: dict[str, Any] | None = None
    shap_png: bytes | None = None
    validation: dict[str, Any] | None = None
    lineage: dict[str, str] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    directions: dict[str, str] = field(default_factory=dict)
    picture: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.shap_png is not None and not bytes(self.shap_png).startswith(_PNG_SIGNATURE):
            raise ValueError("ModelCard.shap_png must be the bytes of a PNG image (bad signature).")

    @property
    def gates_passed(self) -> bool | None:
        """True if every gate passed, False if any failed, None if no gate was recorded."""
        if not self.gates:
            return None
        return all(bool(gate.get("passed")) for gate in self.gates)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: ``shap_png`` becomes ``shap_png_base64``; NaN and infinities become None."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "shap_png"}
        data = jsonable(data)
        data["shap_png_base64"] = (
            base64.b64encode(self.shap_png).decode("ascii") if self.shap_png is not None else None
        )
        data["card_format"] = CARD_FORMAT
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """The inverse of :meth:`to_dict`; keys this version does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)} - {"shap_png"}
        kwargs = {k: v for k, v in data.items() if k in known}
        encoded = data.get("shap_png_base64")
        kwargs["shap_png"] = base64.b64decode(encoded) if encoded else None
        return cls(**kwargs)

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON (no NaN); the SHAP PNG is kept, base64-encoded, under ``shap_png_base64``."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        return cls.from_dict(json.loads(text))


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: NaN and infinities become None, bytes base64, others str."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)
