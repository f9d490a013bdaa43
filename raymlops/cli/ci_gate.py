"""``raymlops ci-gate``: gate a change to data or model config in CI: validate -> train -> evaluate against
the champion.

    raymlops ci-gate [--out FILE.md] [--max-regression METRIC=DROP ...] [--dry-run] [overrides ...]

    --out             the markdown comparison (candidate vs champion, every gate), e.g. for a PR comment
                      (default: ci_gate.md)
    --max-regression  how much worse than the champion a metric may be, e.g. test/auc=0.0 or
                      test/primary=0.0 (the task's primary metric: auc, macro_f1, rmse) (repeatable;
                      default: the config's evaluate.champion.max_regression, else test/primary=0.0)
    --dry-run         compose the config and write the plan (stages, data, champion, gates); no Ray, no
                      training: checks the overrides and the workflow in seconds
    overrides         the job's Hydra overrides (+experiment=quickstart, data.ref=...,
                      registry.tracking_uri=...)

The candidate is trained and scored like the job does (``stages=[ingest, validate, features, train,
evaluate]``); nothing is exported, registered or deployed, so a pull request cannot change the registry.
The champion (``evaluate.champion.alias`` of ``registry.model_name``) is re-scored on the candidate's test
rows with the candidate's task (a champion of another task is not compared). With the embedded
defaults (a local SQLite registry) it runs on a laptop as in CI; the first run has no champion and is
judged by ``evaluate.gates`` alone (null: the task's default gates). Any task: the markdown lists the
metrics the task computes, with which way is better.

Exit status: 0 every gate passed; 1 a gate or the data validation failed, or the run failed (the
markdown says which); 2 bad arguments or config (the message names the key).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from raymlops.cli.overrides import UsageError

__all__ = ["add_ci_gate_command", "plan_markdown", "result_markdown", "run_ci_gate_command"]

GATE_STAGES = ("ingest", "validate", "features", "train", "evaluate")
DEFAULT_MAX_REGRESSION = {"test/primary": 0.0}  # the task's primary metric may not drop at all


def add_ci_gate_command(sub: argparse._SubParsersAction) -> None:
    gate = sub.add_parser(
        "ci-gate",
        help="validate -> train -> evaluate against the champion, for CI (jobs/ci_gate.py)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gate.add_argument("--out", type=Path, default=Path("ci_gate.md"), help="markdown comparison")
    gate.add_argument("--max-regression", action="append", default=[], metavar="METRIC=DROP")
    gate.add_argument("--dry-run", action="store_true", help="compose and write the plan only")
    gate.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job")


def _max_regression(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        metric, sep, value = item.partition("=")
        try:
            drop = float(value)
        except ValueError:
            sep = ""
        if not sep or not metric or "/" not in metric or not math.isfinite(drop) or drop < 0:
            raise UsageError(
                f"--max-regression {item!r} is not SPLIT/METRIC=DROP with DROP >= 0 (e.g. test/auc=0.01)."
            )
        out[metric] = drop
    return out


def compose_config(overrides: list[str], max_regression: dict[str, float]) -> Any:  # -> DictConfig
    """The job config for ``overrides``, reduced to the gate's stages, with a champion gate."""
    from omegaconf import OmegaConf, open_dict

    from raymlops.cli.overrides import compose_overrides

    cfg = compose_overrides([*overrides, f"stages=[{','.join(GATE_STAGES)}]"])
    bounds = cfg.evaluate.champion.max_regression  # null: the task's tolerance; CI is strict instead
    configured = OmegaConf.to_container(bounds) if bounds is not None else {}
    with open_dict(cfg):
        # Without a bound the evaluate stage does not score the champion at all: CI always compares.
        cfg.evaluate.champion.max_regression = max_regression or configured or DEFAULT_MAX_REGRESSION
    return cfg


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))


def _gates(gates: Any) -> str:
    if gates is None:
        return "the task's default (its primary metric beats the constant baseline)"
    return ", ".join(f"`{g}`" for g in gates) or "none"


