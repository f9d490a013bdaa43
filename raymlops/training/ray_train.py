"""Ray Train wiring shared by every model family: scaling, storage, checkpoints, failures."""

from __future__ import annotations

import logging
from typing import Any

from raymlops.errors import ConfigError

__all__ = ["fit_with_ray_train", "worker_setup"]

logger = logging.getLogger(__name__)


def worker_setup(seed: int) -> int:
    """Per-worker start-up: logging to the driver, seeds, a fair share of CPU threads. Returns the rank."""
    import random

    import numpy as np
    import ray.train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rank = ray.train.get_context().get_world_rank()
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    return rank


def fit_with_ray_train(
    trainer_cls: type,
    loop: Any,
    loop_config: dict[str, Any],
    datasets: dict[str, Any],
    trainer_cfg: Any,
    storage_path: str,
    name: str,
    callbacks: list[Any] | None = None,
) -> Any:
    """Run ``loop`` on Ray Train workers and return the ``ray.train.Result``.

    ``callbacks`` go to the ``RunConfig`` (Tune's ``TuneReportCallback`` forwards each report to a trial).

    ``train`` is sharded across workers; ``valid`` too when ``loop_config["shard_valid"]`` says the loop
    merges its ranks' validation figures (the torch family, with a task that has metric partials), else
    each worker reads it whole so that every rank reports the same validation metrics. Raises the
    training error with its cause chained.
    """
    import ray.train

    scaling = trainer_cfg.scaling
    if scaling.num_workers < 1:
        raise ConfigError("trainer.scaling.num_workers", f"must be >= 1, got {scaling.num_workers}.")
    resources = {"CPU": float(scaling.cpus_per_worker)}
    if scaling.use_gpu:
        resources["GPU"] = 1.0
    trainer = trainer_cls(
        loop,
        train_loop_config=loop_config,
        datasets=datasets,
        dataset_config=_data_config(bool(loop_config.get("shard_valid"))),
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker=resources,
            placement_strategy=_strategy(scaling),
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=trainer_cfg.checkpoints_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=trainer_cfg.max_failures),
            callbacks=callbacks,
        ),
    )
    logger.info(
        "training started trainer=%s workers=%d use_gpu=%s",
        getattr(trainer_cls, "__name__", repr(trainer_cls)),
        scaling.num_workers,
        scaling.use_gpu,
    )
    for dataset in datasets.values():
        # Each dataset carries the DataContext it was made with; the workers' per-pass progress bars
        # (one per validation pass per worker) would drown the epoch lines and print again at exit.
        dataset.context.enable_progress_bars = False
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    return result


def _data_config(shard_valid: bool) -> Any:  # -> ray.train.DataConfig
    """``train`` sharded; ``valid`` sharded over every row when the loop merges its ranks' figures."""
    import ray.train

    if shard_valid:
        from raymlops.training.valid_shards import ShardedValidConfig

        return ShardedValidConfig()
    return ray.train.DataConfig(datasets_to_split=["train"])


def _strategy(scaling: Any) -> str:
    """``trainer.scaling.placement_strategy`` (an enum from Hydra, a string or absent in ad-hoc configs)."""
    value = getattr(scaling, "placement_strategy", None) or "PACK"
    return str(getattr(value, "value", value))
