"""Hyper-parameter search on Ray Tune: Optuna proposes trials, ASHA stops the poor ones early.

Each trial is a function trainable that fits the configured model with the same ``model.fit`` as the
train stage, on its own Ray Train run. ``TuneReportCallback`` forwards every per-epoch report of
that run to Tune (``Tuner(TorchTrainer(...))`` is refused in Ray 2.60, see RAY-NOTES), so ASHA sees
each epoch and can stop a trial between two of them. The metric is the task's (``tune.metric: auto``,
see ``raymlops.training.tune_space.objective``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from raymlops.errors import RayMLOpsError
from raymlops.models.registry import build_model
from raymlops.training.placement_groups import actor_created_groups, release_placement_groups
from raymlops.training.tune_space import (
    AUTO,
    decode_params,
    max_reports,
    objective,
    search_space,
    space_of,
    validate_tune,
)

if TYPE_CHECKING:
    from raymlops.tasks.base import Task

__all__ = ["SearchResult", "model_trainable", "run_search", "search_space", "tune_model", "validate_tune"]

logger = logging.getLogger(__name__)

# What Tune adds to every report; the rest of a report is what the trainable itself reported.
_TUNE_KEYS = {
    "timestamp",
    "checkpoint_dir_name",
    "done",
    "trial_id",
    "date",
    "time_this_iter_s",
    "pid",
    "hostname",
    "node_ip",
    "time_since_restore",
    "iterations_since_restore",
    "checkpoint_path",  # TuneReportCallback: where the Ray Train run put this report's checkpoint
}
# How long a search waits, at its end, for its stopped trials' Ray Train runs to end (seconds).
_RELEASE_WAIT_S = 30.0
# A trial's own Tune process only waits on its Ray Train run; Tune refuses {"CPU": 0}.
_TRIAL_CPUS = 0.01


@dataclass(frozen=True)
class SearchResult:
    """The outcome of one search. ``trials`` holds one record per trial, early-stopped ones included."""

    metric: str
    best_params: dict[str, Any]
    best_metric: float
    best_checkpoint: Any  # ray.train.Checkpoint of the best trial's last report; None if it reported none
    trials: list[dict[str, Any]]  # {name, params, history, metrics, best, stopped_early, error}

    @property
    def stopped_early(self) -> int:
        return sum(bool(t["stopped_early"]) for t in self.trials)


def _trial_callback(metric: str) -> Any:
    from ray.tune import Callback

    class _TrialLog(Callback):
        """One log line per finished trial (the search's progress without Tune's status tables), and the
        CPUs of stopped trials' Ray Train runs given back as the search goes (placement_groups.py)."""

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            _release_stopped_runs()

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **_: Any) -> None:
            _release_stopped_runs()

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            result = trial.last_result or {}
            logger.info(
                "trial finished trial=%s reports=%s %s=%s params=%s",
                trial.trial_id,
                result.get("training_iteration"),
                metric,
                result.get(metric),
                trial.config,
            )
            _release_stopped_runs()

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            logger.warning("trial failed trial=%s params=%s", trial.trial_id, trial.config)
            _release_stopped_runs()

    return _TrialLog()


def _release_stopped_runs() -> None:
    try:
        release_placement_groups()
    except Exception:  # a failed clean-up must not fail the search; the next event tries again
        logger.warning("could not release the placement groups of stopped trials", exc_info=True)


def _history(result: Any) -> list[dict[str, Any]]:
    frame = result.metrics_dataframe
    if frame is None:
        return []
    rows = frame.to_dict("records")
    return [
        {
            k: v
            for k, v in row.items()
            if k not in _TUNE_KEYS and not k.startswith("config/") and isinstance(v, int | float)
        }
        for row in rows
    ]


def _checkpoint(result: Any) -> Any:
    """The trial's last checkpoint: TuneReportCallback reports its path as a metric, and not every
    report has one (XGBoost checkpoints every ``report_every`` rounds but reports every round)."""
    import ray.train

    if result.checkpoint is not None:
        return result.checkpoint
    frame = result.metrics_dataframe
    if frame is None or "checkpoint_path" not in frame:
        return None
    paths = frame["checkpoint_path"].dropna()
    return ray.train.Checkpoint(str(paths.iloc[-1])) if len(paths) else None


