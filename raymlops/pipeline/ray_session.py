"""Connect to Ray: an embedded local instance by default, or the cluster in the config / RAY_ADDRESS."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

__all__ = ["connect_ray", "start_local_ray"]

logger = logging.getLogger(__name__)

# Ray Train's report() blocks on a 2 s health check by default (RAY-NOTES): 119 s -> 22 s for XGBoost.
TRAIN_HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_local_ray(
    *,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    include_dashboard: bool = False,
    log_to_driver: bool = True,
    env_vars: dict[str, str] | None = None,
    **init_kwargs: Any,
) -> None:
    """Start a new embedded Ray owned by this process, even if `ray start` left a cluster on the machine.

    Its workers are told its address (``RAY_ADDRESS``): with several Ray instances on one machine,
    Ray Train's PlacementGroupCleaner otherwise joins the *latest* one, hangs, and every
    ``trainer.fit()`` waits 12 s for it (measured). The GCS port is fixed beforehand so the address
    is known before start.
    """
    import ray

    port = _free_port()
    env = {**(env_vars or {}), "RAY_ADDRESS": f"127.0.0.1:{port}"}
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            object_store_memory=object_store_memory,
            include_dashboard=include_dashboard,
            log_to_driver=log_to_driver,
            runtime_env={"env_vars": env},
            **init_kwargs,
        )
    finally:
        # Child processes (a `ray start`, another job) must not inherit this port.
        os.environ.pop("RAY_GCS_SERVER_PORT", None)


def connect_ray(cfg: Any) -> None:
    """``ray.init`` from the ``ray`` config group; reuses an already connected Ray (tests, notebooks)."""
    import ray
    from ray.data import DataContext

    env_vars = {TRAIN_HEALTH_CHECK_ENV: str(cfg.train_health_check_interval_s)}
    os.environ.update(env_vars)
    progress = cfg.progress_bars and os.environ.get("RAYMLOPS_PROGRESS", "1") != "0"
    if not ray.is_initialized():
        # None: the cluster of a Ray job (RAY_ADDRESS), else a new embedded Ray even when `ray start`
        # left a cluster on this machine (plain ray.init() would silently join that one).
        address = cfg.address or os.environ.get("RAY_ADDRESS") or "local"
        quiet: dict[str, Any] = {"configure_logging": True, "logging_level": logging.WARNING}
        if address == "local":
            memory = cfg.object_store_memory_mb * 1024**2 if cfg.object_store_memory_mb else None
            start_local_ray(
                num_cpus=cfg.num_cpus,
                object_store_memory=memory,
                include_dashboard=cfg.include_dashboard,
                env_vars=env_vars,
                **quiet,
            )
        else:  # resources belong to the cluster; only the workers' environment is ours to set
            ray.init(address=address, runtime_env={"env_vars": env_vars}, **quiet)
        logger.info("ray connected address=%s resources=%s", address, ray.cluster_resources())
    DataContext.get_current().enable_progress_bars = progress
