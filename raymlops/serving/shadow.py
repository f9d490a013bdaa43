"""Shadow deployment of a registered version on a running router, from the CLI and the job.

A shadow version is loaded at weight 0 and named by the model's routing policy
(``policies[name].shadow = {"version": V, "fraction": F}``, see :mod:`raymlops.serving.policy`): it
scores a random ``F`` of the requests the other versions answer, and its answers are discarded. Its
latency, errors and agreement with the served answer (the served version's ``Task.agreement``) are in
the router's statistics and its rows are in the prediction log with ``route=shadow``.

- :func:`start_shadow` puts a version in shadow (replacing a previous shadow version) and points the
  registry's ``shadow`` alias at it;
- :func:`stop_shadow` takes it out again and clears the alias;
- :func:`promote_shadow` ends the shadow and starts the progressive rollout of the same version
  (:func:`raymlops.serving.operations.progressive_rollout`: ``challenger``, then ``champion`` or back);
- :func:`shadow_summary` reads the shadow's figures next to the champion's from a stats answer.

Every change is an audit record in the registry (``shadow``, ``shadow-stop``, ``shadow-promote``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from raymlops.errors import ConfigError, DeploymentError
from raymlops.serving.operations import LiveApp, live_app, update_live_app

__all__ = [
    "check_fraction",
    "promote_shadow",
    "shadow_summary",
    "shadow_version",
    "start_shadow",
    "stop_shadow",
]


def check_fraction(value: Any, key: str = "--fraction") -> float:
    """``value`` as a share of requests in (0, 1]; a ``ConfigError`` naming ``key`` otherwise."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = math.nan
    if isinstance(value, bool) or not 0.0 < fraction <= 1.0:
        raise ConfigError(
            key,
            f"must be a share of requests in (0, 1], got {value!r}: 0.1 mirrors one request in ten "
            "to the shadow version, 1 mirrors every request.",
        )
    return fraction


def shadow_version(app: LiveApp, model: str) -> str | None:
    """The version that shadows ``model`` in ``app``, or None."""
    policy = app.user_config.get("policies", {}).get(model) or {}
    shadow = policy.get("shadow") or {}
    return str(shadow["version"]) if shadow.get("version") is not None else None


def start_shadow(
    app_name: str,
    model: str,
    spec: Any,  # ModelSpec of the version to shadow
    fraction: float,
    governance: Any,  # raymlops.registry.governance.Governance
    *,
    why: str,
) -> LiveApp:
    """Load ``spec`` into the app at weight 0 and mirror ``fraction`` of ``model``'s requests to it.

    A previous shadow version that answers nothing leaves the app. The version gets the ``shadow``
    alias (an audit record with the app and the fraction).

    Raises:
        ConfigError: ``fraction`` is not in (0, 1].
        DeploymentError: The version answers part of the traffic (a shadow never answers).
        ModelNotFoundError: The app does not serve ``model``.
    """
    from raymlops.serving.onnx_model import LoadedModel

    fraction = check_fraction(fraction)
    app = live_app(app_name)
    served = app.versions(model)
    if served.get(spec.version, 0.0) > 0:
        raise DeploymentError(
            f"{model} v{spec.version} answers part of {app_name}'s traffic "
            f"(weight {served[spec.version]:g}); a shadow never answers. Shadow another version, or "
            "route its traffic away first "
            f"(`python -m raymlops serve traffic {model} {spec.version}=0 ...`)."
        )
    previous = shadow_version(app, model)
    LoadedModel(spec, use_gpu=False)  # a broken graph fails here, not in the replicas
    entry = dataclasses.replace(spec, weight=0.0).to_dict()

    def change(config: dict[str, Any]) -> None:
        versions = config["models"][model]
        versions[:] = [
            s
            for s in versions
            if s["version"] != spec.version and not (s["version"] == previous and float(s["weight"]) <= 0)
        ] + [entry]
        policy = config.setdefault("policies", {}).setdefault(model, {})
        policy["shadow"] = {"version": spec.version, "fraction": fraction}

    # The alias first, as a rollout sets ``challenger`` first: a version the registry refuses (rejected,
    # archived) never reaches the app.
    details = {"app": app_name, "fraction": fraction, "replaced": previous}
    governance.set_alias(model, "shadow", spec.version, why=why, action="shadow", details=details)
    update_live_app(app, change)
    updated = live_app(app_name)
    governance.record_deployment(model, app_name, set(updated.versions(model)), why=why)
    return updated


