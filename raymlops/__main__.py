"""``python -m raymlops``: the operator CLI.

    python -m raymlops models list [overrides ...]
    python -m raymlops models versions NAME [overrides ...]
    python -m raymlops data log|show|diff|audit|ingest ... [overrides ...]   (see ``data --help``)
    python -m raymlops runs list|compare ... [overrides ...]                 (see ``runs --help``)

Overrides are the job's Hydra overrides (e.g. ``env=prod``, ``state_dir=/data/raymlops``), so the CLI
reads the same registry the job writes.
"""

from __future__ import annotations

import argparse
import sys

from raymlops.data.cli import add_data_commands, run_data_command
from raymlops.errors import RayMLOpsError
from raymlops.registry.runs_cli import add_runs_commands, run_runs_command


def _registry(overrides: list[str]):  # -> ModelRegistry
    from raymlops.config import compose
    from raymlops.registry.mlflow_registry import ModelRegistry

    cfg = compose(overrides).registry
    return ModelRegistry(cfg.tracking_uri, cfg.artifact_root, cfg.experiment)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raymlops", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="group", required=True)
    models = sub.add_parser("models", help="registered models").add_subparsers(dest="command", required=True)
    models.add_parser("list", help="registered model names").add_argument("overrides", nargs="*")
    versions = models.add_parser("versions", help="versions of one model with their lineage")
    versions.add_argument("name")
    versions.add_argument("overrides", nargs="*")
    add_data_commands(sub)
    add_runs_commands(sub)
    # Overrides may follow options (``ingest FILE -m msg env=prod``): argparse would refuse them there.
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if "=" not in e or e.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *extra]
    try:
        if args.group == "data":
            return run_data_command(args)
        if args.group == "runs":
            return run_runs_command(args)
        registry = _registry(args.overrides)
        if args.command == "list":
            for name in registry.model_names():
                print(name)
        else:
            for v in registry.versions(args.name):
                print(
                    f"{v.name} v{v.version}  run={v.run_id}  data={v.tags.get('raymlops.data_version', '?')}"
                    f"  git={v.tags.get('raymlops.git_sha', '?')}"
                )
    except RayMLOpsError as exc:
        print(f"raymlops: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
