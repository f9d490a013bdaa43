"""Progressive rollout with automatic rollback: the candidate's share of traffic steps up on a schedule
while its live error rate, latency p99 and prediction distribution stay within thresholds of the
champion's; the first threshold crossed sends it back to 0% and the champion keeps serving.

The prediction distribution is compared by the task's ``prediction_kind()`` (the candidate's task; None:
the legacy binary task): a probability by the shift of the mean predicted probability
(``max_mean_shift``); a value by the shift of the mean value in units of the champion's value standard
deviation (``max_value_shift_std``); classes by the total-variation distance of the answered classes'
shares, half the sum of their absolute differences (``max_class_share_shift``).

The controller is a loop over three injected functions, so the same code runs against a real router
(``RouterClient``: weights through ``deploy()``'s in-place reconfigure, statistics from
``GET /v1/models/{name}/stats``) and in unit tests:

- ``apply(weights)`` routes ``{version: percent}``;
- ``stats()`` returns the router's stats JSON for the model (``raymlops.serving.app.Router.stats``);
- ``clock()``/``sleep()`` measure and pass time.

Every step, the rollback (with the numbers that caused it) and the promotion are audit records in the
registry; promotion at 100% moves the ``champion`` alias (compare-and-set against the champion the
rollout started from), a rollback clears the candidate's ``challenger`` alias.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from raymlops.errors import ConfigError
from raymlops.settings_model import validate_settings

if TYPE_CHECKING:
    from raymlops.tasks.base import Task

__all__ = ["RolloutPolicy", "RolloutResult", "Verdict", "judge", "run_rollout"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RolloutPolicy:
    """When the candidate may take the next step, and what sends it back.

    Attributes:
        steps: The candidate's share of traffic in percent, increasing, ending at 100.
        min_requests: Candidate requests at a step (counted since the step began) before it is judged.
        min_step_s: Least time spent at a step, even when traffic is plentiful.
        max_error_rate_increase: Candidate error rate minus the champion's, over the recent window.
        max_p99_ratio: Candidate p50 and p99 latency at most this times the champion's ...
        p99_slack_ms: ... plus this (sub-millisecond p99s jitter by more than any sane ratio).
        max_mean_shift: Largest difference of the mean predicted probability, candidate vs champion
            (binary).
        max_value_shift_std: Largest difference of the mean predicted value, candidate vs champion, in
            champion value standard deviations (regression).
        max_class_share_shift: Largest total-variation distance between the shares of the classes the
            candidate and the champion answer (multiclass; 0: the same shares, 1: no class in common).
        step_timeout_s: A step that does not see ``min_requests`` in this time rolls back (no evidence).
        poll_s: Seconds between reads of the router's statistics.
    """

    steps: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
    min_requests: int = 100
    min_step_s: float = 5.0
    max_error_rate_increase: float = 0.02
    max_p99_ratio: float = 2.0
    p99_slack_ms: float = 5.0
    max_mean_shift: float = 0.1
    max_value_shift_std: float = 0.5
    max_class_share_shift: float = 0.15
    step_timeout_s: float = 300.0
    poll_s: float = 1.0

    def __post_init__(self) -> None:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        validate_settings(_RolloutShape, {**values, "steps": list(self.steps)}, "serve.rollout")
        steps = list(self.steps)
        if not steps or steps[-1] != 100 or any(b <= a for a, b in itertools.pairwise(steps)):
            raise ConfigError("serve.rollout.steps", f"must increase and end at 100, got {steps}.")
        if steps[0] <= 0:
            raise ConfigError("serve.rollout.steps", f"must start above 0 percent, got {steps[0]}.")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RolloutPolicy:
        values = validate_settings(_RolloutShape, cfg, "serve.rollout").model_dump(exclude_unset=True)
        if "steps" in values:
            values["steps"] = tuple(float(s) for s in values["steps"])
        return cls(**values)


_LIMIT = "must be a number >= 0"


class _RolloutShape(BaseModel):
    """``serve.rollout``'s shape (:class:`RolloutPolicy` documents each key)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    unknown_problem: ClassVar[str] = "is not a rollout setting."

    # The defaults are the dataclass's (one place); from_config leaves unset keys out of the dump anyway.
    steps: list[float] = Field(list(RolloutPolicy.steps), description="must be a list of percents")
    min_requests: int = Field(RolloutPolicy.min_requests, ge=1, description="must be an integer >= 1")
    min_step_s: float = Field(RolloutPolicy.min_step_s, ge=0, description=_LIMIT)
    max_error_rate_increase: float = Field(RolloutPolicy.max_error_rate_increase, ge=0, description=_LIMIT)
    max_p99_ratio: float = Field(RolloutPolicy.max_p99_ratio, ge=0, description=_LIMIT)
    p99_slack_ms: float = Field(RolloutPolicy.p99_slack_ms, ge=0, description=_LIMIT)
    max_mean_shift: float = Field(RolloutPolicy.max_mean_shift, ge=0, description=_LIMIT)
    max_value_shift_std: float = Field(RolloutPolicy.max_value_shift_std, ge=0, description=_LIMIT)
    max_class_share_shift: float = Field(RolloutPolicy.max_class_share_shift, ge=0, description=_LIMIT)
    step_timeout_s: float = Field(RolloutPolicy.step_timeout_s, gt=0, description="must be a number > 0")
    poll_s: float = Field(RolloutPolicy.poll_s, gt=0, description="must be a number > 0")


