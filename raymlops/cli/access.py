"""Who may run a command: its action (``security.roles.CLI_ACTIONS``) checked before it does anything."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["CHECKED_BY_THE_COMMAND", "authorize_cli", "authorize_command", "command_name"]

# Config groups an override may start with: ``serve traffic NAME 1=95 env=prod`` puts the overrides in
# the weights list (its nargs is greedy); they are moved back before anything reads them.
_OVERRIDE_ROOTS = {"env", "state_dir", "ray", "serve", "registry", "security", "data", "monitor", "features"}
_TARGET_ARGS = ("name", "model", "key_id", "ref")  # the argument that names what a command acts on
# Commands whose own code checks their action (``CLI_ACTIONS``), where it knows the target or runs the work:
# checked here too, each would be audited twice.
CHECKED_BY_THE_COMMAND = {
    "retrain": "raymlops.loop.retrain.run_retrain checks retrain.run",
    "scheduler": "each retrain it starts checks retrain.run",
    "batch-score": "checks batch.score on the model once its key=value options are read",
    "ci-gate": "the pipeline checks every action of its stages (security.roles.authorize_job)",
    "job run": "the pipeline checks every action of its stages (security.roles.authorize_job)",
    "job submit": "the job checks every action of its stages on the cluster (authorize_job)",
}


def command_name(args: argparse.Namespace) -> str:
    """``GROUP COMMAND`` (``serve keys add`` for the key commands): the key of ``CLI_ACTIONS``."""
    words = [args.group, getattr(args, "command", None), getattr(args, "keys_command", None)]
    return " ".join(w for w in words if w)


def authorize_cli(args: argparse.Namespace) -> None:
    """The caller's role against the command's action (``security.roles.CLI_ACTIONS``), audited.

    Runs before the command does anything: a refused command changes nothing. Commands in
    ``CHECKED_BY_THE_COMMAND`` check the same action themselves.
    """
    from raymlops.cli.overrides import compose_overrides

    weights = getattr(args, "weights", None)
    if weights:
        moved = [w for w in weights if w.split("=", 1)[0].split(".", 1)[0].lstrip("+~") in _OVERRIDE_ROOTS]
        args.weights = [w for w in weights if w not in moved]
        args.overrides = [*moved, *args.overrides]
    version = getattr(args, "version", None)
    if command_name(args) == "serve shadow" and version is not None and "=" in version:
        args.version = None  # ``serve shadow NAME --stop env=prod``: the optional VERSION took an override
        args.overrides = [version, *args.overrides]
    if command_name(args) in CHECKED_BY_THE_COMMAND:
        return
    cfg = compose_overrides(list(args.overrides))
    authorize_command(cfg.security, args, default_target=str(cfg.env.name))


def authorize_command(security: Any, args: argparse.Namespace, default_target: str = "") -> None:
    """``authorize`` for a parsed command. Unlisted commands need admin; the first key of an empty key
    file may be created by anyone (bootstrap), and that is audited too."""
    from raymlops.security.roles import CLI_ACTIONS, Principal, authorize

    name = command_name(args)
    action = CLI_ACTIONS.get(name, "roles.manage")  # unlisted: admin only
    named = [str(v) for k, v in sorted(vars(args).items()) if k in _TARGET_ARGS and v is not None]
    target = " ".join(named) or default_target
    why = f"python -m raymlops {name}"
    if name == "serve keys add" and security.get("enabled"):
        from raymlops.security.audit import current_user
        from raymlops.security.keys import KeyStore

        if not KeyStore(security["keys_file"]).list():
            why = "bootstrap: the key file holds no key yet"
            authorize(security, action, target, principal=Principal(current_user(), "admin"), why=why)
            return
    authorize(security, action, target, why=why)
