"""``python -m raymlops runs ...``: the job runs MLflow recorded, listed and compared.

    runs list [--limit N] [--all]                          job runs, newest first (--all: Tune trials too)
    runs compare RUN RUN [...] [--plot PNG] [--metric M]   differing params, metrics and tags side by side

RUN is an MLflow run id or a raymlops run id, or a unique prefix of either. Trailing Hydra overrides
(``env=prod``, ``state_dir=...``) choose the same MLflow store and experiment the job writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from raymlops.errors import ConfigError

__all__ = ["add_runs_commands", "run_runs_command"]


def add_runs_commands(sub: argparse._SubParsersAction) -> None:
    runs = sub.add_parser("runs", help="job runs recorded in MLflow: list, compare").add_subparsers(
        dest="command", required=True
    )
    listing = runs.add_parser("list", help="job runs, newest first")
    listing.add_argument("--limit", type=int, default=20, help="at most this many runs (default 20)")
    listing.add_argument("--all", action="store_true", help="include Tune trials (child runs)")
    compare = runs.add_parser("compare", help="runs side by side: differing params, metrics, tags")
    compare.add_argument(
        "runs", nargs="+", metavar="RUN", help="MLflow or raymlops run id, or a unique prefix"
    )
    compare.add_argument("--plot", type=Path, default=None, metavar="PNG", help="write metric curves here")
    compare.add_argument(
        "--metric",
        action="append",
        default=None,
        help="a metric to plot (repeatable; default: every metric with more than one step)",
    )
    for parser in (listing, compare):
        parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job")


def run_runs_command(args: argparse.Namespace) -> int:
    from raymlops.config import compose
    from raymlops.registry.mlflow_registry import ModelRegistry
    from raymlops.registry.runs import compare_report, list_runs, plot_curves, resolve_run, runs_table

    # ``compare A B env=prod``: the greedy RUN list also took the overrides; run ids never hold '='.
    refs = [r for r in getattr(args, "runs", []) if "=" not in r]
    overrides = [r for r in getattr(args, "runs", []) if "=" in r] + list(args.overrides)
    cfg = compose(overrides).registry
    registry = ModelRegistry.from_config(cfg)
    if args.command == "list":
        if args.limit < 1:
            raise ConfigError("--limit", f"must be at least 1, got {args.limit}.")
        runs = list_runs(registry, args.limit, include_children=args.all)
        if not runs:
            print(f"no runs in experiment {cfg.experiment!r} of {cfg.tracking_uri}")
            return 0
        print(runs_table(runs, show_parent=args.all))
        return 0
    if len(refs) < 2:
        raise ConfigError("runs compare", f"needs at least two runs, got {len(refs)}: {' '.join(refs)}.")
    resolved = [resolve_run(registry, ref) for ref in refs]
    print(compare_report(resolved))
    if args.plot is not None:
        plotted = plot_curves(registry, resolved, args.plot, args.metric)
        print(f"\nplot: {args.plot} ({', '.join(plotted)})")
    return 0
