"""``python -m raymlops``: the operator CLI (registry look-ups for now).

    python -m raymlops models list [overrides ...]
    python -m raymlops models versions NAME [overrides ...]

Overrides are the job's Hydra overrides (e.g. ``env=prod``, ``state_dir=/data/raymlops``), so the CLI
reads the same registry the job writes.
"""

from __future__ import annotations

import argparse
import sys

from raymlops.errors import RayMLOpsError


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
    args = parser.parse_args(argv)
    try:
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