def plan_markdown(cfg: Any) -> str:
    """What the gate will run and judge, without running it (``--dry-run``)."""
    bounds = ", ".join(f"`{m}` may drop {d:g}" for m, d in cfg.evaluate.champion.max_regression.items())
    return "\n".join(
        [
            "## Model gate (dry run)",
            "",
            f"- stages: {' -> '.join(cfg.stages)}",
            f"- data: `{cfg.data.ref}`",
            f"- model: `{cfg.model._target_}`, run `{cfg.run_name}`",
            f"- champion: `{cfg.registry.model_name}@{cfg.evaluate.champion.alias}` ({bounds})",
            f"- gates: {_gates(cfg.evaluate.gates)}",
            "",
        ]
    )


def _direction(task: Any, metric: str) -> str:
    """'higher' / 'lower' (which way is better for ``task``), '-' for counts and unknown metrics."""
    if task is None:
        return "-"
    try:
        return "higher" if task.higher_is_better(metric) else "lower"
    except KeyError:
        return "-"


def result_markdown(cfg: Any, evaluation: Any, task: Any = None) -> str:
    """Candidate vs champion, metric by metric, and every gate with its verdict."""
    champion = evaluation.champion or {}
    theirs = champion.get("metrics", {})
    verdict = "passed" if evaluation.passed else "FAILED"
    lines = [
        f"## Model gate: {verdict}",
        "",
        f"Candidate `{cfg.run_name}` on `{cfg.data.ref}` vs "
        + (
            f"`{cfg.registry.model_name}` v{champion['version']} ({cfg.evaluate.champion.alias})"
            if champion
            else f"no `{cfg.evaluate.champion.alias}` of `{cfg.registry.model_name}` (gates only)"
        ),
        "",
        "| metric | better | candidate | champion | change | baseline |",
        "|---|---|---|---|---|---|",
    ]
    if champion.get("skipped"):
        lines[4:4] = [f"The champion was not compared: it {champion['skipped']}.", ""]
    for metric, value in sorted(evaluation.metrics.items()):
        other = theirs.get(metric)
        change = f"{value - other:+.4f}" if isinstance(other, float) and isinstance(value, float) else "-"
        baseline = _fmt(evaluation.baseline.get(metric))
        better = _direction(task, metric)
        lines.append(f"| {metric} | {better} | {_fmt(value)} | {_fmt(other)} | {change} | {baseline} |")
    lines += ["", "| gate | result | detail |", "|---|---|---|"]
    lines += [f"| `{g.gate}` | {'pass' if g.passed else 'FAIL'} | {g.detail} |" for g in evaluation.gates]
    return "\n".join(lines) + "\n"


def run_ci_gate_command(args: argparse.Namespace) -> int:
    """The gate; the pipeline checks the role of each of its actions (``authorize_job``)."""
    from raymlops.errors import ConfigError, RayMLOpsError

    cfg = compose_config(args.overrides, _max_regression(args.max_regression))
    if args.dry_run:
        args.out.write_text(plan_markdown(cfg))
        print(f"{args.prog}: plan written to {args.out}")
        return 0
    from raymlops.pipeline.runner import run_pipeline

    try:
        _, state = run_pipeline(cfg)
    except ConfigError:
        raise  # the front door's exit 2
    except RayMLOpsError as exc:  # data validation or a stage failed: the PR still gets a comment
        args.out.write_text(f"## Model gate: FAILED\n\n```\n{exc}\n```\n")
        print(f"{args.prog}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a crash (Ray did not start, ...): a comment, then the front door reports it
        args.out.write_text(f"## Model gate: FAILED (error)\n\n```\n{type(exc).__name__}: {exc}\n```\n")
        raise
    evaluation = state.require("evaluate")
    args.out.write_text(result_markdown(cfg, evaluation, state.require("features").task))
    print(args.out.read_text())
    return 0 if evaluation.passed else 1
