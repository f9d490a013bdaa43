"""A model family written outside the package, as a user would: a linear model trained on Ray Train.

It is the example of docs/plugins.md. Nothing in ``raymlops/`` names it: the conformance suite
(tests/conformance/test_model_families.py) finds it by its dotted path, and the quickstart runs it from
config alone (``tests/plugins/configs/model/external_linear.yaml``). Its ONNX graph is written by hand
with ``onnx.helper`` (no exporter), to show what ``to_onnx`` must return.

It learns every task by asking the task: ``task.output().width`` outputs, the loss ``task.loss()``
(logistic, softmax or least-squares regression) and ``task.metrics`` for its valid metric.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from raymlops.errors import RayMLOpsError
from raymlops.models.family import ModelFamily, fitted_task, resolve_task
from raymlops.training.ray_train import fit_with_ray_train, worker_setup

_WEIGHTS, _HISTORY = "weights.npz", "history.json"
# task.loss() -> (torch loss, activation of the outputs). Regression trains on the standardised target.
_LOSSES = {
    "bce": ("BCEWithLogitsLoss", "sigmoid"),
    "cross_entropy": ("CrossEntropyLoss", "softmax"),
    "mse": ("MSELoss", "identity"),
    "huber": ("HuberLoss", "identity"),
}


def _activate(activation: str, outputs: np.ndarray) -> np.ndarray:
    """The prediction from the linear outputs [N, W]: [N] for one output, [N, W] for several."""
    if activation == "softmax":
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
    flat = outputs[:, 0]
    return (1.0 / (1.0 + np.exp(-flat)) if activation == "sigmoid" else flat).astype(np.float32)


def _train_loop(config: dict[str, Any]) -> None:
    """Each Ray Train worker: minibatch SGD on its shard, DDP averaging the gradients across workers."""
    import ray.train
    import ray.train.torch
    import torch

    rank = worker_setup(config["seed"])
    torch.manual_seed(config["seed"])
    task, (mean, std) = config["task"], config["target_scale"]
    loss_name, activation = _LOSSES[task.loss()]
    linear = torch.nn.Linear(config["num_features"], task.output().width)
    model = ray.train.torch.prepare_model(linear)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loss_fn = getattr(torch.nn, loss_name)()

    def loss_of(outputs: Any, y: Any) -> Any:
        if activation == "softmax":
            return loss_fn(outputs, y.long())
        return loss_fn(outputs.squeeze(1), (y - mean) / std)

    history: list[dict[str, float]] = []
    for epoch in range(config["epochs"]):
        total, rows = 0.0, 0
        for batch in ray.train.get_dataset_shard("train").iter_torch_batches(batch_size=config["batch_size"]):
            optimizer.zero_grad()
            loss = loss_of(model(batch["x"]), batch["y"])
            loss.backward()
            optimizer.step()
            total, rows = total + float(loss.detach()) * len(batch["y"]), rows + len(batch["y"])
        outputs, labels, valid_total = [], [], 0.0
        with torch.no_grad():
            for batch in ray.train.get_dataset_shard("valid").iter_torch_batches(batch_size=8192):
                out = linear(batch["x"])
                valid_total += float(loss_of(out, batch["y"])) * len(batch["y"])
                outputs.append(out.numpy())
                labels.append(batch["y"].numpy())
        y = np.concatenate(labels) if labels else np.zeros(0)
        pred = _activate(activation, np.concatenate(outputs) * std + mean) if labels else np.zeros(0)
        primary = f"valid/{task.primary_metric}"
        metrics = {
            "epoch": epoch + 1,
            "train/loss": total / max(rows, 1),
            "valid/loss": valid_total / max(len(y), 1),
            primary: task.metrics(y, pred, "valid")[primary] if len(y) else float("nan"),
        }
        history.append(metrics)
        with tempfile.TemporaryDirectory() as folder:
            if rank == 0:
                # Saved in the target's own units: the standardisation folded into weight and bias.
                weight = linear.weight.detach().numpy().T * std
                bias = linear.bias.detach().numpy() * std + mean
                np.savez(Path(folder) / _WEIGHTS, weight=weight, bias=bias)
                (Path(folder) / _HISTORY).write_text(json.dumps(history))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
            else:
                ray.train.report(metrics)


class LinearFamily(ModelFamily):
    """A linear model: ``activation(x @ weight + bias)``. The constructor stores parameters."""

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
        task: Any = None,
    ) -> LinearFamily:
        from ray.data.aggregate import Mean, Std
        from ray.train.torch import TorchTrainer

        task = resolve_task(task)
        if task.loss() not in _LOSSES:
            raise RayMLOpsError(f"LinearFamily: no loss {task.loss()!r}; it knows {sorted(_LOSSES)}.")
        scale = (0.0, 1.0)
        if _LOSSES[task.loss()][1] == "identity":  # regression: learn the standardised target
            stats = datasets["train"].aggregate(Mean("y"), Std("y", ddof=0))
            scale = (float(stats["mean(y)"]), float(stats["std(y)"]) or 1.0)
        config = {
            "num_features": num_features,
            "lr": self.lr,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "seed": seed,
            "task": task,
            "target_scale": scale,
        }
        result = fit_with_ray_train(
            TorchTrainer, _train_loop, config, datasets, trainer_cfg, storage_path, "linear", callbacks
        )
        if result.checkpoint is None:
            raise RayMLOpsError("LinearFamily: training finished without a checkpoint.")
        return self.load_checkpoint(result.checkpoint, num_features, task)

    def load_checkpoint(self, checkpoint: Any, num_features: int, task: Any = None) -> LinearFamily:
        self.task_ = resolve_task(task)
        with checkpoint.as_directory() as folder:
            saved = np.load(Path(folder) / _WEIGHTS)
            self.weight_ = saved["weight"].astype(np.float32)
            self.bias_ = saved["bias"].astype(np.float32)
            self.history_ = json.loads((Path(folder) / _HISTORY).read_text())
        if self.weight_.shape != (num_features, self.task_.output().width):
            raise RayMLOpsError(
                f"LinearFamily: checkpoint has weights {self.weight_.shape}, not "
                f"({num_features}, {self.task_.output().width})."
            )
        self.num_features_ = num_features
        self.checkpoint_path_ = checkpoint.path
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if not hasattr(self, "weight_"):
            raise RayMLOpsError("LinearFamily is not fitted: call fit() first.")
        outputs = np.asarray(x, dtype=np.float32) @ self.weight_ + self.bias_
        return _activate(_LOSSES[fitted_task(self).loss()][1], outputs)

    def to_onnx(self, opset: int) -> Any:
        """``features`` [N, F] -> MatMul, Add, the task's activation -> its output, [N] or [N, W]."""
        from onnx import TensorProto, helper, numpy_helper

        output = fitted_task(self).output()
        activation = _LOSSES[fitted_task(self).loss()][1]
        initializers = [
            numpy_helper.from_array(self.weight_, "weight"),
            numpy_helper.from_array(self.bias_.reshape(-1), "bias"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat"),
        ]
        nodes = [
            helper.make_node("MatMul", ["features", "weight"], ["linear_nw"]),
            helper.make_node("Add", ["linear_nw", "bias"], ["outputs"]),
        ]
        if activation == "softmax":
            nodes.append(helper.make_node("Softmax", ["outputs"], [output.name], axis=1))
        elif activation == "sigmoid":
            nodes.append(helper.make_node("Sigmoid", ["outputs"], ["activated"]))
            nodes.append(helper.make_node("Reshape", ["activated", "flat"], [output.name]))
        else:
            nodes.append(helper.make_node("Reshape", ["outputs", "flat"], [output.name]))
        shape = [None, output.width] if output.width > 1 else [None]
        graph = helper.make_graph(
            nodes,
            "linear",
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, self.num_features_])],
            [helper.make_tensor_value_info(output.name, TensorProto.FLOAT, shape)],
            initializers,
        )
        # IR 8 is what onnxruntime reads for opset 17 and what torch's exporter writes.
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
