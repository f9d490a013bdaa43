"""The ``tune`` config checked against the chosen model, and its search space as Ray Tune domains.

Validation runs on the driver before any trial starts, so a typo in a search-space key or an empty
range fails in a second with the key's name instead of after minutes of trials. It imports no Ray.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from raymlops.errors import ConfigError, did_you_mean
from raymlops.models.family import reported_metrics, resolve_task
from raymlops.models.registry import family_of

if TYPE_CHECKING:
    from raymlops.tasks.base import Task

__all__ = [
    "AUTO",
    "decode_params",
    "max_reports",
    "metrics_any_task",
    "model_parameters",
    "objective",
    "search_space",
    "space_of",
    "validate_tune",
]


AUTO = "auto"  # tune.metric and tune.mode: the task's primary metric and its direction


def metrics_any_task() -> tuple[str, ...]:
    """What some task's families report: the ``tune.metric`` values accepted before the task is known."""
    from raymlops.tasks.registry import TASKS, task_class

    losses = {m for m in reported_metrics() if m.endswith("/loss")}  # every task reports the losses
    return tuple(sorted(losses | {f"valid/{task_class(name).primary_metric}" for name in TASKS}))


def objective(tune_cfg: Any, task: Task | None) -> tuple[str, str]:
    """The search's (metric, mode): ``auto`` is the task's ``valid/<primary_metric>`` and its direction
    (binary: valid/auc, max; multiclass: valid/macro_f1, max; regression: valid/rmse, min); a loss is
    always minimised. Raises ``ConfigError`` for a metric the task's families do not report."""
    task = resolve_task(task)
    metric = str(tune_cfg.metric)
    metric = f"valid/{task.primary_metric}" if metric == AUTO else metric
    reported = reported_metrics(task)
    if metric not in reported:
        problem = f"{metric!r} is not reported for a {task.name} task; it reports {', '.join(reported)}."
        raise ConfigError("tune.metric", problem + did_you_mean(metric, reported))
    mode = str(getattr(tune_cfg.mode, "value", tune_cfg.mode))
    if mode == AUTO:
        mode = "min" if metric.endswith("/loss") or not task.higher_is_better(metric) else "max"
    return metric, mode


def model_parameters(model_cfg: Any) -> list[str]:
    """The parameters a search space may set: the model config's keys, without Hydra's ``_target_``."""
    return [str(k) for k in model_cfg if not str(k).startswith("_")]


def space_of(tune_cfg: Any, model_cfg: Any) -> Any:
    """``tune.space``, or the family's own ``search_space`` when it is empty (``+tune=family``)."""
    if tune_cfg.space:
        return tune_cfg.space
    from raymlops.config.schema import SearchDim

    family = family_of(model_cfg)
    return OmegaConf.create(
        {
            name: OmegaConf.merge(OmegaConf.structured(SearchDim), dim)
            for name, dim in family.search_space.items()
        }
    )


def max_reports(model_cfg: Any, space_cfg: Any) -> int:
    """ASHA's ``max_t`` default: the reports of the longest trial the space allows."""
    family = family_of(model_cfg)
    params = dict(OmegaConf.to_container(model_cfg, resolve=True))  # type: ignore[arg-type]
    dim = space_cfg.get(family.budget_key)
    if dim is not None:  # the budget itself is searched: the longest value it can take
        params[family.budget_key] = max(_values(dim)) if _kind(dim) == "choice" else dim.high
    return family.reports(params)


# ``dim["values"]``, never ``dim.values``: on a DictConfig that is the mapping method ``values()``.


def _kind(dim: Any) -> str:
    kind = dim.type
    return str(getattr(kind, "value", kind))


def _check_dim(key: str, dim: Any) -> None:
    kind = _kind(dim)
    if kind == "choice":
        if not dim["values"]:
            raise ConfigError(key, "type 'choice' needs a non-empty `values` list, e.g. values: [0.1, 0.2].")
        return
    if dim["values"] is not None:
        raise ConfigError(key, f"`values` is only for type 'choice'; type {kind!r} uses low and high.")
    if dim.low is None or dim.high is None:
        raise ConfigError(key, f"type {kind!r} needs both `low` and `high`, got {dim.low} and {dim.high}.")
    if dim.low >= dim.high:
        raise ConfigError(key, f"low {dim.low} must be < high {dim.high}.")
    if kind == "loguniform" and dim.low <= 0:
        raise ConfigError(key, f"type 'loguniform' needs low > 0, got {dim.low}.")
    if kind == "int" and (dim.low != int(dim.low) or dim.high != int(dim.high)):
        raise ConfigError(key, f"type 'int' needs whole bounds, got low={dim.low}, high={dim.high}.")


