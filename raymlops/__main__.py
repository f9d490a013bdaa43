"""``python -m raymlops``: the operator CLI.

    python -m raymlops models list|versions|show|promote|rollback|archive|lineage|history ...
    python -m raymlops data log|show|diff|audit|ingest ...
    python -m raymlops features materialize|status|show ...
    python -m raymlops runs list|compare ...
    python -m raymlops serve run|status|deploy|traffic|rollout|rollback|keys ...

Each group has ``--help``. Overrides are the job's Hydra overrides (e.g. ``env=prod``,
``state_dir=/data/raymlops``), so the CLI reads the same registry and data the job writes.
"""

from __future__ import annotations

import argparse
import sys

from raymlops.data.cli import add_data_commands, run_data_command
from raymlops.errors import RayMLOpsError
from raymlops.features.cli import add_features_commands, run_features_command
from raymlops.registry.models_cli import add_models_commands, run_models_command
from raymlops.registry.runs_cli import add_runs_commands, run_runs_command
from raymlops.serving.serve_cli import add_serve_commands, run_serve_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raymlops", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="group", required=True)
    add_models_commands(sub)
    add_data_commands(sub)
    add_features_commands(sub)
    add_runs_commands(sub)
    add_serve_commands(sub)
    # Overrides may follow options (``ingest FILE -m msg env=prod``): argparse would refuse them there.
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if "=" not in e or e.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *extra]
    try:
        if args.group == "data":
            return run_data_command(args)
        if args.group == "features":
            return run_features_command(args)
        if args.group == "runs":
            return run_runs_command(args)
        if args.group == "serve":
            return run_serve_command(args)
        return run_models_command(args)
    except RayMLOpsError as exc:
        print(f"raymlops: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