def run_search(
    trainable: Any,
    tune_cfg: Any,
    space: dict[str, Any],
    *,
    storage_path: str,
    name: str,
    max_t: int,
    decode: Callable[[dict[str, Any]], dict[str, Any]] = dict,
    metric: str | None = None,
    mode: str | None = None,
) -> SearchResult:
    """Run ``tune_cfg.num_samples`` trials of ``trainable`` over ``space`` and gather every trial.

    Args:
        trainable: a Tune function trainable that reports ``tune_cfg.metric`` once per time step.
        max_t: reports of the longest trial (ASHA's last rung; it stops any trial that gets there).
        decode: turns a trial's config into the params recorded (e.g. JSON choices back to lists).
        metric, mode: what to optimise, resolved from the task (``tune_space.objective``); default
            ``tune_cfg.metric`` and ``tune_cfg.mode``, which must then not be ``auto``.
    """
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    metric = str(tune_cfg.metric) if metric is None else metric
    mode = str(getattr(tune_cfg.mode, "value", tune_cfg.mode)) if mode is None else mode
    if AUTO in (metric, mode):
        raise RayMLOpsError(
            f"run_search got tune.metric={metric!r}, tune.mode={mode!r}: resolve 'auto' for the task first "
            "(raymlops.training.tune_space.objective)."
        )
    asha = tune_cfg.scheduler
    scheduler = None if asha is None else _recording_asha(max_t, asha.grace_period, asha.reduction_factor)
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            # metric and mode go here only: Tune refuses them on both the config and the searcher.
            metric=metric,
            mode=mode,
            search_alg=OptunaSearch(seed=int(tune_cfg.seed)),
            scheduler=scheduler,
            num_samples=int(tune_cfg.num_samples),
            max_concurrent_trials=int(tune_cfg.max_concurrent_trials),
            # Reusing trial processes saves re-importing torch and Ray (10 trivial trials: 78 s -> 11 s on
            # 2 busy cores), but a trial ASHA stopped is still inside model.fit, and Tune 2.60 then fails
            # the next trial on that process ("reuse requires reset_config() ... return True") instead
            # of starting a fresh one. So only without a scheduler that stops trials.
            reuse_actors=scheduler is None,
        ),
        run_config=tune.RunConfig(
            storage_path=storage_path, name=name, verbose=0, callbacks=[_trial_callback(metric)]
        ),
    )
    logger.info(
        "search started trials=%d concurrent=%d metric=%s mode=%s scheduler=%s max_t=%d",
        tune_cfg.num_samples,
        tune_cfg.max_concurrent_trials,
        metric,
        mode,
        "asha" if scheduler else "fifo",
        max_t,
    )
    before = set(actor_created_groups())
    grid = tuner.fit()
    # The last trials ASHA stopped may still be exiting: their Train runs' CPUs must be back before the
    # train stage (or anything else in this Ray) asks for them.
    release_placement_groups(keep=before, wait_s=_RELEASE_WAIT_S)
    return _gather(grid, metric, mode, scheduler.stopped if scheduler else set(), decode)