def validate_tune(tune_cfg: Any, model_cfg: Any) -> None:
    """Raise ``ConfigError`` naming the first bad ``tune.*`` key; called before any trial runs."""
    if tune_cfg is None:
        raise ConfigError("tune", "is not set: add +tune=optuna (or another option of the tune group).")
    parameters = model_parameters(model_cfg)
    family = family_of(model_cfg)
    space = space_of(tune_cfg, model_cfg)
    if not space:
        raise ConfigError(
            "tune.space",
            f"is empty and {family.__qualname__} declares no search_space: there is nothing to search.",
            parameters,
        )
    for name, dim in space.items():
        key = f"tune.space.{name}"
        if name not in parameters:
            # ConfigError adds "Did you mean ...? Valid choices: <the model's parameters>".
            raise ConfigError(key, f"{name!r} is not a parameter of model {model_cfg._target_}.", parameters)
        _check_dim(key, dim)
    known = metrics_any_task()
    if tune_cfg.metric != AUTO and tune_cfg.metric not in known:
        # The hint is about the value here, not the key: did_you_mean on the metric itself. Whether the
        # task reports it is known once the features stage has chosen the task (``objective``).
        problem = f"{tune_cfg.metric!r} is not reported by {model_cfg._target_} (or use {AUTO!r})."
        raise ConfigError("tune.metric", problem + did_you_mean(tune_cfg.metric, known))
    for key, value, least in (
        ("num_samples", tune_cfg.num_samples, 1),
        ("max_concurrent_trials", tune_cfg.max_concurrent_trials, 1),
        ("trial_scaling.num_workers", tune_cfg.trial_scaling.num_workers, 1),
    ):
        if value < least:
            raise ConfigError(f"tune.{key}", f"must be >= {least}, got {value}.")
    asha = tune_cfg.scheduler
    if asha is not None:
        if asha.grace_period < 1 or asha.reduction_factor <= 1:
            raise ConfigError(
                "tune.scheduler",
                f"needs grace_period >= 1 and reduction_factor > 1, "
                f"got {asha.grace_period} and {asha.reduction_factor}.",
            )
        if asha.max_t is not None and asha.max_t < asha.grace_period:
            raise ConfigError(
                "tune.scheduler.max_t", f"{asha.max_t} is below grace_period {asha.grace_period}."
            )


def _values(dim: Any) -> list[Any]:
    values = dim["values"]
    plain = OmegaConf.to_container(values) if OmegaConf.is_config(values) else values
    assert isinstance(plain, list), "a choice's values are a list; _check_dim ran first"
    return plain


def _encode(value: Any) -> Any:
    """Optuna's categorical choices must be scalars: lists (e.g. hidden_sizes) travel as JSON text."""
    return json.dumps(value) if isinstance(value, list | dict) else value


def search_space(space_cfg: Any, model_cfg: Any | None = None) -> dict[str, Any]:
    """``ray.tune`` domains for ``tune.space``; validated against ``model_cfg`` when given.

    ``int`` bounds are both included (``tune.randint`` excludes its upper bound, so it gets high + 1).
    ``choice`` values that are lists are offered as JSON strings; ``decode_params`` turns them back.
    """
    from ray import tune

    parameters = model_parameters(model_cfg) if model_cfg is not None else None
    domains: dict[str, Any] = {}
    for name, dim in space_cfg.items():
        key = f"tune.space.{name}"
        if parameters is not None and name not in parameters:
            raise ConfigError(key, f"{name!r} is not a parameter of the model.", parameters)
        _check_dim(key, dim)
        kind = _kind(dim)
        if kind == "loguniform":
            domains[name] = tune.loguniform(float(dim.low), float(dim.high))
        elif kind == "uniform":
            domains[name] = tune.uniform(float(dim.low), float(dim.high))
        elif kind == "int":
            domains[name] = tune.randint(int(dim.low), int(dim.high) + 1)
        else:
            domains[name] = tune.choice([_encode(v) for v in _values(dim)])
    return domains


def decode_params(params: dict[str, Any], space_cfg: Any) -> dict[str, Any]:
    """A trial's config as model keyword arguments: JSON-encoded choices back to lists."""
    decoded = {}
    for name, value in params.items():
        dim = space_cfg.get(name)
        if dim is not None and _kind(dim) == "choice" and isinstance(value, str):
            value = {_encode(v): v for v in _values(dim)}.get(value, value)
        decoded[name] = value
    return decoded
