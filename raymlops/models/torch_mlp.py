"""A PyTorch MLP for every task, trained with Ray Train's TorchTrainer (DDP).

The task picks the loss (``task.loss()``) and the output head's width (``task.output().width``):

=================  ======================  ====================================================
loss               head                    prediction (``predict`` and the ONNX graph)
=================  ======================  ====================================================
``bce``            1 logit                 sigmoid -> [N]
``cross_entropy``  K logits                softmax -> [N, K]
``mse``, ``huber`` 1 value                 the value -> [N], on the target's own scale
=================  ======================  ====================================================

Regression trains on the standardised target (mean and std of the train split), so that MSE on raw
prices or durations starts at a sane scale; the fitted state folds them back into the last layer, so the
module, ``predict`` and the exported graph all give the value in the target's units.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from raymlops.errors import RayMLOpsError
from raymlops.models.family import ModelFamily, fitted_task, resolve_task
from raymlops.training.ray_train import fit_with_ray_train, worker_setup

if TYPE_CHECKING:
    from raymlops.tasks.base import Task

__all__ = ["TorchMLP", "TorchMLPConfig", "build_mlp"]

logger = logging.getLogger(__name__)
_CHECKPOINT_FILE = "model.pt"


def build_mlp(
    num_features: int, hidden_sizes: list[int], dropout: float, outputs: int = 1
):  # -> torch.nn.Sequential
    """Linear -> ReLU -> Dropout blocks ending in ``outputs`` logits (or values)."""
    import torch

    layers: list[torch.nn.Module] = []
    width = num_features
    for size in hidden_sizes:
        layers += [torch.nn.Linear(width, size), torch.nn.ReLU(), torch.nn.Dropout(dropout)]
        width = size
    layers.append(torch.nn.Linear(width, outputs))
    return torch.nn.Sequential(*layers)


def _autocast(device: Any, precision: str):  # -> a context manager
    """Mixed precision from config: bf16 on CPU or GPU, fp16 on GPU (with a gradient scaler)."""
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class _Head:
    """How one torch loss trains and predicts: the loss on (outputs, targets), the outputs' activation."""

    loss: str  # torch.nn class name
    targets: str  # "float" (as y) | "index" (y as class indices, cross-entropy)
    activation: str  # "sigmoid" | "softmax" | "identity"
    standardise: bool  # train on the standardised target (regression)


# task.loss() -> how the MLP learns it. A task with another loss needs an entry here.
_HEADS = {
    "bce": _Head("BCEWithLogitsLoss", "float", "sigmoid", False),
    "cross_entropy": _Head("CrossEntropyLoss", "index", "softmax", False),
    "mse": _Head("MSELoss", "float", "identity", True),
    "huber": _Head("HuberLoss", "float", "identity", True),
}


def _head(task: Task) -> _Head:
    from raymlops.errors import ConfigError

    loss = task.loss()
    if loss not in _HEADS:
        problem = f"task {task.name} asks for the loss {loss!r}, which the torch family does not have."
        raise ConfigError("features.task", problem, list(_HEADS))
    return _HEADS[loss]


def _activate(head: _Head, outputs: Any):  # torch.Tensor [N, width] -> the prediction's tensor
    """The prediction from the module's outputs: [N] for one output, [N, K] for several."""
    import torch

    if head.activation == "softmax":
        return torch.softmax(outputs, dim=1)
    flat = outputs.squeeze(1)
    return torch.sigmoid(flat) if head.activation == "sigmoid" else flat


def _loss_inputs(head: _Head, outputs: Any, y: Any, scale: tuple[float, float]):  # -> (input, target)
    """The loss's (input, target) pair: class indices for cross-entropy, the standardised value for
    regression, the 0/1 target against the logit for BCE."""
    if head.targets == "index":
        return outputs, y.long()
    mean, std = scale
    return outputs.squeeze(1), (y - mean) / std if head.standardise else y


def _moments(batch: dict[str, np.ndarray]) -> dict[str, list[float]]:
    y = np.asarray(batch["y"], np.float64)
    mean = float(y.mean()) if len(y) else 0.0
    return {"n": [float(len(y))], "mean": [mean], "m2": [float(((y - mean) ** 2).sum())]}


