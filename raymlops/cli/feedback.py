"""``raymlops feedback publish``: feedback joined to its predictions, published as a versioned table.

    raymlops feedback publish [--since ISO] [--until ISO] [overrides ...]

    --since / --until  the window of served predictions [since, until) whose outcomes are published
                       (ISO 8601; naive = UTC). Default: every logged prediction.
    overrides          the job's Hydra overrides (state_dir=..., env=prod, retrain.feedback_ref=lakefs://...),
                       so the same registry, prediction log and table the router and the retrain use.

Reads the prediction log and the feedback log under monitor.log_root, joins each outcome that arrived
since the last publish to its served row (by prediction id and row), turns it into a label value with the
version's task, and write-audit-publishes the rows into retrain.feedback_ref (default
delta:<state_dir>/data/feedback_<data.name>): one new version per publish, audited by the job's validate
rules for the columns the table holds. PII columns are as the prediction log holds them (hashed or left
out). A retrain with retrain.include_feedback=true (or retrain.feedback_only=true) trains on it.

Exit status: 0 published, or nothing new to publish; 1 the audit refused the rows (nothing published);
2 bad arguments or config (the message names the key).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_feedback_commands", "run_feedback_command"]


def add_feedback_commands(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser(
        "feedback",
        help="feedback as training data: publish labelled live rows as a versioned table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = group.add_subparsers(dest="command", required=True, metavar="COMMAND")
    publish = commands.add_parser(
        "publish",
        help="join new outcomes to their predictions and write-audit-publish them (retrain.feedback_ref)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_argument("--since", help="served from this instant on, ISO 8601 (default: all)")
    publish.add_argument("--until", help="served before this instant, ISO 8601 (default: now)")
    publish.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job")


def run_feedback_command(args: argparse.Namespace) -> int:
    from raymlops.cli.overrides import compose_overrides
    from raymlops.errors import DataValidationError
    from raymlops.monitoring.feedback_data import publish_feedback

    cfg = compose_overrides(args.overrides)
    try:
        published = publish_feedback(cfg, since=args.since, until=args.until)
    except DataValidationError as exc:
        print(f"{args.prog}: {exc}", file=sys.stderr)
        return 1
    print(published.line(), flush=True)
    return 0
