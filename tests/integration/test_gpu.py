"""GPU paths. On a machine with a CUDA device (``make gpu-check`` runs the ``gpu``-marked tests): one DDP
epoch on CUDA with NCCL under bf16 and fp16 autocast (the dtype the forward pass ran in is checked),
XGBoost with ``device=cuda``, an onnxruntime session whose first provider is CUDA and answers as the CPU
one. Everywhere: a GPU option this machine cannot honour is a ConfigError naming its key before any stage
runs (the serving and batch refusals of a CPU fallback: tests/unit/test_mlflow_model.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raymlops.config import compose
from raymlops.errors import ConfigError
from raymlops.training.gpu import check_gpu_options


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


gpu = pytest.mark.gpu
# Skipped only where torch sees no CUDA device (a CUDA build of torch is needed: see docs/gpu.md).
needs_cuda = pytest.mark.skipif(not _cuda(), reason="no CUDA device (torch.cuda.is_available() is False)")
TRAINING = ["ingest", "features", "train", "evaluate", "export", "register", "deploy"]


def _datasets(rows: int = 2_048, features: int = 8) -> tuple[dict[str, Any], int]:
    """A separable binary table as the features stage hands it to training: x [N, F] float32, y."""
    import ray.data

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)
    ds = ray.data.from_items([{"x": row, "y": label} for row, label in zip(x, y, strict=True)])
    return {"train": ds, "valid": ds.limit(512)}, features


def _trainer(precision: str, use_gpu: bool = True) -> Any:
    cfg = compose(
        ["+experiment=quickstart", "trainer.scaling.num_workers=1", f"trainer.precision={precision}"]
    )
    cfg.trainer.scaling.use_gpu = use_gpu
    return cfg.trainer


@gpu
@needs_cuda
@pytest.mark.parametrize(("precision", "dtype"), [("bf16", "bfloat16"), ("fp16", "float16")])
def test_one_ddp_epoch_on_cuda_runs_under_the_autocast_dtype(
    ray_local: None, tmp_path: Path, precision: str, dtype: str
) -> None:
    from raymlops.models.torch_mlp import TorchMLP
    from raymlops.tasks.binary import BinaryTask

    datasets, width = _datasets()
    model = TorchMLP(hidden_sizes=[32], lr=0.05, epochs=1, batch_size=256).fit(
        datasets, width, _trainer(precision), str(tmp_path), seed=7, task=BinaryTask(threshold=0.0)
    )
    assert model.autocast_dtype_ == dtype  # the forward pass ran in it on the CUDA worker (NCCL group)
    row = model.history_[-1]
    assert np.isfinite(row["train/loss"]) and row["valid/auc"] > 0.9  # the separable table is learnt


@gpu
@needs_cuda
def test_xgboost_trains_with_device_cuda(ray_local: None, tmp_path: Path) -> None:
    import json

    from raymlops.models.xgboost_model import XGBoostModel
    from raymlops.tasks.binary import BinaryTask

    datasets, width = _datasets()
    model = XGBoostModel(num_boost_round=10, report_every=1).fit(
        datasets, width, _trainer("fp32"), str(tmp_path), seed=7, task=BinaryTask(threshold=0.0)
    )
    config = json.loads(model.booster_.save_config())
    assert config["learner"]["generic_param"]["device"].startswith("cuda")
    assert model.history_[-1]["valid/auc"] > 0.9


@gpu
@needs_cuda
def test_an_onnxruntime_session_asked_for_cuda_runs_on_it_and_answers_as_on_cpu(tmp_path: Path) -> None:
    from raymlops.serving.onnx_model import LoadedModel
    from raymlops.serving.spec import ModelSpec
    from tests.unit.test_mlflow_model import COLUMNS, TASK, tiny_graph

    path = tmp_path / "model.onnx"
    path.write_bytes(tiny_graph())
    spec = ModelSpec("flights", "3", str(path), "", COLUMNS, task=TASK)
    on_gpu, on_cpu = LoadedModel(spec, use_gpu=True), LoadedModel(spec)
    assert on_gpu.session.get_providers()[0] == "CUDAExecutionProvider"
    records = [{"distance": float(d), "origin": "JFK"} for d in (0, 500, 1400, 4983)]
    assert on_gpu.predict(records) == pytest.approx(on_cpu.predict(records), abs=1e-6)


def test_gpu_options_this_machine_cannot_honour_fail_naming_the_key(ray_local: None, tmp_path: Path) -> None:
    from raymlops.pipeline.runner import run_pipeline

    def cfg(*overrides: str) -> Any:
        return compose(["+experiment=quickstart", f"state_dir={tmp_path}", *overrides])

    # Anywhere: fp16 autocast is for CUDA; without trainer.scaling.use_gpu it would run float16 on CPU.
    with pytest.raises(ConfigError, match="bf16") as fp16:
        check_gpu_options(cfg("trainer.precision=fp16"), TRAINING, gpus=None)
    assert fp16.value.key == "trainer.precision"
    check_gpu_options(cfg("trainer.precision=bf16"), TRAINING, gpus=0.0)  # CPU bf16 autocast: deliberate
    check_gpu_options(cfg("trainer.precision=fp16", "trainer.scaling.use_gpu=true"), TRAINING, gpus=1.0)
    # Without a GPU: each option names itself; an option of a stage the job does not run is not checked.
    with pytest.raises(ConfigError) as serving:
        check_gpu_options(cfg("serve.use_gpu=true"), TRAINING, gpus=0.0)
    assert serving.value.key == "serve.use_gpu"
    check_gpu_options(cfg("serve.use_gpu=true"), ["ingest", "features"], gpus=0.0)
    check_gpu_options(cfg("trainer.scaling.use_gpu=true"), TRAINING, gpus=None)  # a remote cluster: unknown

    # Through the job: this machine's Ray has no GPU, so the run stops before its first stage.
    if _cuda():
        return  # a GPU machine honours the option: nothing to refuse there
    with pytest.raises(ConfigError, match="has no GPU") as training:
        run_pipeline(cfg("trainer.scaling.use_gpu=true", "ray.progress_bars=false"))
    assert training.value.key == "trainer.scaling.use_gpu"
    assert not (tmp_path / "data").exists() and not list(tmp_path.rglob("summary.json"))  # nothing ran
