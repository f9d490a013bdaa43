"""``python -m raymlops.job +experiment=<name> [overrides]``: compose config, connect Ray, run the pipeline.

``--help`` lists the config groups and their options (Hydra). The job prints a summary table at the end;
with ``serve.block=true`` it keeps serving until Ctrl-C.
"""

from __future__ import annotations

import logging
import sys
import time

import hydra
from omegaconf import DictConfig

from raymlops.config import CONFIG_DIR, register_configs
from raymlops.config.overrides import misspelt_key_message
from raymlops.errors import RayMLOpsError

logger = logging.getLogger("raymlops.job")

register_configs()


def _describe(answer: dict) -> str:
    """One sample HTTP answer on one line: the request, the prediction, what really happened."""
    request = " ".join(f"{k}={v}" for k, v in answer["record"].items())
    [prediction] = answer["body"]["predictions"]
    actual = " ".join(f"{k}={v}" for k, v in answer.get("actual", {}).items())
    shown = {k: v for k, v in prediction.items() if k in _ANSWER_FIELDS}  # not "imputed" and the like
    version = answer["headers"]["model-version"]
    return f"{request} -> {_short(shown)} [model-version {version}; actual {actual}]"


# Every task's v1 answer fields: binary probability, label; multiclass label, probabilities; regression value.
_ANSWER_FIELDS = ("probability", "label", "probabilities", "value")


def _short(value) -> str:
    """An answer for one line: floats to 3 decimals, strings quoted, ints as they are."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return repr(value)


def format_summary(ctx, state) -> str:  # RunContext, PipelineState | None
    """The table a person reads at the end of a run: stage, seconds, key figures; then the served model."""
    seconds = ctx.lineage.get("stage_seconds", {})
    rows = [
        (
            stage,
            f"{seconds.get(stage, 0):.1f}",
            ", ".join(f"{k}={v}" for k, v in ctx.figures.get(stage, {}).items()),
        )
        for stage in seconds
    ]
    width = max([len(r[0]) for r in rows] + [5])
    lines = [
        f"run {ctx.run_id}  ({ctx.lineage.get('total_seconds', 0):.1f} s)",
        f"{'stage':<{width}}  {'sec':>6}  key figures",
        f"{'-' * width}  {'-' * 6}  {'-' * 40}",
    ]
    lines += [f"{stage:<{width}}  {sec:>6}  {figures}" for stage, sec, figures in rows]
    if state is not None and state.register is not None:
        reg = state.register
        lines += [
            "",
            f"registered model: {reg.model_name} version {reg.version} (mlflow run {reg.run_id})",
            f"data version:     {ctx.lineage.get('data_version')}",
        ]
    if state is not None and state.deploy is not None:
        lines += [
            f"served at:        POST {state.deploy.url}/v1/models/{state.register.model_name}/predict",
            "",
            "sample requests over HTTP:",
        ]
        lines += [f"  {_describe(answer)}" for answer in state.deploy.sample_answers]
    return "\n".join(lines)


@hydra.main(config_path=str(CONFIG_DIR), config_name="job", version_base=None)
def main(cfg: DictConfig) -> None:
    from raymlops.pipeline.context import RunContext
    from raymlops.pipeline.runner import run_pipeline

    ctx = RunContext(cfg)
    try:
        ctx, state = run_pipeline(cfg, ctx)
    except RayMLOpsError as exc:
        print(format_summary(ctx, None), file=sys.stderr)
        print(f"\nraymlops.job failed: {exc}", file=sys.stderr)
        if exc.__cause__ is not None:
            print(f"caused by: {type(exc.__cause__).__name__}: {exc.__cause__}", file=sys.stderr)
        sys.exit(1)
    if not (cfg.serve.block and state.deploy is not None):
        # Flush the workers' buffered logs now, so the summary is the last thing printed. An embedded
        # Ray (and its Serve app) would stop at exit anyway; on a cluster this only disconnects.
        import ray

        ray.shutdown()
    print(format_summary(ctx, state), flush=True)
    if cfg.serve.block and state.deploy is not None:
        print("serving until Ctrl-C ...", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    problem = misspelt_key_message(sys.argv[1:])
    if problem:
        print(f"raymlops.job: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