def stop_shadow(app_name: str, model: str, governance: Any, *, why: str) -> str | None:
    """End ``model``'s shadow in ``app_name``: the policy goes, the version leaves the app (when it
    answers nothing) and loses the ``shadow`` alias. Returns the version, or None when none shadowed."""
    app = live_app(app_name)
    version = shadow_version(app, model)
    if version is None:
        held = governance.aliases(model).get("shadow")
        if held is not None:  # an alias without traffic (e.g. registry.on_pass=shadow): cleared too
            governance.clear_alias(model, "shadow", why=why, expected=held)
        return None
    update_live_app(app, lambda config: _drop_shadow(config, model, unload=True))
    _clear_alias(governance, model, version, why)
    governance.audit("shadow-stop", model, why, from_version=version, details={"app": app_name})
    governance.record_deployment(model, app_name, set(live_app(app_name).versions(model)), why=why)
    return version


def promote_shadow(
    app_name: str,
    model: str,
    candidate: Any,  # ModelSpec of the shadow version
    policy: Any,  # RolloutPolicy
    governance: Any,
    *,
    api_key: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Any:  # -> RolloutResult
    """From shadow to rollout: the shadow ends (the version stays loaded at 0%), its ``shadow`` alias
    is cleared, and the progressive rollout of the same version starts (it becomes ``challenger``).

    Raises:
        DeploymentError: ``candidate`` is not the version shadowing ``model`` in the app.
    """
    from raymlops.serving.operations import progressive_rollout

    app = live_app(app_name)
    version = shadow_version(app, model)
    if version is None or version != candidate.version:
        now = f"v{version} is" if version else "no version is"
        raise DeploymentError(
            f"{model} v{candidate.version} is not in shadow in {app_name} ({now}): start it with "
            f"`python -m raymlops serve shadow {model} {candidate.version} --fraction F` first."
        )
    update_live_app(app, lambda config: _drop_shadow(config, model, unload=False))
    _clear_alias(governance, model, version, "promoted from shadow to a progressive rollout")
    governance.audit(
        "shadow-promote", model, "progressive rollout", to_version=version, details={"app": app_name}
    )
    return progressive_rollout(
        app_name, model, candidate, policy, governance, api_key=api_key, progress=progress
    )


def _drop_shadow(config: dict[str, Any], model: str, *, unload: bool) -> None:
    policies = config.get("policies", {})
    policy = policies.get(model) or {}
    version = (policy.pop("shadow", None) or {}).get("version")
    if not policy:
        policies.pop(model, None)
    if unload:
        config["models"][model] = [
            s for s in config["models"][model] if s["version"] != version or float(s["weight"]) > 0
        ]


def _clear_alias(governance: Any, model: str, version: str, why: str) -> None:
    if governance.aliases(model).get("shadow") == version:
        governance.clear_alias(model, "shadow", why=why, expected=version)


def shadow_summary(stats: Mapping[str, Any]) -> dict[str, Any] | None:
    """The shadow's figures beside the champion's (the version with the largest weight), from one
    replica's ``GET /v1/models/{name}/stats`` answer; None when the model has no shadow."""
    shadow = stats.get("shadow")
    if not shadow:
        return None
    versions = stats.get("versions", {})
    version = str(shadow["version"])
    others = {v: float(e.get("weight") or 0.0) for v, e in versions.items() if v != version}
    champion = max(others, key=lambda v: others[v]) if others else None
    route = (versions.get(version) or {}).get("shadow") or {}
    window = route.get("window") or {}
    agreement = route.get("agreement") or {}
    served = ((versions.get(champion) or {}).get("served") or {}).get("window") or {} if champion else {}
    return {
        "version": version,
        "fraction": shadow.get("fraction"),
        "champion": champion,
        "requests": route.get("requests_total", 0),
        "errors": route.get("errors_total", 0),
        "dropped": shadow.get("dropped_total", 0),
        "compared": agreement.get("compared", 0),
        "agreement": agreement.get("label_agreement"),
        "mean_abs_diff": agreement.get("mean_abs_diff"),
        "p50_ms": (window.get("latency_ms") or {}).get("p50"),
        "p99_ms": (window.get("latency_ms") or {}).get("p99"),
        "champion_p50_ms": (served.get("latency_ms") or {}).get("p50"),
        "champion_p99_ms": (served.get("latency_ms") or {}).get("p99"),
    }
