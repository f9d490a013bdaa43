"""``python -m raymlops init --data PATH --label COLUMN``: configs for a new table, and its run command.

    init --data PATH|REF --label COLUMN [--name NAME] [--time-column C] [--task T] [--out DIR] [--force]

Profiles the table with the project's own statistics and writes ``DIR/data|validate|features|experiment/
NAME.yaml`` (default ``DIR``: ``./configs-NAME``), commented for reading and editing: column types, null
fractions, ranges and categories, the task inferred from the label and why, a split that fits, and the
columns whose names suggest leakage. Prints the one command that runs the experiment, unedited:

    python -m raymlops.job 'hydra.searchpath=[file://DIR]' +experiment=NAME
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

__all__ = ["add_init_command", "run_init_command"]


def add_init_command(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "init",
        help="profile a table and write configs for it: data, validate, features, experiment",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data",
        required=True,
        help="a CSV or parquet file (or folder of them), or a data reference (delta:...)",
    )
    parser.add_argument("--label", required=True, metavar="COLUMN", help="the column to predict")
    parser.add_argument(
        "--name", default=None, help="names the configs, experiment and model (default: file's)"
    )
    parser.add_argument(
        "--time-column", default=None, metavar="C", help="split by this instant column (default: detected)"
    )
    parser.add_argument(
        "--task", default="auto", help="auto (default: from the label) | binary | multiclass | regression"
    )
    parser.add_argument("--max-classes", type=int, default=50, help="most classes of a classification label")
    parser.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="config folder (default ./configs-NAME)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite configs of the same name in DIR")


def _default_name(data: str) -> str:
    """The file's (or reference's last path part's) stem, made a valid name: ``My Data.csv`` -> my_data."""
    stem = re.split(r"[/:@]", data.rstrip("/"))[-1] or "table"
    stem = stem.split(".")[0] if "." in stem else stem
    name = re.sub(r"[^a-z0-9_-]+", "_", stem.lower()).strip("_-")
    return name if name[:1].isalpha() else f"t_{name}" if name else "table"


def run_init_command(args: argparse.Namespace) -> int:
    from raymlops.scaffold import plan_columns, profile_data, run_command, write_configs
    from raymlops.scaffold.writer import check_name

    name = check_name(args.name or _default_name(args.data))
    out_dir = (args.out or Path(f"configs-{name}")).expanduser().resolve()
    profile = profile_data(
        args.data, args.label, task=args.task, time_column=args.time_column, max_classes=args.max_classes
    )
    plan = plan_columns(profile)
    paths = write_configs(profile, plan, name, out_dir, force=args.force)
    print(f"profiled {profile.data}: {profile.rows:,} rows, {len(profile.columns)} columns")
    print(f"task:      {profile.task.name} ({profile.task_reason})")
    print(f"split:     {profile.split_kind} ({profile.time_reason})")
    print(f"features:  {len(plan.numeric)} numeric, {len(plan.categorical)} categorical")
    if plan.suspects:
        print(f"suspects:  {', '.join(plan.suspects)} (leakage? left out; see features/{name}.yaml)")
    for path in paths.values():
        print(f"wrote      {path}")
    print("\nrun it:\n  " + run_command(out_dir, name))
    return 0
