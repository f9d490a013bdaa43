"""Progressive rollout with automatic rollback: the candidate's share of traffic steps up on a schedule
while its live error rate, latency p99 and prediction distribution stay within thresholds of the
champion's; the first threshold crossed sends it back to 0% and the champion keeps serving.

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
from typing import Any

from raymlops.errors import ConfigError

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
        max_mean_shift: Largest difference of the mean predicted probability, candidate vs champion.
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
    step_timeout_s: float = 300.0
    poll_s: float = 1.0

    def __post_init__(self) -> None:
        steps = list(self.steps)
        if not steps or steps[-1] != 100 or any(b <= a for a, b in itertools.pairwise(steps)):
            raise ConfigError("serve.rollout.steps", f"must increase and end at 100, got {steps}.")
        if steps[0] <= 0:
            raise ConfigError("serve.rollout.steps", f"must start above 0 percent, got {steps[0]}.")
        if self.min_requests < 1:
            raise ConfigError("serve.rollout.min_requests", f"must be >= 1, got {self.min_requests}.")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RolloutPolicy:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"serve.rollout.{unknown[0]}", "is not a rollout setting.", known)
        values = dict(cfg)
        if "steps" in values:
            values["steps"] = tuple(float(s) for s in values["steps"])
        return cls(**values)


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
) -> Verdict:
    """Judge one step from the router's ``window`` statistics of both versions (served route)."""
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
        cand_mean, champ_mean = figures["candidate_mean_probability"], figures["champion_mean_probability"]
        if (
            cand_mean is not None
            and champ_mean is not None
            and abs(cand_mean - champ_mean) > policy.max_mean_shift
        ):
            reasons.append(
                f"mean prediction {cand_mean:.3f} vs champion {champ_mean:.3f} "
                f"(at most {policy.max_mean_shift:g} apart)"
            )
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
) -> RolloutResult:
    """Step ``candidate`` up against ``champion``; roll back on the first threshold crossed.

    ``audit(action, why, details)`` records each step, the rollback and the promotion; the caller
    moves aliases (see ``raymlops.serving.rollout_registry``).
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
