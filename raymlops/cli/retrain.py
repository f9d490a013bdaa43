"""``raymlops retrain``: retrain when a trigger fires (new data, drift, an accuracy drop, a schedule), gate
the candidate and roll it out.

    raymlops retrain [--force] [--since ISO] [--until ISO] [overrides ...]

    --force          retrain whatever the triggers say (and despite retrain.cooldown_s)
    --since/--until  the monitor window the drift and accuracy triggers judge (default: the trailing
                     monitor.window up to now)
    overrides        the job's Hydra overrides (+experiment=quickstart, state_dir=..., env=prod,
                     retrain.on_drift=false, retrain.schedule='0 3 * * 1', ...): the same data,
                     registry, prediction log and pipeline the job uses

Every decision is an audit record of the model (``raymlops models history <model>``):
``retrain-skipped`` with each trigger's reason and numbers, or ``retrain-trigger`` (one per fired
trigger, with its numbers), ``retrain-started`` (data version, champion), ``retrain-gate`` (metrics vs
the champion's, each gate) and ``retrain-rollout`` (promoted / rolled back / registered, and why), or
``retrain-rejected`` (a gate failed) / ``retrain-failed`` (an error, an interruption).

On a Ray cluster whose router application serves the model (``RAY_ADDRESS``; ``ray job submit -- python
jobs/retrain.py``) a passing candidate is rolled out progressively against the champion under live
traffic and promoted or rolled back automatically. Alone, this command starts an embedded Ray that serves
nothing: the candidate is gated and registered (``registry.on_pass``), not deployed.

Exit status: 0 skipped (no trigger) or released (promoted / registered); 1 the candidate was rejected
by a gate, rolled back, or the retrain failed; 2 bad arguments or config (the message names the key);
130 interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

__all__ = ["add_retrain_command", "run_retrain_command"]


def add_retrain_command(sub: argparse._SubParsersAction) -> None:
    retrain = sub.add_parser(
        "retrain",
        help="retrain when a trigger fires, gate, roll out (jobs/retrain.py)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    retrain.add_argument("--force", action="store_true", help="retrain whatever the triggers say")
    retrain.add_argument("--since", help="monitor window start, ISO 8601 (default: until - monitor.window)")
    retrain.add_argument("--until", help="monitor window end, ISO 8601, exclusive (default: now)")
    retrain.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_retrain_command(args: argparse.Namespace) -> int:
    """The retrain; its role (``retrain.run``) is checked by :func:`raymlops.loop.retrain.run_retrain`."""
    from raymlops.cli.overrides import UsageError, compose_overrides
    from raymlops.errors import ConfigError, RayMLOpsError

    # SIGTERM before Ray starts (a Kubernetes pod ending) interrupts like Ctrl-C; once an embedded Ray runs,
    # its driver's own handler takes SIGTERM over (and takes the embedded Ray down with the process).
    signal.signal(signal.SIGTERM, _interrupt)
    prog = args.prog
    try:
        cfg = compose_overrides(args.overrides)
        from raymlops.loop.retrain import run_retrain

        outcome = run_retrain(
            cfg,
            force=args.force,
            since=args.since,
            until=args.until,
            progress=lambda line: print(line, flush=True),
        )
    except (UsageError, ConfigError):
        raise  # the front door's exit 2
    except RayMLOpsError as exc:  # the retrain itself failed (audited as retrain-failed)
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0 if outcome.status == "skipped" or outcome.released else 1
