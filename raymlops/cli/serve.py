"""``python -m raymlops serve ...``: run, inspect and steer the serving router.

    serve run [--model NAME[@ALIAS|@VERSION]]      serve a registered version in the foreground until Ctrl-C
    serve status                                   what the app serves: versions, weights, policies, stats
    serve deploy NAME[@ALIAS|@VERSION] [--weight W]   add a version (to a running app, at weight W, default 0)
    serve traffic NAME VERSION=WEIGHT ...          change the split (e.g. 1=95 2=5), in place, no restart
    serve rollout NAME VERSION                     progressive rollout with automatic rollback (serve.rollout)
    serve rollback NAME --reason TEXT              the previous champion back: alias and 100% of traffic
    serve shadow NAME VERSION [--fraction F]       VERSION scores F of NAME's requests and never answers
    serve shadow NAME --stop | --promote           end the shadow, or roll the shadow version out
    serve keys add|list|revoke ...                 API keys with roles (serve.auth)

The app is ``serve.app_name`` on the Ray cluster at ``ray.address`` (``ray.address=auto`` joins the Ray a
``serve run`` on this machine started); every command takes the job's Hydra overrides (``env=prod``).
Changes to versions and traffic are recorded in the registry's audit log.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from raymlops.cli.keys import add_keys_commands, run_keys_command
from raymlops.errors import ConfigError

__all__ = ["add_serve_commands", "run_serve_command"]


def add_serve_commands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="the serving router: run, status, deploy, traffic, rollout, ...")
    commands = serve.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve a registered version until Ctrl-C")
    run.add_argument(
        "--model", default=None, help="NAME[@ALIAS|@VERSION] (default: registry.model_name@champion)"
    )
    status = commands.add_parser("status", help="what the app serves, with live statistics")
    status.add_argument("--json", action="store_true")
    deploy = commands.add_parser("deploy", help="add a registered version to the app")
    deploy.add_argument("model", help="NAME[@ALIAS|@VERSION]")
    deploy.add_argument(
        "--weight", type=float, default=None, help="its traffic weight (default 0; new app: 1)"
    )
    traffic = commands.add_parser("traffic", help="change the traffic split in place")
    traffic.add_argument("name")
    traffic.add_argument("weights", nargs="+", metavar="VERSION=WEIGHT")
    rollout = commands.add_parser("rollout", help="progressive rollout with automatic rollback")
    rollout.add_argument("name")
    rollout.add_argument("version")
    rollback = commands.add_parser("rollback", help="the previous champion back, with all of the traffic")
    rollback.add_argument("name")
    rollback.add_argument("--reason", required=True)
    shadow = commands.add_parser(
        "shadow", help="mirror a share of requests to a version that never answers; stop or promote it"
    )
    shadow.add_argument("name")
    shadow.add_argument("version", nargs="?", default=None, help="the version (--stop, --promote: optional)")
    shadow.add_argument(
        "--fraction",
        type=_fraction,
        default=None,
        help="share of the requests mirrored to it, in (0, 1] (default serve.shadow_fraction)",
    )
    mode = shadow.add_mutually_exclusive_group()
    mode.add_argument("--stop", action="store_true", help="end the shadow: the version leaves the app")
    mode.add_argument(
        "--promote", action="store_true", help="end the shadow and roll the version out (serve.rollout)"
    )
    parsers = [run, status, deploy, traffic, rollout, rollback, shadow]
    add_keys_commands(commands)
    for parser in parsers:
        parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job")


def _fraction(value: str) -> float:
    """``--fraction``, checked as the command line is parsed: a bad one is exit 2 before any work."""
    from raymlops.serving.shadow import check_fraction

    try:
        return check_fraction(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None


def _split_ref(value: str, default_name: str) -> tuple[str, str]:
    """``name@alias`` | ``name@3`` | ``name`` (the champion) -> (name, ref) with ref ``@alias`` or ``3``."""
    from raymlops.registry.model_ref import parse_model_ref

    ref = parse_model_ref(value, default_name)
    return ref.name, ref.version if ref.version is not None else f"@{ref.alias}"


def _parse_weights(items: list[str]) -> dict[str, float]:
    weights = {}
    for item in items:
        version, sep, weight = item.partition("=")
        try:
            weights[version] = float(weight)
        except ValueError:
            sep = ""
        if not sep or not version:
            raise ConfigError("serve traffic", f"{item!r} is not VERSION=WEIGHT (e.g. 1=95 2=5).")
    return weights


def run_serve_command(args: argparse.Namespace) -> int:
    from raymlops.config import compose

    if args.command == "keys":
        return run_keys_command(args)
    # ``traffic NAME 1=95 2=5 env=prod``: the greedy weights list also took the overrides; the front door
    # moved them back to args.overrides before the role check.
    cfg = compose(list(args.overrides))
    from raymlops.pipeline.ray_session import connect_ray

    connect_ray(cfg.ray)
    if args.command in ("deploy", "traffic", "rollout", "rollback", "shadow"):
        from raymlops.serving.operations import check_app_env

        check_app_env(cfg.serve.app_name, str(cfg.env.name))
    handler = {
        "run": _run,
        "status": _status,
        "deploy": _deploy,
        "traffic": _traffic,
        "rollout": _rollout,
        "rollback": _rollback,
        "shadow": _shadow,
    }[args.command]
    return handler(args, cfg)


def _governance(cfg: Any) -> Any:
    from raymlops.registry.governance import Governance

    return Governance.from_config(cfg)


def _placement(cfg: Any) -> str:
    """Where versions this command adds run (``serve.placement``)."""
    return str(cfg.serve.placement.value)


def _serve_new_app(cfg: Any, spec: Any) -> str:
    from raymlops.serving.operations import deploy_from_config

    return deploy_from_config(cfg, [spec])


def _signer(cfg: Any) -> Any:  # -> raymlops.security.integrity.Signer
    """Verifies a version's artifact digests and signature (``security.signing``) before it is served."""
    from raymlops.security.integrity import Signer

    return Signer.from_config(cfg.security.signing)