def _target_scale(train: Any) -> tuple[float, float]:
    """(mean, std) of the train split's target ``y``: per-block moments merged here (Chan et al.), which
    is stable and starts no aggregation actors (Ray Data's Mean/Std took 15 s on 900 rows); std 1 for a
    constant target."""
    n = mean = m2 = 0.0
    for part in train.map_batches(_moments, batch_format="numpy", batch_size=None).iter_rows():
        count = part["n"]
        if not count:
            continue
        delta, total = part["mean"] - mean, n + count
        mean += delta * count / total
        m2 += part["m2"] + delta**2 * n * count / total
        n = total
    std = math.sqrt(m2 / n) if n else 0.0
    return mean, std if std > 0 else 1.0


_CHUNK_BATCHES = 64  # minibatches per Ray Data batch


def _minibatches(shard: Any, batch_size: int, device: Any, shuffle: Any):  # -> Iterator[dict[str, Tensor]]
    """Minibatches of ``batch_size`` rows, shuffled within chunks of 64 minibatches each epoch.

    Ray Data hands out chunks, torch slices them. Collating every 1,024-row batch through Ray Data's
    local shuffle buffer ran at 108k samples/s where a plain torch loop ran 320k; chunks of 16 batches
    gave 224k, of 64 batches 285k vs 301k (benchmarks/train.py, 1 worker, 2 cores). The features stage
    shuffles the training rows globally once; this reshuffles within chunks every epoch.
    """
    import torch

    for chunk in shard.iter_torch_batches(batch_size=batch_size * _CHUNK_BATCHES, device=device):
        order = torch.randperm(len(chunk["y"]), generator=shuffle).to(chunk["y"].device)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield {"x": chunk["x"][index], "y": chunk["y"][index]}


def _validate(
    model: Any, shard: Any, loss_fn: Any, head: _Head, scale: Any, task: Task, device: Any, sharded: bool
) -> tuple[float, int, int, float]:
    """(summed loss, rows, rows this rank scored, the task's primary metric) of the valid split: the same
    figures on every rank but the third.

    Unsharded, each rank reads the whole split and scores it. Sharded (``shard_valid``: several workers
    and a task with metric partials), each rank scores its share only, and the ranks exchange the task's
    mergeable partials (``Task.metric_partials``: a few KiB, not the predictions) and their loss sums.
    """
    import torch

    primary = f"valid/{task.primary_metric}"
    total, rows, preds, labels, parts = 0.0, 0, [], [], None
    for batch in shard.iter_torch_batches(batch_size=8192, device=device):
        outputs = model(batch["x"]).float()
        total += float(loss_fn(*_loss_inputs(head, outputs, batch["y"], scale))) * len(batch["y"])
        rows += len(batch["y"])
        pred = _activate(head, outputs)
        pred = (pred * scale[1] + scale[0] if head.standardise else pred).cpu().numpy()
        if sharded:
            block = task.metric_partials(batch["y"].cpu().numpy(), pred)
            parts = block if parts is None else task.merge_partials(parts, block)
        else:
            preds.append(pred)
            labels.append(batch["y"].cpu().numpy())
    if not sharded:
        if not rows:
            return total, rows, rows, math.nan
        metric = task.metrics(np.concatenate(labels), np.concatenate(preds), "valid")[primary]
        return total, rows, rows, metric
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, (parts, total, rows))
    merged = None
    for rank_parts, _, _ in gathered:
        if rank_parts is not None:
            merged = rank_parts if merged is None else task.merge_partials(merged, rank_parts)
    metric = task.metrics_from_partials(merged, "valid")[primary] if merged is not None else math.nan
    return sum(g[1] for g in gathered), sum(g[2] for g in gathered), rows, metric