@dataclass(frozen=True)
class Verdict:
    action: str  # wait | advance | rollback
    reasons: tuple[str, ...] = ()
    figures: dict[str, Any] = field(default_factory=dict)


def judge(
    candidate: Mapping[str, Any],
    champion: Mapping[str, Any],
    policy: RolloutPolicy,
    *,
    requests_at_step: int,
    seconds_at_step: float,
    task: Task | None = None,
) -> Verdict:
    """Judge one step from the router's ``window`` statistics of both versions (served route);
    ``task``: the candidate's, which says what its predictions are (None: the legacy binary task)."""
    cand, champ = candidate.get("window", {}), champion.get("window", {})
    figures = {
        "candidate_requests": requests_at_step,
        "candidate_error_rate": cand.get("error_rate"),
        "champion_error_rate": champ.get("error_rate"),
        "candidate_p50_ms": (cand.get("latency_ms") or {}).get("p50"),
        "champion_p50_ms": (champ.get("latency_ms") or {}).get("p50"),
        "candidate_p99_ms": (cand.get("latency_ms") or {}).get("p99"),
        "champion_p99_ms": (champ.get("latency_ms") or {}).get("p99"),
        "candidate_mean_probability": cand.get("mean_probability"),
        "champion_mean_probability": champ.get("mean_probability"),
        "seconds_at_step": round(seconds_at_step, 2),
    }
    reasons = []
    # Errors are judged as soon as any exist: a broken candidate must not wait for min_requests.
    cand_errors, champ_errors = figures["candidate_error_rate"], figures["champion_error_rate"] or 0.0
    enough = cand_errors is not None and cand.get("requests", 0) >= 10
    if enough and cand_errors - champ_errors > policy.max_error_rate_increase:
        reasons.append(
            f"error rate {cand_errors:.3f} vs champion {champ_errors:.3f} "
            f"(at most +{policy.max_error_rate_increase:g})"
        )
    if requests_at_step >= policy.min_requests:
        # p50 as well as p99: a p99 of a few dozen requests is their slowest one, and on a busy host
        # the champion's tail grows too; a candidate slow on every request shows in its median.
        for q in ("p50", "p99"):
            cand_q, champ_q = figures[f"candidate_{q}_ms"], figures[f"champion_{q}_ms"]
            if cand_q is not None and champ_q is not None:
                bound = champ_q * policy.max_p99_ratio + policy.p99_slack_ms
                if cand_q > bound:
                    reasons.append(
                        f"latency {q} {cand_q:.1f} ms vs champion {champ_q:.1f} ms (at most {bound:.1f})"
                    )
        kind = task.prediction_kind() if task is not None else "probability"
        reason = _PREDICTION_CHECKS[kind](cand, champ, policy, figures)
        if reason:
            reasons.append(reason)
    if reasons:
        return Verdict("rollback", tuple(reasons), figures)
    if requests_at_step >= policy.min_requests and seconds_at_step >= policy.min_step_s:
        return Verdict("advance", (), figures)
    if seconds_at_step > policy.step_timeout_s:
        return Verdict(
            "rollback",
            (f"only {requests_at_step} requests in {seconds_at_step:.0f} s (need {policy.min_requests})",),
            figures,
        )
    return Verdict("wait", (), figures)


def _probability_shift(
    cand: Mapping[str, Any], champ: Mapping[str, Any], policy: RolloutPolicy, figures: dict[str, Any]
) -> str | None:
    cand_mean, champ_mean = figures["candidate_mean_probability"], figures["champion_mean_probability"]
    if cand_mean is None or champ_mean is None or abs(cand_mean - champ_mean) <= policy.max_mean_shift:
        return None
    return (
        f"mean prediction {cand_mean:.3f} vs champion {champ_mean:.3f} "
        f"(at most {policy.max_mean_shift:g} apart)"
    )


