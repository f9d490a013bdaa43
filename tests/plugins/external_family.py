"""A model family written outside the package, as a user would: logistic regression trained on Ray Train.

It is the example of docs/plugins.md. Nothing in ``raymlops/`` names it: the conformance suite
(tests/conformance/test_model_families.py) finds it by its dotted path, and the quickstart runs it from
config alone (``tests/plugins/configs/model/external_linear.yaml``). Its ONNX graph is written by hand
with ``onnx.helper`` (no exporter), to show what ``to_onnx`` must return.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from raymlops.errors import RayMLOpsError
from raymlops.models.family import ModelFamily
from raymlops.training.ray_train import fit_with_ray_train, worker_setup

_WEIGHTS, _HISTORY = "weights.npz", "history.json"


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else float("nan")


def _auc(p: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def _train_loop(config: dict[str, Any]) -> None:
    """Each Ray Train worker: minibatch SGD on its shard, DDP averaging the gradients across workers."""
    import ray.train
    import ray.train.torch
    import torch

    rank = worker_setup(config["seed"])
    torch.manual_seed(config["seed"])
    linear = torch.nn.Linear(config["num_features"], 1)
    model = ray.train.torch.prepare_model(linear)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loss_fn = torch.nn.BCEWithLogitsLoss()
    history: list[dict[str, float]] = []
    for epoch in range(config["epochs"]):
        total, rows = 0.0, 0
        for batch in ray.train.get_dataset_shard("train").iter_torch_batches(batch_size=config["batch_size"]):
            optimizer.zero_grad()
            loss = loss_fn(model(batch["x"]).squeeze(1), batch["y"])
            loss.backward()
            optimizer.step()
            total, rows = total + float(loss.detach()) * len(batch["y"]), rows + len(batch["y"])
        scores, labels = [], []
        with torch.no_grad():
            for batch in ray.train.get_dataset_shard("valid").iter_torch_batches(batch_size=8192):
                scores.append(torch.sigmoid(linear(batch["x"]).squeeze(1)).numpy())
                labels.append(batch["y"].numpy())
        p, y = (np.concatenate(scores), np.concatenate(labels)) if labels else (np.zeros(0), np.zeros(0))
        metrics = {
            "epoch": epoch + 1,
            "train/loss": total / max(rows, 1),
            "valid/loss": _log_loss(p, y),
            "valid/auc": _auc(p, y),
        }
        history.append(metrics)
        with tempfile.TemporaryDirectory() as folder:
            if rank == 0:
                weight = linear.weight.detach().numpy().reshape(-1)
                np.savez(Path(folder) / _WEIGHTS, weight=weight, bias=linear.bias.detach().numpy())
                (Path(folder) / _HISTORY).write_text(json.dumps(history))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
            else:
                ray.train.report(metrics)


class LinearFamily(ModelFamily):
    """Logistic regression: ``P(y=1) = sigmoid(x @ weight + bias)``. The constructor stores parameters."""

    budget_key: ClassVar[str] = "epochs"
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "lr": {"type": "loguniform", "low": 1e-3, "high": 0.3},
        "batch_size": {"type": "choice", "values": [128, 512]},
    }

    def __init__(self, lr: float = 0.05, epochs: int = 3, batch_size: int = 512) -> None:
        self.lr, self.epochs, self.batch_size = lr, epochs, batch_size

    def fit(
        self,
        datasets: dict[str, Any],
        num_features: int,
        trainer_cfg: Any,
        storage_path: str,
        seed: int,
        callbacks: list[Any] | None = None,
        preprocessor: Any = None,
    ) -> LinearFamily:
        from ray.train.torch import TorchTrainer

        config = {
            "num_features": num_features,
            "lr": self.lr,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "seed": seed,
        }
        result = fit_with_ray_train(
            TorchTrainer, _train_loop, config, datasets, trainer_cfg, storage_path, "linear", callbacks
        )
        if result.checkpoint is None:
            raise RayMLOpsError("LinearFamily: training finished without a checkpoint.")
        return self.load_checkpoint(result.checkpoint, num_features)

    def load_checkpoint(self, checkpoint: Any, num_features: int) -> LinearFamily:
        with checkpoint.as_directory() as folder:
            saved = np.load(Path(folder) / _WEIGHTS)
            self.weight_ = saved["weight"].astype(np.float32)
            self.bias_ = saved["bias"].astype(np.float32)
            self.history_ = json.loads((Path(folder) / _HISTORY).read_text())
        if self.weight_.shape != (num_features,):
            raise RayMLOpsError(
                f"LinearFamily: checkpoint has {self.weight_.shape[0]} weights, not {num_features}."
            )
        self.num_features_ = num_features
        self.checkpoint_path_ = checkpoint.path
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if not hasattr(self, "weight_"):
            raise RayMLOpsError("LinearFamily is not fitted: call fit() first.")
        logits = np.asarray(x, dtype=np.float32) @ self.weight_ + self.bias_[0]
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def to_onnx(self, opset: int) -> Any:
        """``features`` [N, F] -> MatMul, Add, Sigmoid -> ``probability`` [N]."""
        from onnx import TensorProto, helper, numpy_helper

        initializers = [
            numpy_helper.from_array(self.weight_.reshape(-1, 1), "weight"),
            numpy_helper.from_array(self.bias_.reshape(1), "bias"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat"),
        ]
        nodes = [
            helper.make_node("MatMul", ["features", "weight"], ["logit_n1"]),
            helper.make_node("Add", ["logit_n1", "bias"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["probability_n1"]),
            helper.make_node("Reshape", ["probability_n1", "flat"], ["probability"]),
        ]
        graph = helper.make_graph(
            nodes,
            "linear",
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, self.num_features_])],
            [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None])],
            initializers,
        )
        # IR 8 is what onnxruntime reads for opset 17 and what torch's exporter writes.
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
