"""``raymlops deploy manifests``: the KubeRay manifests and the ``ray up`` config from ``deploy/values.yaml``
and the job config (:mod:`raymlops.deploy.manifests`).

    raymlops deploy manifests [--values deploy/values.yaml] [--out deploy] [--check] [overrides ...]

    --values   deployment settings (image, namespace, node sizes; DeploySettings)
    --out      where kuberay/*.yaml and cluster/ray-up.yaml are written
    --check    write nothing: exit 1 when the files under --out differ from what would be generated
    overrides  appended to the values' job_overrides (+experiment=..., env=prod, retrain.schedule=...)

Exit status: 0 written (or up to date), 1 --check found a difference, 2 bad values or overrides.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_deploy_commands", "run_deploy_command"]


def add_deploy_commands(sub: argparse._SubParsersAction) -> None:
    from raymlops.deploy.manifests import DEFAULT_OUT, DEFAULT_VALUES

    deploy = sub.add_parser("deploy", help="deployment files: KubeRay manifests, the ray up config")
    commands = deploy.add_subparsers(dest="command", required=True)
    manifests = commands.add_parser(
        "manifests",
        help="generate deploy/kuberay/*.yaml and deploy/cluster/ray-up.yaml from deploy/values.yaml",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    manifests.add_argument("--values", type=Path, default=DEFAULT_VALUES, help="default: %(default)s")
    manifests.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: %(default)s")
    manifests.add_argument("--check", action="store_true", help="exit 1 when --out differs; write nothing")
    manifests.add_argument(
        "overrides", nargs="*", help="Hydra overrides appended to the values' job_overrides"
    )


def run_deploy_command(args: argparse.Namespace) -> int:
    from raymlops.deploy.manifests import generate, load_settings, render, stale

    texts = render(generate(load_settings(args.values), args.overrides))  # ConfigError: exit 2
    stale_paths = stale(texts, args.out)
    if args.check:
        for path in stale_paths:
            print(f"{args.prog}: {args.out / path} is stale: run raymlops deploy manifests", file=sys.stderr)
        return 1 if stale_paths else 0
    for path, text in texts.items():
        target = args.out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"{'wrote' if path in stale_paths else 'unchanged'} {target}")
    return 0
