"""``python -m raymlops``: the operator CLI.

    python -m raymlops models list|versions|show|promote|rollback|archive|lineage|history ...
    python -m raymlops data log|show|diff|audit|ingest ...
    python -m raymlops features materialize|status|show ...
    python -m raymlops runs list|compare ...
    python -m raymlops serve run|status|deploy|traffic|rollout|rollback|keys ...
    python -m raymlops security rotate-kek ...
    python -m raymlops state backup|restore ...

Each group has ``--help``. Overrides are the job's Hydra overrides (e.g. ``env=prod``,
``state_dir=/data/raymlops``), so the CLI reads the same registry and data the job writes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from raymlops.data.cli import add_data_commands, run_data_command
from raymlops.errors import RayMLOpsError
from raymlops.features.cli import add_features_commands, run_features_command
from raymlops.registry.models_cli import add_models_commands, run_models_command
from raymlops.registry.runs_cli import add_runs_commands, run_runs_command
from raymlops.security.cli import add_security_commands, run_security_command
from raymlops.serving.serve_cli import add_serve_commands, run_serve_command
from raymlops.state.cli import add_state_commands, run_state_command

# Config groups an override may start with: ``serve traffic NAME 1=95 env=prod`` puts the overrides in
# the weights list (its nargs is greedy); they are moved back before anything reads them.
_OVERRIDE_ROOTS = {"env", "state_dir", "ray", "serve", "registry", "security", "data", "monitor", "features"}


def command_name(args: argparse.Namespace) -> str:
    """``GROUP COMMAND`` (``serve keys add`` for the key commands): the key of ``CLI_ACTIONS``."""
    words = [args.group, getattr(args, "command", None), getattr(args, "keys_command", None)]
    return " ".join(w for w in words if w)


def authorize_cli(args: argparse.Namespace) -> None:
    """The caller's role against the command's action (``security.roles.CLI_ACTIONS``), audited.

    Runs before the command does anything: a refused command changes nothing.
    """
    from raymlops.config import compose

    weights = getattr(args, "weights", None)
    if weights:
        moved = [w for w in weights if w.split("=", 1)[0].split(".", 1)[0].lstrip("+~") in _OVERRIDE_ROOTS]
        args.weights = [w for w in weights if w not in moved]
        args.overrides = [*moved, *args.overrides]
    cfg = compose(list(args.overrides))
    authorize_command(cfg.security, args, default_target=str(cfg.env.name))


def authorize_command(security: Any, args: argparse.Namespace, default_target: str = "") -> None:
    """``authorize`` for a parsed command. Unlisted commands need admin; the first key of an empty key
    file may be created by anyone (bootstrap), and that is audited too."""
    from raymlops.security.roles import CLI_ACTIONS, Principal, authorize

    name = command_name(args)
    action = CLI_ACTIONS.get(name, "roles.manage")  # unlisted: admin only
    named = ("name", "model", "key_id", "ref")
    target = " ".join(str(v) for k, v in sorted(vars(args).items()) if k in named) or default_target
    why = f"python -m raymlops {name}"
    if name == "serve keys add" and security.get("enabled"):
        from raymlops.registry.governance import current_user
        from raymlops.serving.auth import KeyStore

        if not KeyStore(security["keys_file"]).list():
            why = "bootstrap: the key file holds no key yet"
            authorize(security, action, target, principal=Principal(current_user(), "admin"), why=why)
            return
    authorize(security, action, target, why=why)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (``tests/unit/test_roles.py`` walks it against ``CLI_ACTIONS``)."""
    parser = argparse.ArgumentParser(
        prog="raymlops", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="group", required=True)
    for add_commands, _ in GROUPS.values():
        add_commands(sub)
    return parser


# group -> (adds its subcommands, runs one of them)
GROUPS: dict[str, tuple[Callable[[Any], None], Callable[[argparse.Namespace], int]]] = {
    "models": (add_models_commands, run_models_command),
    "data": (add_data_commands, run_data_command),
    "features": (add_features_commands, run_features_command),
    "runs": (add_runs_commands, run_runs_command),
    "serve": (add_serve_commands, run_serve_command),
    "state": (add_state_commands, run_state_command),
    "security": (add_security_commands, run_security_command),
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may follow options (``ingest FILE -m msg env=prod``): argparse would refuse them there.
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if "=" not in e or e.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *extra]
    try:
        authorize_cli(args)
        return GROUPS[args.group][1](args)
    except RayMLOpsError as exc:
        print(f"raymlops: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
