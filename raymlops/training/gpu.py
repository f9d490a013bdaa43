"""GPU options checked before a job starts: one asked for where it cannot run is a ConfigError naming its key.

Without the check, each fails late or silently: Ray Train waits for a GPU that never comes
(``trainer.scaling.use_gpu``, which also makes XGBoost train with ``device=cuda``), the router's
onnxruntime falls back to CPU (``serve.use_gpu``), and ``trainer.precision=fp16`` runs float16 autocast
on CPU. ``bf16`` stays allowed on CPU: torch autocasts to bfloat16 there (fast on CPUs with AVX-512 BF16
or AMX), and the training loop records the dtype it ran in (``TorchMLP.autocast_dtype_``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from raymlops.errors import ConfigError

__all__ = ["check_gpu_options", "cluster_gpus"]

# The stages that read each option: an option of a stage the job does not run is not checked.
_TRAINING = frozenset({"train", "tune"})
_SERVING = frozenset({"deploy"})


def _value(option: Any) -> str:
    """An enum option (Hydra gives ``Precision.fp16``) or its plain value (an ad-hoc config)."""
    return str(getattr(option, "value", option))


def cluster_gpus(cfg: Any) -> float | None:
    """GPUs of the connected Ray when it is this machine's own (an embedded Ray: ``ray.address`` and
    ``RAY_ADDRESS`` unset); None for a remote cluster, whose autoscaler may still add GPU nodes."""
    import ray

    address = cfg.ray.get("address") or os.environ.get("RAY_ADDRESS")
    if address not in (None, "", "local") or not ray.is_initialized():
        return None
    return float(ray.cluster_resources().get("GPU", 0.0))


def check_gpu_options(cfg: Any, stages: Iterable[str], gpus: float | None) -> None:
    """Raise ConfigError for a GPU option this job cannot honour.

    Args:
        cfg: The job config.
        stages: The names of the stages the job runs.
        gpus: GPUs of the machine the job runs on (``cluster_gpus``); None: not known (a remote cluster),
            only the rules that hold anywhere are checked.
    """
    names = set(stages)
    trainer = cfg.trainer
    training = bool(names & _TRAINING)
    if training and _value(trainer.precision) == "fp16" and not trainer.scaling.use_gpu:
        raise ConfigError(
            "trainer.precision",
            "fp16 autocasts to float16 with a gradient scaler, which is for CUDA devices; with "
            "trainer.scaling.use_gpu=false it would run float16 on CPU. Use trainer.precision=bf16 (CPU "
            "and GPU) or fp32, or set trainer.scaling.use_gpu=true on a machine with a GPU.",
        )
    if gpus is None or gpus > 0:
        return
    if training and trainer.scaling.use_gpu:
        raise ConfigError(
            "trainer.scaling.use_gpu",
            "is true, but this machine's Ray has no GPU (a CUDA device Ray can see): Ray Train would wait "
            "for one forever (XGBoost trains with device=cuda under it). Set trainer.scaling.use_gpu=false, "
            "or run on a machine or cluster with GPUs.",
        )
    if names & _SERVING and cfg.serve.enabled and cfg.serve.use_gpu:
        raise ConfigError(
            "serve.use_gpu",
            "is true, but this machine's Ray has no GPU: onnxruntime's CUDAExecutionProvider cannot run "
            "here. Set serve.use_gpu=false, or deploy on a machine or cluster with GPUs.",
        )
