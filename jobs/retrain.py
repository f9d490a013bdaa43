"""Retrain when a trigger fires: new data, drift, an accuracy drop or a schedule; roll the result out.

    python jobs/retrain.py [--force] [--since ISO] [--until ISO] [overrides ...]

    --force          retrain whatever the triggers say (and despite retrain.cooldown_s)
    --since/--until  the monitor window the drift and accuracy triggers judge (default: the trailing
                     monitor.window up to now)
    overrides        the job's Hydra overrides (+experiment=quickstart, state_dir=..., env=prod,
                     retrain.on_drift=false, retrain.schedule='0 3 * * 1', ...): the same data,
                     registry, prediction log and pipeline the job uses

Every decision is an audit record of the model (``python -m raymlops models history <model>``):
``retrain-skipped`` with each trigger's reason and numbers, or ``retrain-trigger`` (one per fired
trigger, with its numbers), ``retrain-started`` (data version, champion), ``retrain-gate`` (metrics vs
the champion's, each gate) and ``retrain-rollout`` (promoted / rolled back / registered, and why), or
``retrain-rejected`` (a gate failed) / ``retrain-failed`` (an error, an interruption).

On a Ray cluster whose router application serves the model (``RAY_ADDRESS``; ``ray job submit -- python
jobs/retrain.py``) a passing candidate is rolled out progressively against the champion under live
traffic and promoted or rolled back automatically. Alone, this job starts an embedded Ray that serves
nothing: the candidate is gated and registered (``registry.on_pass``), not deployed.

Exit status: 0 skipped (no trigger) or released (promoted / registered); 1 the candidate was rejected
by a gate, rolled back, or the retrain failed; 2 bad arguments or config (the message names the key).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any


class UsageError(Exception):
    """Bad overrides: the message names the key and the valid ones."""


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="jobs/retrain.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--force", action="store_true", help="retrain whatever the triggers say")
    parser.add_argument("--since", help="monitor window start, ISO 8601 (default: until - monitor.window)")
    parser.add_argument("--until", help="monitor window end, ISO 8601, exclusive (default: now)")
    args, overrides = parser.parse_known_args(argv)
    unknown = [o for o in overrides if o.startswith("-")]
    if unknown:
        parser.error(f"unrecognized option(s): {' '.join(unknown)}")
    return args, overrides


def compose_config(overrides: list[str]) -> Any:  # -> DictConfig
    """The job config for ``overrides``, as ``python -m raymlops.job`` composes it."""
    from hydra.errors import ConfigCompositionException

    from raymlops.config import compose

    try:
        return compose(overrides)
    except ConfigCompositionException as exc:
        from raymlops.config.overrides import misspelt_key_message

        raise UsageError(misspelt_key_message(overrides) or f"{exc} {exc.__cause__ or ''}".strip()) from None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    # SIGTERM before Ray starts (a Kubernetes pod ending) interrupts like Ctrl-C; once an embedded Ray runs,
    # its driver's own handler takes SIGTERM over (and takes the embedded Ray down with the process).
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from raymlops.errors import ConfigError, RayMLOpsError

    try:
        cfg = compose_config(overrides)
        from raymlops.loop.retrain import run_retrain

        outcome = run_retrain(
            cfg,
            force=args.force,
            since=args.since,
            until=args.until,
            progress=lambda line: print(line, flush=True),
        )
    except (UsageError, ConfigError) as exc:
        print(f"retrain.py: {exc}", file=sys.stderr)
        return 2
    except RayMLOpsError as exc:
        print(f"retrain.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("retrain.py: interrupted", file=sys.stderr)
        return 130
    return 0 if outcome.status == "skipped" or outcome.released else 1


if __name__ == "__main__":
    sys.exit(main())
