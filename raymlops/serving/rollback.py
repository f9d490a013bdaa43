"""The previous champion back in the live app: its alias, and all of the model's traffic.

One operation for ``raymlops serve rollback`` and for an alert whose rule says ``rollback``
(:mod:`raymlops.monitoring.alert_actions`): the registry's ``champion`` alias moves back (compare-and-set,
audited in the model's history), the restored version joins the app if it had left it, takes 100% of the
traffic, and the registry records what the app now serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RollbackResult", "rollback_live"]


@dataclass(frozen=True)
class RollbackResult:
    model: str
    app: str
    from_version: str  # the champion before the rollback
    to_version: str  # the previous champion, now champion with all of the traffic
    weights: dict[str, float]  # version -> weight in the app afterwards


def rollback_live(cfg: Any, model: str, reason: str, governance: Any = None) -> RollbackResult:
    """Roll ``model`` back to its previous champion in ``cfg.serve.app_name`` (Ray already connected).

    Raises:
        GovernanceError: The model has no previous champion (the registry is unchanged).
        DeploymentError: The app is not running, or belongs to another env.
    """
    from raymlops.registry.governance import Governance
    from raymlops.security.integrity import Signer
    from raymlops.serving.operations import (
        add_version,
        check_app_env,
        check_artifacts,
        live_app,
        online_store_settings,
        set_traffic,
        spec_from_registry,
    )

    app_name = str(cfg.serve.app_name)
    check_app_env(app_name, str(cfg.env.name))
    served = live_app(app_name).versions(model)  # before the alias moves: a missing app changes nothing
    governance = governance or Governance.from_config(cfg)
    record = governance.rollback(model, why=reason)
    restored = str(record.to_version)
    if restored not in served:
        restored_spec = spec_from_registry(
            governance.registry,
            model,
            restored,
            placement=str(cfg.serve.placement.value),
            signer=Signer.from_config(cfg.security.signing),
        )
        check_artifacts(cfg, [restored_spec])
        add_version(app_name, restored_spec, online_store_settings(cfg, [restored_spec]))
    weights = {v: 0.0 for v in served} | {restored: 100.0}
    app = set_traffic(app_name, model, weights)
    governance.record_deployment(model, app_name, set(weights), why=f"rollback: {reason}")
    return RollbackResult(model, app_name, str(record.from_version), restored, app.versions(model))
