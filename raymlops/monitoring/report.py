"""One monitor run's findings: the JSON report and its text summary."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["MonitorReport", "shown_metric"]


def shown_metric(accuracy: dict[str, Any]) -> str:
    """The live metric a one-line summary shows: accuracy where the task has it, else its primary one."""
    live = accuracy.get("live") or {}
    return "accuracy" if "accuracy" in live else str(accuracy.get("primary") or "accuracy")


@dataclass(frozen=True)
class MonitorReport:
    """What one monitor run found. ``to_dict()`` is the JSON report, ``summary()`` the text one."""

    model: str
    selector: str | None  # the alias or version asked for; None: every version in the window
    since: str
    until: str
    generated_at: float  # unix seconds
    log_root: str
    read_with: str  # "pyarrow" | "ray_data"
    rows: int
    versions: dict[str, dict[str, Any]]
    alerts: tuple[dict[str, str], ...]
    warnings: tuple[str, ...]
    thresholds: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.alerts

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "selector": self.selector,
            "window": {"since": self.since, "until": self.until},
            "generated_at": self.generated_at,
            "log_root": self.log_root,
            "read_with": self.read_with,
            "rows": self.rows,
            "ok": self.ok,
            "alerts": list(self.alerts),
            "warnings": list(self.warnings),
            "thresholds": self.thresholds,
            "versions": _finite_json(self.versions),
        }

    def summary(self) -> str:
        lines = [
            f"monitor {self.model}{'@' + self.selector if self.selector else ''} "
            f"[{self.since}, {self.until}): {self.rows:,} rows, {len(self.versions)} version(s), "
            f"read with {self.read_with}: {'OK' if self.ok else f'{len(self.alerts)} ALERT(S)'}"
        ]
        for version, entry in self.versions.items():
            aliases = f" ({', '.join(entry['aliases'])})" if entry.get("aliases") else ""
            routes = ", ".join(f"{r} {n:,}" for r, n in sorted(entry["rows"].items())) or "no rows"
            parts = [f"v{version}{aliases}: {routes}"]
            drift = entry["feature_drift"]
            if drift.get("features"):
                drifted = drift["drifted_features"]
                shown = ", ".join(f"{c} psi {drift['features'][c]['psi']:.3f}" for c in drifted[:4])
                parts.append(
                    f"drift {len(drifted)}/{len(drift['features'])} features{': ' if shown else ''}{shown}"
                )
            prediction = entry["prediction_drift"]
            if prediction.get("psi") is not None:
                new = " (set by this window)" if prediction.get("established_now") else ""
                parts.append(f"predictions psi {prediction['psi']:.3f} vs {prediction['reference']}{new}")
            accuracy = entry["accuracy"]
            name = shown_metric(accuracy)
            live, test = accuracy["live"].get(name), accuracy["test"].get(name)
            if live is not None:
                versus = f" vs test {test:.3f}" if test is not None else ""
                parts.append(f"live {name} {live:.3f}{versus} ({accuracy['rows']:,} labelled)")
            if accuracy.get("unknown_outcomes"):
                parts.append(f"{accuracy['unknown_outcomes']:,} outcomes unknown to the task")
            latency = entry["latency"]
            if latency.get("p50_ms") is not None:
                parts.append(f"p50 {latency['p50_ms']:.1f} ms p99 {latency['p99_ms']:.1f} ms")
            parts += [
                _shadow_part(answered, c)
                for answered, c in (entry.get("shadow") or {}).get("against", {}).items()
            ]
            lines.append("  " + " | ".join(parts))
        lines += [f"ALERT v{a['version']} {a['kind']}: {a['detail']}" for a in self.alerts]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _shadow_part(answered: str, c: dict[str, Any]) -> str:
    """One served version's comparison with a shadow (``monitoring.shadow_checks``), in a few words."""
    agreement = f"agreement {c['agreement']:.3f}" if c.get("agreement") is not None else "not compared"
    mine, theirs = c["latency_ms"]["shadow"], c["latency_ms"]["served"]
    latency = ""
    if mine["p50"] is not None and theirs["p50"] is not None:
        latency = f", p50 {mine['p50']:.1f} vs {theirs['p50']:.1f} ms"
        latency += f", p99 {mine['p99']:.1f} vs {theirs['p99']:.1f} ms"
    return f"shadow of v{answered}: {agreement} on {c['rows']:,} rows ({c['requests']:,} requests){latency}"


def _finite_json(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None: the report stays strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    return value
