"""train: Ray Train samples/s (TorchTrainer, 1 and 2 workers) vs a plain single-process PyTorch loop.

Same model (``build_mlp``), same batch size, optimizer and loss, same synthetic rows (seeded, generated
per block from row ids so both sides see identical data), CPU threads = cores / workers. Ours is
``TorchMLP.fit`` as the train stage runs it: Ray Data shards fed by ``iter_torch_batches`` with a local
shuffle buffer, DDP, a validation pass and a checkpoint per epoch. Steady state: the median training
epoch after the first (``train/epoch_seconds`` measured inside the loop, validation and checkpoint not
in it); the baseline's is the same median over its epochs (a numpy permutation per epoch, no
validation). Setup: ours' wall time outside the training epochs (worker start, DDP init, validation,
checkpoints), reported on its own.

``--smoke``: 20,000 rows, two epochs (the steady figure needs one after the first) and the 2-worker fit
only: the 1-worker fit runs the same code, and at smoke size a fit is mostly Ray Train's start-up.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

# Run as ``python benchmarks/train.py``: Python puts this folder first on sys.path.
from _harness import Figure, emit, log, parser, start_ray, summary

NAME = "train"
FEATURES = 64
HIDDEN = [64, 32]
BATCH = 1024


def make_rows(ids: np.ndarray) -> dict[str, np.ndarray]:
    """Deterministic rows for these ids: x ~ N(0, 1), y from a fixed linear rule plus noise."""
    rng = np.random.default_rng(int(ids[0]) if len(ids) else 0)
    x = rng.standard_normal((len(ids), FEATURES), dtype=np.float32)
    weights = np.linspace(-1, 1, FEATURES, dtype=np.float32)
    y = ((x @ weights + rng.standard_normal(len(ids), dtype=np.float32)) > 0).astype(np.float32)
    return {"x": x, "y": y}


def _blocks(rows: int, blocks: int) -> list[np.ndarray]:
    return np.array_split(np.arange(rows), blocks)


def ray_datasets(rows: int, blocks: int = 8) -> dict[str, Any]:
    import ray.data

    def to_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return make_rows(batch["id"])

    train = ray.data.range(rows, override_num_blocks=blocks).map_batches(to_rows, batch_size=None)
    valid = ray.data.range(rows // 10, override_num_blocks=2).map_batches(to_rows, batch_size=None)
    return {"train": train.materialize(), "valid": valid.materialize()}


def ours(datasets: dict[str, Any], workers: int, epochs: int) -> tuple[float, float]:
    """(steady samples/s over all workers, setup seconds) of one ``TorchMLP.fit``."""
    from omegaconf import OmegaConf

    from raymlops.models.torch_mlp import TorchMLP

    trainer = OmegaConf.create(
        {
            "scaling": {"num_workers": workers, "use_gpu": False, "cpus_per_worker": 2 / workers},
            "max_failures": 0,
            "checkpoints_to_keep": 1,
            "precision": "fp32",
        }
    )
    model = TorchMLP(hidden_sizes=HIDDEN, dropout=0.0, batch_size=BATCH, epochs=epochs)
    with tempfile.TemporaryDirectory(prefix="raymlops-bench-train-") as storage:
        started = time.perf_counter()
        model.fit(datasets, FEATURES, trainer, storage, seed=0)
        wall = time.perf_counter() - started
    epochs_s = [row["train/epoch_seconds"] for row in model.history_]
    rows = [row["train/rows_per_worker"] * workers for row in model.history_]  # DDP shards are equal
    steady = statistics.median(r / s for r, s in zip(rows[1:], epochs_s[1:], strict=True))
    return steady, wall - sum(epochs_s)


def baseline(rows: int, epochs: int, blocks: int = 8) -> float:
    """Steady samples/s of the same training in one process on numpy arrays."""
    import torch

    from raymlops.models.torch_mlp import build_mlp

    parts = [make_rows(ids) for ids in _blocks(rows, blocks)]
    x = np.concatenate([p["x"] for p in parts])
    y = np.concatenate([p["y"] for p in parts])
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = build_mlp(FEATURES, HIDDEN, 0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-5)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(0)
    speeds = []
    for _ in range(epochs):
        started = time.perf_counter()
        order = rng.permutation(len(y))
        for start in range(0, len(y), BATCH):
            index = order[start : start + BATCH]
            xb, yb = torch.from_numpy(x[index]), torch.from_numpy(y[index])
            optimizer.zero_grad()
            loss = loss_fn(model(xb).squeeze(1), yb)
            loss.backward()
            optimizer.step()
        speeds.append(len(y) / (time.perf_counter() - started))
    return statistics.median(speeds[1:])


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    rows = args.rows or (20_000 if args.smoke else 200_000 if args.quick else 1_000_000)
    epochs = 2 if args.smoke else 3 if args.quick else 4  # the steady figure needs an epoch after the first
    start_ray()
    log(f"{rows:,} rows x {FEATURES} features, {epochs} epochs, batch {BATCH}")
    datasets = ray_datasets(rows)
    plain = baseline(rows, epochs)
    figures = []
    for workers in (2,) if args.smoke else (1, 2):
        steady, setup = ours(datasets, workers, epochs)
        log(f"{workers} worker(s): {steady:,.0f} samples/s steady, setup {setup:.1f} s; plain {plain:,.0f}")
        target = 0.95 if workers == 1 else None
        figures.append(
            Figure(NAME, f"samples_per_s_{workers}_worker", steady, plain, "samples/s", True, target)
        )
        figures.append(Figure(NAME, f"setup_seconds_{workers}_worker", setup, None, "s", False))
    for figure in figures:
        emit(figure)
    summary(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