def _recording_asha(max_t: int, grace_period: int, reduction_factor: float) -> Any:
    """ASHA that remembers which trials it cut short, so that a trial that ended by itself (fewer
    epochs searched, XGBoost's early stopping) is not counted as stopped by the scheduler."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class _RecordingASHA(ASHAScheduler):
        def __init__(self) -> None:
            super().__init__(
                time_attr="training_iteration",
                max_t=max_t,
                grace_period=min(int(grace_period), max_t),
                reduction_factor=float(reduction_factor),
            )
            self.stopped: set[str] = set()

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            # ASHA also says STOP when a trial reaches max_t: that trial ran its whole course.
            if decision == TrialScheduler.STOP and result.get("training_iteration", max_t) < max_t:
                self.stopped.add(trial.trial_id)
            return decision

    return _RecordingASHA()


def _gather(
    grid: Any,
    metric: str,
    mode: str,
    stopped: set[str],
    decode: Callable[[dict[str, Any]], dict[str, Any]],
) -> SearchResult:
    records: list[dict[str, Any]] = []
    results: list[Any] = []
    errors: list[BaseException] = []
    for result in grid:
        params = decode(dict(result.config or {}))
        history = _history(result)
        trial_id = str((result.metrics or {}).get("trial_id") or Path(result.path).name)
        error = None if result.error is None else f"{type(result.error).__name__}: {result.error}"
        if result.error is not None:
            errors.append(result.error)
        records.append(
            {
                "name": trial_id,
                "params": params,
                "history": history,
                "metrics": history[-1] if history else {},
                "best": False,
                "stopped_early": trial_id in stopped,
                "error": error,
            }
        )
        results.append(result)
    scored = [
        i
        for i, r in enumerate(records)
        if r["error"] is None and isinstance(r["metrics"].get(metric), int | float)
        if math.isfinite(r["metrics"][metric])
    ]
    if not scored:
        raise RayMLOpsError(
            f"No trial of the search reported a finite {metric!r} ({len(errors)} of {len(records)} failed)."
        ) from (errors[0] if errors else None)
    pick = min if mode == "min" else max
    best = pick(scored, key=lambda i: records[i]["metrics"][metric])
    records[best]["best"] = True
    return SearchResult(
        metric=metric,
        best_params=records[best]["params"],
        best_metric=float(records[best]["metrics"][metric]),
        best_checkpoint=_checkpoint(results[best]),
        trials=records,
    )


def _fit_trial(
    config: dict[str, Any],
    *,
    datasets: dict[str, Any],
    model_cfg: Any,
    trainer_cfg: Any,
    space_cfg: Any,
    num_features: int,
    seed: int,
    storage_path: str,
    task: Task | None = None,
) -> None:
    """One trial: the configured model with the trial's params, fitted by the train stage's code."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    model = build_model(model_cfg, **decode_params(config, space_cfg))
    trial_id = ray.tune.get_context().get_trial_id()
    model.fit(
        datasets,
        num_features,
        trainer_cfg,
        f"{storage_path}/{trial_id}",
        seed,
        callbacks=[TuneReportCallback()],
        task=task,
    )


def model_trainable(
    cfg: Any,
    datasets: dict[str, Any],
    num_features: int,
    storage_path: str,
    space_cfg: Any = None,
    task: Task | None = None,
) -> Any:
    """The Tune trainable that fits ``cfg.model``; datasets reach the trials through the object store.

    ``space_cfg``: the search space its trials' params come from (default: ``tune.space`` or the family's).
    """
    from ray import tune

    space_cfg = space_of(cfg.tune, cfg.model) if space_cfg is None else space_cfg

    trainer_cfg = OmegaConf.merge(cfg.trainer, {"scaling": cfg.tune.trial_scaling})
    fn = tune.with_parameters(
        _fit_trial,
        datasets=datasets,
        model_cfg=OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True)),
        trainer_cfg=trainer_cfg,
        # Detached from the job config: a child node would pickle its whole parent into every trial.
        space_cfg=OmegaConf.create(OmegaConf.to_container(space_cfg, enum_to_str=True)),
        num_features=num_features,
        seed=int(cfg.seed),
        storage_path=storage_path,
        task=task,
    )
    return tune.with_resources(fn, {"CPU": _TRIAL_CPUS})


def tune_model(
    cfg: Any,
    datasets: dict[str, Any],
    num_features: int,
    *,
    tune_path: str,
    train_path: str,
    name: str,
    task: Task | None = None,
) -> tuple[SearchResult, Any]:
    """Search ``cfg.tune.space`` for ``cfg.model`` on ``task`` (None: the legacy binary task); return
    the search and the best trial's fitted model. ``tune.metric: auto`` is the task's primary metric.

    Tune's experiment goes to ``tune_path/name``; each trial's Ray Train run to ``train_path/<trial id>``.
    """
    validate_tune(cfg.tune, cfg.model)
    metric, mode = objective(cfg.tune, task)
    space_cfg = space_of(cfg.tune, cfg.model)
    asha = cfg.tune.scheduler
    max_t = max_reports(cfg.model, space_cfg) if asha is None or asha.max_t is None else asha.max_t
    search = run_search(
        model_trainable(cfg, datasets, num_features, train_path, space_cfg, task),
        cfg.tune,
        search_space(space_cfg, cfg.model),
        storage_path=tune_path,
        name=name,
        max_t=int(max_t),
        decode=lambda params: decode_params(params, space_cfg),
        metric=metric,
        mode=mode,
    )
    if search.best_checkpoint is None:
        raise RayMLOpsError("The best trial reported no checkpoint: it stopped before its first epoch ended.")
    model = build_model(cfg.model, **search.best_params)
    return search, model.load_checkpoint(search.best_checkpoint, num_features, task)