def _run(args: argparse.Namespace, cfg: Any) -> int:
    from ray import serve

    from raymlops.serving.operations import spec_from_registry

    governance = _governance(cfg)
    name, ref = _split_ref(args.model or "@champion", cfg.registry.model_name)
    spec = spec_from_registry(
        governance.registry, name, ref, weight=1.0, placement=_placement(cfg), signer=_signer(cfg)
    )
    url = _serve_new_app(cfg, spec)
    governance.record_deployment(name, cfg.serve.app_name, {spec.version}, why="serve run")
    print(f"serving {name} v{spec.version} at {url}/v1/models/{name}/predict (Ctrl-C stops)")
    print(f"  curl -s {url}/v1/models/{name}/predict -d '{{\"records\": [{{...}}]}}'")
    print(f"  inputs: {', '.join(f'{c} ({k})' for c, k in spec.request_columns.items())}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping")
    finally:
        serve.delete(cfg.serve.app_name)
        governance.record_deployment(name, cfg.serve.app_name, set(), why="serve run stopped")
    return 0


def _status(args: argparse.Namespace, cfg: Any) -> int:
    import httpx

    from raymlops.serving.operations import api_key_headers, live_app

    app = live_app(cfg.serve.app_name)
    from raymlops.serving.shadow import shadow_summary

    report: dict[str, Any] = {"app": app.name, "url": app.url, "status": app.status, "models": {}}
    for name in app.user_config.get("models", {}):
        stats = httpx.get(f"{app.url}/v1/models/{name}/stats", timeout=10, headers=api_key_headers()).json()
        report["models"][name] = {
            "policy": app.user_config.get("policies", {}).get(name, {}),
            "versions": {
                version: {
                    "weight": entry["weight"],
                    "requests": entry["served"]["requests_total"],
                    "errors": entry["served"]["errors_total"],
                    "p99_ms": entry["served"]["window"]["latency_ms"]["p99"],
                    "mean_probability": entry["served"]["window"]["mean_probability"],
                }
                for version, entry in stats.get("versions", {}).items()
            },
            # The shadow's agreement with the served answers and its latency beside the champion's.
            "shadow": shadow_summary(stats),
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{app.name}  {app.status}  {app.url}")
    for name, model in report["models"].items():
        print(f"  {name}  {json.dumps(model['policy']) if model['policy'] else ''}")
        for version, v in model["versions"].items():
            p99 = "-" if v["p99_ms"] is None else f"{v['p99_ms']:.1f} ms"
            counts = f"requests={v['requests']}  errors={v['errors']}"
            print(f"    v{version}  weight={v['weight']:g}  {counts}  p99={p99}")
        if model["shadow"] is not None:
            print("    " + _shadow_line(model["shadow"]))
    return 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _shadow_line(s: dict[str, Any]) -> str:
    agreement = "-" if s["agreement"] is None else f"{s['agreement']:.3f}"
    return (
        f"shadow v{s['version']} ({s['fraction']:g} of requests) vs v{s['champion']}: "
        f"agreement={agreement} over {s['compared']} requests  "
        f"p50={_ms(s['p50_ms'])} (v{s['champion']} {_ms(s['champion_p50_ms'])})  "
        f"p99={_ms(s['p99_ms'])} (v{s['champion']} {_ms(s['champion_p99_ms'])})  "
        f"errors={s['errors']}  dropped={s['dropped']}"
    )


def _deploy(args: argparse.Namespace, cfg: Any) -> int:
    from raymlops.serving.operations import (
        add_version,
        check_artifacts,
        online_store_settings,
        served_versions,
        spec_from_registry,
    )

    governance = _governance(cfg)
    name, ref = _split_ref(args.model, cfg.registry.model_name)
    served = served_versions(cfg.serve.app_name, name)
    if served is None:  # no app yet: this version serves everything
        spec = spec_from_registry(
            governance.registry,
            name,
            ref,
            weight=args.weight or 1.0,
            placement=_placement(cfg),
            signer=_signer(cfg),
        )
        url = _serve_new_app(cfg, spec)
        versions = {spec.version}
    else:
        spec = spec_from_registry(
            governance.registry,
            name,
            ref,
            weight=args.weight or 0.0,
            placement=_placement(cfg),
            signer=_signer(cfg),
        )
        check_artifacts(cfg, [spec])  # a tampered graph is refused (and audited) before the app changes
        url = add_version(cfg.serve.app_name, spec, online_store_settings(cfg, [spec])).url
        versions = {*served, spec.version}
    governance.record_deployment(name, cfg.serve.app_name, versions, why="serve deploy")
    print(f"{name} v{spec.version} deployed to {cfg.serve.app_name} at weight {spec.weight:g} ({url})")
    return 0


def _traffic(args: argparse.Namespace, cfg: Any) -> int:
    from raymlops.serving.operations import set_traffic

    app = set_traffic(cfg.serve.app_name, args.name, _parse_weights(args.weights))
    _governance(cfg).audit(
        "traffic", args.name, "serve traffic", details={"app": app.name, "weights": app.versions(args.name)}
    )
    print(" ".join(f"v{v}={w:g}" for v, w in app.versions(args.name).items()))
    return 0


def _rollout(args: argparse.Namespace, cfg: Any) -> int:
    from raymlops.serving.operations import progressive_rollout

    return _roll_out(cfg, args.name, args.version, progressive_rollout)


def _roll_out(cfg: Any, name: str, version: str, start: Any) -> int:
    """Judge ``version`` of ``name`` step by step under live traffic with ``start`` (a progressive
    rollout, or one from shadow); exit 0 when it was promoted."""
    import os

    from omegaconf import OmegaConf

    from raymlops.serving.operations import check_artifacts, spec_from_registry
    from raymlops.serving.rollout import RolloutPolicy

    governance = _governance(cfg)
    policy = RolloutPolicy.from_config(OmegaConf.to_container(cfg.serve.rollout))  # type: ignore[arg-type]
    candidate = spec_from_registry(
        governance.registry, name, version, placement=_placement(cfg), signer=_signer(cfg)
    )
    check_artifacts(cfg, [candidate])
    result = start(
        cfg.serve.app_name,
        name,
        candidate,
        policy,
        governance,
        api_key=os.environ.get("RAYMLOPS_API_KEY"),
        progress=print,
    )
    print(f"{name} v{version}: {result.outcome} {'; '.join(result.reasons)}".rstrip())
    return 0 if result.outcome == "promoted" else 1


def _rollback(args: argparse.Namespace, cfg: Any) -> int:
    from raymlops.serving.rollback import rollback_live

    done = rollback_live(cfg, args.name, args.reason, governance=_governance(cfg))
    print(f"{args.name}: champion v{done.from_version} -> v{done.to_version}, which now takes all traffic")
    return 0


def _shadow(args: argparse.Namespace, cfg: Any) -> int:
    from raymlops.serving.operations import check_artifacts, live_app, spec_from_registry
    from raymlops.serving.shadow import shadow_version, start_shadow, stop_shadow

    governance, app_name = _governance(cfg), cfg.serve.app_name
    if args.stop:
        stopped = stop_shadow(app_name, args.name, governance, why="serve shadow --stop")
        print(f"{args.name}: shadow v{stopped} stopped" if stopped else f"{args.name}: no version in shadow")
        return 0
    if args.promote:
        return _promote_shadow(args, cfg, args.version or shadow_version(live_app(app_name), args.name))
    if args.version is None:
        raise ConfigError("serve shadow", "names no VERSION: `serve shadow NAME VERSION [--fraction F]`.")
    fraction = args.fraction if args.fraction is not None else cfg.serve.shadow_fraction
    spec = spec_from_registry(
        governance.registry, args.name, args.version, placement=_placement(cfg), signer=_signer(cfg)
    )
    check_artifacts(cfg, [spec])  # a tampered graph is refused (and audited) before the app changes
    app = start_shadow(app_name, args.name, spec, fraction, governance, why="serve shadow")
    print(
        f"{args.name} v{spec.version} shadows {fraction:g} of the requests in {app_name} ({app.url}); "
        f"it never answers. `serve status` shows its agreement and latency."
    )
    return 0


def _promote_shadow(args: argparse.Namespace, cfg: Any, version: str | None) -> int:
    from raymlops.serving.shadow import promote_shadow

    if version is None:
        raise ConfigError("serve shadow --promote", f"no version of {args.name!r} is in shadow.")
    return _roll_out(cfg, args.name, version, promote_shadow)
