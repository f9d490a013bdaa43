"""``raymlops`` (or ``python -m raymlops``): every command, one front door.

    raymlops models list|versions|show|promote|rollback|archive|lineage|history ...
    raymlops data log|show|diff|audit|ingest|erase ...
    raymlops features materialize|status|show ...
    raymlops runs list|compare ...
    raymlops serve run|status|deploy|traffic|shadow|rollout|rollback|keys ...
    raymlops security rotate-kek|audit ...
    raymlops state backup|restore ...
    raymlops job run|submit ...          the pipeline job, here or on a Ray cluster
    raymlops monitor ...                 drift, live accuracy and latency from the prediction log
    raymlops retrain ...                 retrain when a trigger fires, gate, roll out
    raymlops feedback publish ...        labelled live rows (feedback) as a versioned table
    raymlops scheduler ...               check the retrain triggers on an interval
    raymlops alerts receive ...          Alertmanager's webhook: retrain, roll back or record per alert
    raymlops batch-score ...             score a versioned dataset with a registered model
    raymlops ci-gate ...                 validate -> train -> evaluate against the champion, for CI
    raymlops deploy manifests ...        KubeRay manifests and the `ray up` config from deploy/values.yaml
    raymlops init --data F --label C     configs for a new table, and the command that runs them

Each command has ``--help``. Overrides are the job's Hydra overrides (e.g. ``env=prod``,
``state_dir=/data/raymlops``), so a command reads the same registry and data the job writes.
Every command takes ``--log-format text|json``, ``-v`` (more detail) and ``--debug`` (the traceback of an
unexpected error). Exit status: 0 done; 1 the command's own "no" (a failed gate, an alert, a broken
audit chain) or an unexpected error; 2 a bad command line, config or input (the message names it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from raymlops.cli.access import authorize_cli
from raymlops.cli.alerts import add_alerts_commands, run_alerts_command
from raymlops.cli.batch_score import add_batch_score_command, run_batch_score_command
from raymlops.cli.ci_gate import add_ci_gate_command, run_ci_gate_command
from raymlops.cli.console import LOG_FORMATS, configure_logging, report_unexpected
from raymlops.cli.data import add_data_commands, run_data_command
from raymlops.cli.deploy import add_deploy_commands, run_deploy_command
from raymlops.cli.features import add_features_commands, run_features_command
from raymlops.cli.feedback import add_feedback_commands, run_feedback_command
from raymlops.cli.init import add_init_command, run_init_command
from raymlops.cli.job import add_job_commands, run_job_command
from raymlops.cli.models import add_models_commands, run_models_command
from raymlops.cli.monitor import add_monitor_command, run_monitor_command
from raymlops.cli.retrain import add_retrain_command, run_retrain_command
from raymlops.cli.runs import add_runs_commands, run_runs_command
from raymlops.cli.scheduler import add_scheduler_command, run_scheduler_command
from raymlops.cli.security import add_security_commands, run_security_command
from raymlops.cli.serve import add_serve_commands, run_serve_command
from raymlops.cli.state import add_state_commands, run_state_command
from raymlops.errors import RayMLOpsError

__all__ = ["GROUPS", "build_parser", "main", "parse_command"]

# group -> (adds its subcommands, runs one of them)
GROUPS: dict[str, tuple[Callable[[Any], None], Callable[[argparse.Namespace], int]]] = {
    "models": (add_models_commands, run_models_command),
    "data": (add_data_commands, run_data_command),
    "features": (add_features_commands, run_features_command),
    "runs": (add_runs_commands, run_runs_command),
    "serve": (add_serve_commands, run_serve_command),
    "state": (add_state_commands, run_state_command),
    "security": (add_security_commands, run_security_command),
    "job": (add_job_commands, run_job_command),
    "monitor": (add_monitor_command, run_monitor_command),
    "retrain": (add_retrain_command, run_retrain_command),
    "feedback": (add_feedback_commands, run_feedback_command),
    "scheduler": (add_scheduler_command, run_scheduler_command),
    "alerts": (add_alerts_commands, run_alerts_command),
    "batch-score": (add_batch_score_command, run_batch_score_command),
    "ci-gate": (add_ci_gate_command, run_ci_gate_command),
    "deploy": (add_deploy_commands, run_deploy_command),
    "init": (add_init_command, run_init_command),
}


def _add_console_options(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """``--log-format``, ``-v``, ``--debug``: on the top parser with their defaults, and again on every
    command (``default=SUPPRESS`` there, so a command's parser does not reset what the top one read)."""

    def value(real: Any) -> Any:
        return real if default is None else default

    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default=value("text"), help="log lines as text or JSON lines"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=value(0), help="more log detail (-vv: other libraries too)"
    )
    parser.add_argument(
        "--debug", action="store_true", default=value(False), help="show the traceback of an unexpected error"
    )


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for sub in subs for child in dict.fromkeys(sub.choices.values()) for leaf in _leaves(child)]


def build_parser(prog: str = "raymlops") -> argparse.ArgumentParser:
    """The whole command tree (``tests/unit/test_roles.py`` walks it against ``CLI_ACTIONS``)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_console_options(parser)
    sub = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    for add_commands, _ in GROUPS.values():
        add_commands(sub)
    for leaf in _leaves(parser):
        _add_console_options(leaf, default=argparse.SUPPRESS)
    return parser


def parse_command(argv: list[str], prog: str = "raymlops") -> argparse.Namespace:
    """``argv`` parsed into a command (``args.group``, ...) and its overrides (``args.overrides``).

    Raises:
        SystemExit: ``--help``, or a usage error argparse printed (status 2).
    """
    parser = build_parser(prog)
    # Overrides may follow options (``ingest FILE -m msg env=prod``): argparse would refuse them there.
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if "=" not in e or e.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*getattr(args, "overrides", []), *extra]
    not_overrides = [o for o in args.overrides if "=" not in o and not o.startswith("~")]
    if not_overrides:
        parser.error(f"{not_overrides[0]!r} is no Hydra override (key=value, +group=option, ~key)")
    return args


def main(argv: list[str] | None = None, prog: str = "raymlops") -> int:
    """Run one command; its exit status (see the module docstring)."""
    args = parse_command(sys.argv[1:] if argv is None else list(argv), prog)
    configure_logging(args.log_format, args.verbose)
    args.prog = prog  # the prefix of a command's own messages
    try:
        authorize_cli(args)
        return GROUPS[args.group][1](args)
    except RayMLOpsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an environment problem: one line, the traceback on request
        if args.debug:
            raise
        report_unexpected(prog, exc)
        return 1