def _train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: DDP over the train shard, a checkpoint from rank 0 each epoch."""
    import time

    import ray.train
    import ray.train.torch
    import torch

    rank = worker_setup(config["seed"])
    torch.manual_seed(config["seed"])
    torch.set_num_threads(config["threads"])
    device = ray.train.torch.get_device()
    precision = config["precision"]
    task = config["task"]
    head, scale, primary = _head(task), config["target_scale"], f"valid/{task.primary_metric}"
    module = build_mlp(config["num_features"], config["hidden_sizes"], config["dropout"], task.output().width)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")
    start_epoch, history = 0, []
    ran_in = "float32"  # the dtype the forward pass computed in: proof that autocast ran (or did not)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # resume after a worker failure
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / _CHECKPOINT_FILE, weights_only=False)
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"], state["history"]
        logging.getLogger("raymlops.train").info("rank=%d resumed from epoch %d", rank, start_epoch)
    model = ray.train.torch.prepare_model(module)
    loss_fn = getattr(torch.nn, head.loss)()
    train_shard = ray.train.get_dataset_shard("train")
    valid_shard = ray.train.get_dataset_shard("valid")
    for epoch in range(start_epoch, config["epochs"]):
        model.train()
        total, rows, started = 0.0, 0, time.perf_counter()
        shuffle = torch.Generator().manual_seed(config["seed"] + 1000 * epoch + rank)
        for batch in _minibatches(train_shard, config["batch_size"], device, shuffle):
            optimizer.zero_grad()
            with _autocast(device, precision):
                outputs = model(batch["x"])
                loss = loss_fn(*_loss_inputs(head, outputs.float(), batch["y"], scale))
            ran_in = str(outputs.dtype).removeprefix("torch.")
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach()) * len(batch["y"])
            rows += len(batch["y"])
        epoch_seconds = time.perf_counter() - started
        model.eval()
        with torch.no_grad(), _autocast(device, precision):
            valid_total, valid_rows, scored, valid_metric = _validate(
                model, valid_shard, loss_fn, head, scale, task, device, config.get("shard_valid", False)
            )
        metrics = {
            "epoch": epoch + 1,
            "train/loss": total / max(rows, 1),
            "valid/loss": valid_total / max(valid_rows, 1),
            primary: valid_metric,
            "train/rows_per_worker": rows,
            "valid/rows": valid_rows,
            "valid/rows_per_worker": scored,  # all of them unless the valid split is sharded
            "train/epoch_seconds": epoch_seconds,
            "train/samples_per_second_per_worker": rows / max(epoch_seconds, 1e-9),
            "resumed_from_epoch": start_epoch,
        }
        history.append(metrics)
        logging.getLogger("raymlops.train").info(
            "epoch %d/%d rank=%d train/loss=%.4f valid/loss=%.4f %s=%.4f (%.1f s)",
            epoch + 1,
            config["epochs"],
            rank,
            metrics["train/loss"],
            metrics["valid/loss"],
            primary,
            metrics[primary],
            epoch_seconds,
        )
        with tempfile.TemporaryDirectory() as folder:
            if rank == 0:
                torch.save(
                    {
                        "model": module.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "epoch": epoch + 1,
                        "history": history,
                        "target_scale": scale,  # (mean, std) the regression head trained against
                        "preprocessor": config["preprocessor"],  # what turns raw columns into these inputs
                        "autocast_dtype": ran_in,  # TorchMLP.autocast_dtype_
                    },
                    Path(folder) / _CHECKPOINT_FILE,
                )
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
            else:
                ray.train.report(metrics)


@dataclass
class TorchMLPConfig:  # the model group's schema with model=torch_mlp (raymlops.config.register_configs)
    _target_: str = "raymlops.models.torch_mlp.TorchMLP"
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 32])
    dropout: float = 0.1
    lr: float = 2e-3
    weight_decay: float = 1e-5
    batch_size: int = 1024
    epochs: int = 3


class TorchMLP(ModelFamily):
    """An MLP family member. The constructor stores parameters; ``fit`` sets the ``*_`` state."""

    budget_key: ClassVar[str] = "epochs"
    config_schema: ClassVar[type | None] = TorchMLPConfig
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "lr": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
        "weight_decay": {"type": "loguniform", "low": 1e-6, "high": 1e-2},
        "dropout": {"type": "uniform", "low": 0.0, "high": 0.3},
        "hidden_sizes": {"type": "choice", "values": [[32], [64, 32], [128, 64]]},
    }

    def __init__(
        self,
        hidden_sizes: list[int],
        dropout: float = 0.1,
        lr: float = 2e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 1024,
        epochs: int = 3,
    ) -> None:
        self.hidden_sizes, self.dropout, self.lr = list(hidden_sizes), dropout, lr
        self.weight_decay, self.batch_size, self.epochs = weight_decay, batch_size, epochs

    def fit(
        self,
        datasets: dict[str, Any],
        num_features: int,
        trainer_cfg: Any,
        storage_path: str,
        seed: int,
        callbacks: list[Any] | None = None,
        preprocessor: Any = None,
        task: Task | None = None,
    ) -> TorchMLP:
        import dataclasses
        import os

        from ray.train.torch import TorchTrainer

        task = resolve_task(task)
        workers = trainer_cfg.scaling.num_workers
        config = {
            "num_features": num_features,
            "hidden_sizes": self.hidden_sizes,
            "dropout": self.dropout,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "seed": seed,
            "threads": max(1, (os.cpu_count() or 1) // workers),
            "precision": getattr(getattr(trainer_cfg, "precision", None), "value", "fp32"),
            "preprocessor": dataclasses.asdict(preprocessor) if preprocessor is not None else None,
            "task": task,
            "target_scale": _target_scale(datasets["train"]) if _head(task).standardise else (0.0, 1.0),
            # Several workers score a share of the valid split each and merge the task's partials; one
            # worker (or a task without partials) scores all of it, exactly as before.
            "shard_valid": workers > 1 and task.supports_partials(),
        }
        result = fit_with_ray_train(
            TorchTrainer, _train_loop, config, datasets, trainer_cfg, storage_path, "torch_mlp", callbacks
        )
        if result.checkpoint is None:
            raise RayMLOpsError("Training finished without a checkpoint: no epoch completed.")
        return self.load_checkpoint(result.checkpoint, num_features, task)

    def load_checkpoint(self, checkpoint: Any, num_features: int, task: Task | None = None) -> TorchMLP:
        """The fitted state from a ``ray.train.Checkpoint`` of this family (a finished run, a Tune trial).

        A regression head's target scale is folded into the last layer here: the module gives values in
        the target's units, so ``predict`` and the exported graph need no extra step.
        """
        import torch

        self.task_ = resolve_task(task)
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / _CHECKPOINT_FILE, weights_only=False)
        self.module_ = build_mlp(num_features, self.hidden_sizes, self.dropout, self.task_.output().width)
        self.module_.load_state_dict(state["model"])
        mean, std = state.get("target_scale", (0.0, 1.0))  # checkpoints from before tasks have none
        if _head(self.task_).standardise:
            last = self.module_[-1]
            with torch.no_grad():
                last.weight.mul_(std)
                last.bias.mul_(std).add_(mean)
        self.module_.eval()
        self.num_features_ = num_features
        self.history_: list[dict[str, float]] = state["history"]
        # The dtype the last epoch's forward passes ran in: bfloat16 / float16 under autocast, else float32.
        self.autocast_dtype_: str = state.get("autocast_dtype", "float32")
        self.checkpoint_path_ = checkpoint.path
        return self

    def _fitted(self):  # -> torch.nn.Module
        if not hasattr(self, "module_"):
            raise RayMLOpsError("TorchMLP is not fitted: call fit() first.")
        # Always inference mode: torch.onnx.export restores the *wrapper's* training flag on every
        # submodule afterwards, which would switch dropout back on here.
        return self.module_.eval()

    def _predictor(self):  # -> torch.nn.Sequential: the module and its task's activation
        """The fitted module followed by the task's activation: what ``predict`` runs and ONNX exports."""
        import torch

        activation = _head(fitted_task(self)).activation
        tails: dict[str, list[torch.nn.Module]] = {
            "sigmoid": [torch.nn.Sigmoid(), torch.nn.Flatten(0)],
            "softmax": [torch.nn.Softmax(dim=1)],
            "identity": [torch.nn.Flatten(0)],
        }
        tail = tails[activation]
        return torch.nn.Sequential(self._fitted(), *tail).eval()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The task's prediction for each row of the feature matrix: [N] or [N, classes], float32."""
        import torch

        with torch.no_grad():
            return self._predictor()(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    def to_onnx(self, opset: int):  # -> onnx.ModelProto
        """ONNX graph: ``features`` [N, F] float -> the task's output (``probability`` [N] for binary)."""
        import warnings

        import onnx
        import torch

        output = fitted_task(self).output().name
        wrapped = self._predictor()
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            # The TorchScript exporter writes one self-contained file at opset 17; it warns that
            # the dynamo exporter is the future, which writes external data files instead.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped,
                (torch.zeros(2, self.num_features_),),
                Path(folder) / "model.onnx",
                dynamo=False,
                input_names=["features"],
                output_names=[output],
                opset_version=opset,
                dynamic_axes={"features": {0: "rows"}, output: {0: "rows"}},
            )
            return onnx.load(Path(folder) / "model.onnx")