def _value_shift(
    cand: Mapping[str, Any], champ: Mapping[str, Any], policy: RolloutPolicy, figures: dict[str, Any]
) -> str | None:
    mine, theirs = cand.get("prediction") or {}, champ.get("prediction") or {}
    mean, base, std = mine.get("mean"), theirs.get("mean"), theirs.get("std")
    figures.update(candidate_mean_value=mean, champion_mean_value=base, champion_value_std=std)
    if mean is None or base is None or std is None:
        return None
    # In the champion's standard deviations: a shift of 3 means little for prices in thousands.
    scale = std if std > 0 else max(abs(base), 1.0)
    shift = abs(mean - base) / scale
    figures["value_shift_std"] = round(shift, 4)
    if shift <= policy.max_value_shift_std:
        return None
    return (
        f"mean value {mean:.4g} vs champion {base:.4g}: {shift:.2f} champion std apart "
        f"(at most {policy.max_value_shift_std:g})"
    )


def _class_share_shift(
    cand: Mapping[str, Any], champ: Mapping[str, Any], policy: RolloutPolicy, figures: dict[str, Any]
) -> str | None:
    mine = (cand.get("prediction") or {}).get("class_shares")
    theirs = (champ.get("prediction") or {}).get("class_shares")
    figures.update(candidate_class_shares=mine, champion_class_shares=theirs)
    if not mine or not theirs:
        return None
    width = max(len(mine), len(theirs))
    a = [*mine, *[0.0] * (width - len(mine))]
    b = [*theirs, *[0.0] * (width - len(theirs))]
    distance = 0.5 * sum(abs(x - y) for x, y in zip(a, b, strict=True))
    figures["class_share_distance"] = round(distance, 4)
    if distance <= policy.max_class_share_shift:
        return None
    return (
        f"answered class shares {[round(x, 3) for x in mine]} vs champion {[round(x, 3) for x in theirs]}: "
        f"total variation {distance:.3f} (at most {policy.max_class_share_shift:g})"
    )


# Task.prediction_kind() -> how a candidate's predictions are compared with the champion's.
_PREDICTION_CHECKS = {"probability": _probability_shift, "value": _value_shift, "classes": _class_share_shift}


@dataclass(frozen=True)
class RolloutResult:
    outcome: str  # promoted | rolled_back
    candidate: str
    champion: str
    timeline: tuple[dict[str, Any], ...]
    reasons: tuple[str, ...] = ()


def _served(stats: Mapping[str, Any], version: str) -> dict[str, Any]:
    entry = stats.get("versions", {}).get(version)
    return dict(entry["served"]) if entry else {}


def run_rollout(
    *,
    model: str,
    champion: str,
    candidate: str,
    policy: RolloutPolicy,
    apply: Callable[[Mapping[str, float]], None],
    stats: Callable[[], Mapping[str, Any]],
    audit: Callable[[str, str, dict[str, Any]], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[str], None] | None = None,
    task: Task | None = None,
) -> RolloutResult:
    """Step ``candidate`` up against ``champion``; roll back on the first threshold crossed.

    ``audit(action, why, details)`` records each step, the rollback and the promotion; ``task``: the
    candidate's (what its predictions are; None: the legacy binary task). The caller moves aliases
    (see ``raymlops.serving.rollout_registry``).
    """
    say = progress or (lambda message: logger.info("%s", message))
    timeline: list[dict[str, Any]] = []

    def event(action: str, why: str, **details: Any) -> None:
        entry = {"action": action, "why": why, **details}
        timeline.append(entry)
        audit(action, why, details)
        say(f"rollout {model} v{candidate}: {action} - {why}")

    for percent in policy.steps:
        apply({champion: 100.0 - percent, candidate: percent})
        event("rollout-step", f"candidate at {percent:g}% of traffic", percent=percent)
        started_at, base = clock(), _served(stats(), candidate).get("requests_total", 0)
        while True:
            sleep(policy.poll_s)
            snapshot = stats()
            cand, champ = _served(snapshot, candidate), _served(snapshot, champion)
            verdict = judge(
                cand,
                champ,
                policy,
                requests_at_step=cand.get("requests_total", 0) - base,
                seconds_at_step=clock() - started_at,
                task=task,
            )
            if verdict.action == "wait":
                continue
            if verdict.action == "rollback":
                apply({champion: 100.0, candidate: 0.0})
                why = "; ".join(verdict.reasons)
                event("rollout-rollback", f"at {percent:g}%: {why}", percent=percent, figures=verdict.figures)
                return RolloutResult("rolled_back", candidate, champion, tuple(timeline), verdict.reasons)
            timeline.append({"action": "step-passed", "percent": percent, "figures": verdict.figures})
            break
    event("rollout-promote", "every step within thresholds", percent=100.0)
    return RolloutResult("promoted", candidate, champion, tuple(timeline))


def weights_for(specs: Sequence[Any], weights: Mapping[str, float]) -> list[Any]:
    """``specs`` (ModelSpec) with their ``weight`` replaced from ``weights`` (percent) where given."""
    import dataclasses

    return [
        dataclasses.replace(s, weight=float(weights[s.version])) if s.version in weights else s for s in specs
    ]
