"""tune: a hyper-parameter search on Ray Tune + OptunaSearch (2 trials at a time) vs plain sequential Optuna.

Both sides run the same objective, ``train_mlp``: the project's MLP (``build_mlp``) trained with plain
torch on the same fixed synthetic numpy dataset (seeded, 32 features, a non-linear label), the same
epochs and batch size, over the same search space (lr, weight decay, dropout, hidden sizes) with a
seeded TPE sampler, reporting the validation loss after every epoch; neither side stops trials early.

Ours: ``raymlops.training.tune.run_search`` (Tuner + OptunaSearch, ``max_concurrent_trials=2``, FIFO) on
a private 2-CPU local Ray started before timing; each trial is a Tune function trainable with 1 CPU
and 1 torch thread, the data reaches it through the object store (``tune.with_parameters``). Its time
includes building the Tuner, starting trial actors, Tune's bookkeeping and gathering every trial's
history. Baseline: ``optuna.create_study`` + ``study.optimize`` in this one process, one trial after
the other, torch with 1 thread too: a second thread does not speed this small model up, and on busy
shared cores it made a trial 25x slower (0.5 s -> 13 s measured), so 1 is the baseline's best setting.
Neither side trains through Ray Train here: in the pipeline each trial is a ``TorchTrainer`` run whose
start-up (a controller and worker actors, seconds to a minute on 2 busy cores) is not measured here.

Figures: the search's wall time (target: ours at least 1.5x faster) and the best validation loss each
side found (no target; TPE's first 10 trials are seeded random draws, so up to 10 trials both sides try
the same points, after that ours proposes with less feedback because 2 trials are always in flight).
Sizes: 24 trials x 4 epochs on 200,000 rows; ``--quick``: 10 trials x 3 epochs on 150,000 rows;
``--smoke``: 2 trials x 1 epoch on 2,000 rows. A trial
must train for seconds for two at a time to pay for Tune's own start-up and bookkeeping.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from typing import Any

import numpy as np

# Run as ``python benchmarks/tune.py``: Python puts this folder first on sys.path.
from _harness import Figure, alternate, emit, log, parser, start_ray, summary

NAME = "tune"
FEATURES = 32
BATCH_SIZE = 256
SPACE = {
    "lr": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
    "weight_decay": {"type": "loguniform", "low": 1e-6, "high": 1e-2},
    "dropout": {"type": "uniform", "low": 0.0, "high": 0.3},
    "hidden_sizes": {"type": "choice", "values": [[32], [64, 32], [128, 64]]},
}


def make_data(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A fixed binary task: a linear score plus a few non-linear terms and noise; 80/20 split."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    score = x @ rng.normal(size=FEATURES) + 2 * np.sin(3 * x[:, 0]) + x[:, 1] * x[:, 2]
    y = (score + rng.normal(size=rows) > 0).astype(np.float32)
    cut = int(rows * 0.8)
    return {"x_train": x[:cut], "y_train": y[:cut], "x_valid": x[cut:], "y_valid": y[cut:]}


def train_mlp(
    params: dict[str, Any],
    data: dict[str, np.ndarray],
    epochs: int,
    threads: int,
    report: Callable[[int, float], None],
    seed: int = 0,
) -> float:
    """The objective both sides run: fit the MLP, report the validation loss after each epoch."""
    import torch

    from raymlops.models.torch_mlp import build_mlp

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    hidden = params["hidden_sizes"]
    model = build_mlp(FEATURES, json.loads(hidden) if isinstance(hidden, str) else hidden, params["dropout"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    x_valid, y_valid = torch.from_numpy(data["x_valid"]), torch.from_numpy(data["y_valid"])
    valid_loss = float("nan")
    for epoch in range(epochs):
        model.train()
        for index in torch.randperm(len(y)).split(BATCH_SIZE):
            optimizer.zero_grad()
            loss_fn(model(x[index]).squeeze(1), y[index]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            valid_loss = float(loss_fn(model(x_valid).squeeze(1), y_valid))
        report(epoch + 1, valid_loss)
    return valid_loss


def _tune_trial(config: dict[str, Any], data: dict[str, np.ndarray], epochs: int) -> None:
    import time

    from ray import tune

    started = time.time()  # to tell Tune's own start-up and wind-down from training, in the log

    def report(_: int, loss: float) -> None:
        tune.report({"valid/loss": loss, "started_at": started, "reported_at": time.time()})

    train_mlp(config, data, epochs, threads=1, report=report)


def ours(data: dict[str, np.ndarray], trials: int, epochs: int, seed: int) -> float:
    """The search on Ray Tune; returns the best final validation loss."""
    from omegaconf import OmegaConf
    from ray import tune

    from raymlops.config.schema import TuneConfig
    from raymlops.training.tune import run_search, search_space

    base = TuneConfig(num_samples=trials, max_concurrent_trials=2, seed=seed, scheduler=None)
    # Merged, not assigned: OmegaConf 2.3 refuses a plain dict assigned into dict[str, SearchDim].
    cfg = OmegaConf.merge(OmegaConf.structured(base), {"space": SPACE})
    trainable = tune.with_resources(tune.with_parameters(_tune_trial, data=data, epochs=epochs), {"CPU": 1})
    # Tune prints its experiment banner to stdout even with verbose=0; stdout is for the JSON lines.
    entered = time.time()
    with tempfile.TemporaryDirectory(prefix="raymlops-bench-tune-") as storage, redirect_stdout(sys.stderr):
        result = run_search(
            trainable,
            cfg,
            search_space(cfg.space),
            storage_path=storage,
            name="bench",
            max_t=epochs,
            metric="valid/loss",  # what _tune_trial reports; tune.metric's default (auto) needs a task
            mode="min",
        )
    left = time.time()
    if len(result.trials) != trials or any(len(t["history"]) != epochs for t in result.trials):
        raise SystemExit(f"tune: ours did not run {trials} full trials: {result.trials}")
    spent = [t["metrics"]["time_total_s"] for t in result.trials]
    first = min(t["history"][0]["started_at"] for t in result.trials)
    last = max(t["metrics"]["reported_at"] for t in result.trials)
    log(
        f"ours: {trials} trials, {np.mean(spent):.2f} s of training each on average (2 at a time); "
        f"{first - entered:.1f} s from run_search to the first trial, {left - last:.1f} s after the last"
    )
    return result.best_metric


def baseline(data: dict[str, np.ndarray], trials: int, epochs: int, seed: int) -> float:
    """The same search with plain Optuna, one trial after the other in this process."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        params = {
            "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "hidden_sizes": trial.suggest_categorical("hidden_sizes", ["[32]", "[64, 32]", "[128, 64]"]),
        }
        return train_mlp(params, data, epochs, threads=1, report=lambda step, loss: trial.report(loss, step))

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    spent = [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials]
    log(f"baseline: {trials} trials, {np.mean(spent):.2f} s of training each on average")
    return float(study.best_value)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=None, help="trials per search (default 24, --quick 10)")
    args = p.parse_args(argv)
    trials = args.trials or (2 if args.smoke else 10 if args.quick else 24)
    epochs = 1 if args.smoke else 3 if args.quick else 4
    rows = args.rows or (2_000 if args.smoke else 150_000 if args.quick else 200_000)
    repeats = args.repeats or 1
    data = make_data(rows)
    log(f"input: {rows:,} synthetic rows x {FEATURES} features; {trials} trials x {epochs} epochs")
    start_ray(num_cpus=2)
    warmup = args.warmup or 0  # a search is long: its first trials' start-up is part of what users wait for
    best: dict[str, list[float]] = {"ours": [], "baseline": []}
    ours_s, baseline_s = alternate(
        lambda: best["ours"].append(ours(data, trials, epochs, 42)),
        lambda: best["baseline"].append(baseline(data, trials, epochs, 42)),
        repeats,
        warmup,
    )
    figures = [
        Figure(NAME, "search_seconds", ours_s, baseline_s, "s", higher_is_better=False, target=1.5),
        Figure(
            NAME,
            "best_valid_loss",
            float(np.median(best["ours"])),
            float(np.median(best["baseline"])),
            "logloss",
            higher_is_better=False,
        ),
    ]
    for figure in figures:
        emit(figure)
    summary(figures, note=f"{trials} trials x {epochs} epochs, {rows:,} rows; baseline = sequential Optuna")
    return 0


if __name__ == "__main__":
    sys.exit(main())
