"""The CUDA provider, asked for, must be the one that runs: onnxruntime otherwise falls back to CPU silently.

onnxruntime-gpu lists ``CUDAExecutionProvider`` as available wherever it is installed; a session asked
for it on a machine without a CUDA device (or without the CUDA / cuDNN libraries it links) logs an error
and runs on ``CPUExecutionProvider``. Serving and batch scoring refuse that instead of running on CPU.
"""

from __future__ import annotations

from typing import Any

from raymlops.errors import ConfigError

__all__ = ["CUDA_PROVIDER", "check_providers"]

CUDA_PROVIDER = "CUDAExecutionProvider"


def check_providers(session: Any, use_gpu: bool, key: str, what: str) -> None:
    """Raise ConfigError naming ``key`` when ``use_gpu`` and ``session``'s first provider is not CUDA.

    Args:
        session: An ``onnxruntime.InferenceSession`` made with ``providers_for(use_gpu)``.
        use_gpu: Whether the CUDA provider was asked for.
        key: The option that asked for it (``serve.use_gpu``, batch scoring's ``use_gpu``).
        what: What the session is for, for the message (``flights v3``).
    """
    if not use_gpu:
        return
    running = list(session.get_providers())
    if running[:1] != [CUDA_PROVIDER]:
        raise ConfigError(
            key,
            f"asked for onnxruntime's {CUDA_PROVIDER}, but the session of {what} runs on {running}: "
            "the CUDA provider did not load (no CUDA device here, or the CUDA and cuDNN libraries "
            "onnxruntime-gpu needs are missing: onnxruntime's log above says which). "
            f"Set {key}=false to run on CPU, or run where a CUDA device and those libraries are.",
        )
