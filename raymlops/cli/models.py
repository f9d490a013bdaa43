"""``python -m raymlops models ...``: registered versions, their aliases, lineage and audit history.

    models list                                    model names with their aliases and version counts
    models versions NAME                           every version: lifecycle, aliases, data version, git
    models show NAME [VERSION|@ALIAS] [--json]     one version: lifecycle, metrics, gates, lineage, card
    models promote NAME VERSION --reason TEXT [--alias champion|challenger|shadow] [--expect V|none]
    models rollback NAME --reason TEXT             the previous champion back, in one command
    models archive NAME VERSION --reason TEXT [--undeploy]
    models lineage NAME VERSION [--json]           data version, git SHA, config digest, run, parent, reports
    models history NAME [--json]                   every alias and lifecycle change: who, when, from, to, why

Trailing Hydra overrides (``env=prod``, ``state_dir=...``) choose the registry the job writes. Who
acts is ``RAYMLOPS_USER`` or the OS user; every change, refusals included, lands in ``history``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from raymlops.registry.governance import ALIASES, UNCHANGED
from raymlops.registry.tags import DATA_VERSION_TAG, DEPLOYED_TAG, GATES_TAG, GIT_SHA_TAG, TASK_TAG

__all__ = ["add_models_commands", "run_models_command"]


def add_models_commands(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="registered models: list, show, promote, rollback, ...")
    commands = models.add_subparsers(dest="command", required=True)
    parsers = [commands.add_parser("list", help="model names with aliases and version counts")]
    versions = commands.add_parser("versions", help="every version of a model")
    versions.add_argument("name")
    show = commands.add_parser("show", help="one version (default: the champion)")
    show.add_argument("name")
    show.add_argument("version", nargs="?", default="@champion", help="VERSION or @ALIAS")
    promote = commands.add_parser("promote", help="point an alias at a version")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--alias", default="champion", choices=ALIASES)
    promote.add_argument("--expect", default=None, help="fail unless the alias is at this version now")
    rollback = commands.add_parser("rollback", help="restore the previous champion")
    rollback.add_argument("name")
    archive = commands.add_parser("archive", help="decommission a version")
    archive.add_argument("name")
    archive.add_argument("version")
    archive.add_argument("--undeploy", action="store_true", help="take it out of serving first")
    lineage = commands.add_parser("lineage", help="what a version was made from")
    lineage.add_argument("name")
    lineage.add_argument("version")
    history = commands.add_parser("history", help="the audit log of a model")
    history.add_argument("name")
    for parser in (promote, rollback, archive):
        parser.add_argument("--reason", required=True, help="why: kept in the audit log")
    for parser in (show, lineage, history):
        parser.add_argument("--json", action="store_true", help="machine-readable output")
    for parser in [*parsers, versions, show, promote, rollback, archive, lineage, history]:
        parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job")


def _print(value: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(value, indent=2, default=str))
        return
    for key, item in value.items():
        print(f"{key:<20} {item}")


def run_models_command(args: argparse.Namespace) -> int:
    from raymlops.config import compose
    from raymlops.registry.governance import Governance
    from raymlops.registry.lineage import lineage_of
    from raymlops.registry.mlflow_registry import ModelRegistry

    cfg = compose(list(args.overrides))
    registry = ModelRegistry.from_config(cfg.registry)
    governance = Governance(registry, env=str(cfg.env.name))
    command = args.command
    if command == "list":
        for name in registry.model_names():
            aliases = governance.aliases(name)
            held = " ".join(f"{a}=v{v}" for a, v in sorted(aliases.items())) or "no aliases"
            print(f"{name}  versions={len(registry.versions(name))}  {held}")
    elif command == "versions":
        for v in registry.versions(args.name):
            held = f"  [{','.join(v.aliases)}]" if v.aliases else ""
            data, git = v.tags.get(DATA_VERSION_TAG, "?"), v.tags.get(GIT_SHA_TAG, "?")
            print(f"{v.name} v{v.version}  run={v.run_id}  {v.lifecycle}{held}  data={data}  git={git}")
    elif command == "show":
        _print(_show(registry, args.name, args.version), args.json)
    elif command == "promote":
        expected = UNCHANGED if args.expect is None else (None if args.expect == "none" else args.expect)
        record = governance.set_alias(args.name, args.alias, args.version, why=args.reason, expected=expected)
        print(f"{args.name}: {args.alias} v{record.from_version or '-'} -> v{record.to_version}")
    elif command == "rollback":
        record = governance.rollback(args.name, why=args.reason)
        print(f"{args.name}: champion rolled back v{record.from_version} -> v{record.to_version}")
    elif command == "archive":
        undeploy = _undeployer(cfg, args.name, args.version) if args.undeploy else None
        governance.archive(args.name, args.version, why=args.reason, undeploy=undeploy)
        print(f"{args.name} v{args.version}: archived")
    elif command == "lineage":
        _print(lineage_of(registry, args.name, args.version).to_dict(), args.json)
    elif command == "history":
        records = governance.history(args.name)
        if args.json:
            print(json.dumps([r.__dict__ for r in records], indent=2, default=str))
        for r in [] if args.json else records:
            moved = f"{r.alias or ''} v{r.from_version or '-'} -> v{r.to_version or '-'}"
            print(f"{r.when}  {r.who:<12} {r.action:<9} {r.outcome:<8} {moved:<26} {r.why}")
    return 0


def _show(registry: Any, name: str, ref: str) -> dict[str, Any]:
    """One version as a dict: ``ref`` is a version number or ``@alias``."""
    from raymlops.errors import ModelNotFoundError
    from raymlops.tasks.codec import task_from_json

    if ref.startswith("@"):
        version = registry.by_alias(name, ref[1:])
        if version is None:
            raise ModelNotFoundError(f"{name}{ref}", [f"{name}@{a}" for a in _aliases(registry, name)])
    else:
        version = registry.version(name, ref)
    run = registry.client.get_run(version.run_id)
    metrics = {
        k: round(v, 4) for k, v in sorted(run.data.metrics.items()) if k.startswith(("test/", "valid/"))
    }
    return {
        "model": f"{version.name} v{version.version}",
        "lifecycle": version.lifecycle,
        "aliases": ", ".join(version.aliases) or "-",
        "task": task_from_json(version.tags.get(TASK_TAG)).describe(),  # no tag: flights binary
        "gates": version.tags.get(GATES_TAG, "?"),
        "metrics": metrics,
        "data_version": version.tags.get(DATA_VERSION_TAG, "?"),
        "git_sha": version.tags.get(GIT_SHA_TAG, "?"),
        "run_id": version.run_id,
        "deployed_in": version.tags.get(DEPLOYED_TAG, "") or "-",
        "model_card": f"{version.source}/model_card.html",
    }


def _aliases(registry: Any, name: str) -> list[str]:
    from raymlops.registry.governance import Governance

    return sorted(Governance(registry).aliases(name))


def _undeployer(cfg: Any, name: str, version: str) -> Any:  # -> Callable[[str], None]
    """Take ``name`` v``version`` out of a Serve application (connecting to Ray as the job does)."""

    def undeploy(app: str) -> None:
        from raymlops.pipeline.ray_session import connect_ray
        from raymlops.serving.operations import undeploy_version

        connect_ray(cfg.ray)
        undeploy_version(app, name, version, cfg.serve)

    return undeploy
