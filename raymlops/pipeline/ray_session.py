"""Connect to Ray: an embedded local instance by default, or the cluster in the config / RAY_ADDRESS."""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["connect_ray"]

logger = logging.getLogger(__name__)


def connect_ray(cfg: Any) -> None:
    """``ray.init`` from the ``ray`` config group; reuses an already connected Ray (tests, notebooks)."""
    import ray
    from ray.data import DataContext

    # Ray Train's report() blocks on a 2 s health check by default (RAY-NOTES): 119 s -> 22 s for XGBoost.
    env_vars = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": str(cfg.train_health_check_interval_s)}
    os.environ.update(env_vars)
    progress = cfg.progress_bars and os.environ.get("RAYMLOPS_PROGRESS", "1") != "0"
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {
            "include_dashboard": cfg.include_dashboard,
            "runtime_env": {"env_vars": env_vars},
            "configure_logging": True,
            "logging_level": logging.WARNING,
        }
        # None: the cluster of a Ray job (RAY_ADDRESS), else a new embedded Ray even when `ray start`
        # left a cluster on this machine (plain ray.init() would silently join that one).
        address = cfg.address or os.environ.get("RAY_ADDRESS") or "local"
        local = address == "local"
        if local:  # resources can only be set when this process starts Ray
            if cfg.num_cpus is not None:
                kwargs["num_cpus"] = cfg.num_cpus
            if cfg.object_store_memory_mb is not None:
                kwargs["object_store_memory"] = cfg.object_store_memory_mb * 1024**2
        ray.init(address=address, **kwargs)
        logger.info("ray connected local=%s resources=%s", local, ray.cluster_resources())
    DataContext.get_current().enable_progress_bars = progress
