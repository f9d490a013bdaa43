"""``python -m raymlops serve keys ...``: the router's API keys (DESIGN §4).

    serve keys add NAME --role ROLE   a new key, printed once (only its hash is kept)
    serve keys list                   key ids, names, roles, creation times
    serve keys revoke KEY_ID          remove a key
    serve keys role KEY_ID ROLE       change a key's role (admin)

ROLE is one of viewer < predictor < data-scientist < operator < admin (``raymlops.security.roles``).
Trailing Hydra overrides (``env=prod``, ``state_dir=...``) choose the key file (``security.keys_file``)
the job's deploy stage and the CLI's role checks read. A running router sees a change on its next deploy.
"""

from __future__ import annotations

import argparse

from raymlops.security.keys import KeyStore
from raymlops.security.role_ranks import ROLES

__all__ = ["add_keys_commands", "run_keys_command"]


def add_keys_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``keys add|list|revoke`` to the ``serve`` group's subparsers (``args.keys_command``)."""
    keys = sub.add_parser("keys", help="API keys of the serving router: add, list, revoke").add_subparsers(
        dest="keys_command", required=True
    )
    add = keys.add_parser("add", help="create a key with a role; it is printed once, never stored")
    add.add_argument("name", help="who or what uses the key (e.g. checkout-service)")
    add.add_argument("--role", required=True, choices=ROLES, help=" < ".join(ROLES))
    listing = keys.add_parser("list", help="key ids, names, roles and creation times (no secrets)")
    revoke = keys.add_parser("revoke", help="remove a key; routers drop it on their next deploy")
    revoke.add_argument("key_id", help="the id shown by `keys list` (the part after rmk_)")
    role = keys.add_parser("role", help="change a key's role; routers apply it on their next deploy")
    role.add_argument("key_id", help="the id shown by `keys list`")
    role.add_argument("role", choices=ROLES, help=" < ".join(ROLES))
    for parser in (add, listing, revoke, role):
        parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job")


def run_keys_command(args: argparse.Namespace) -> int:
    from raymlops.config import compose

    cfg = compose(list(args.overrides)).serve.auth
    store = KeyStore(cfg.keys_file)
    state = "on" if cfg.enabled else "off (serve.auth.enabled=false: routers ignore keys)"
    if args.keys_command == "add":
        key = store.create(args.name, args.role)
        print(key)
        print(
            f"\nkey for {args.name!r} with role {args.role}; store it now, it is not kept anywhere.\n"
            f"send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'. file: {store.path}; "
            f"auth {state}. running routers accept it after their next deploy."
        )
        return 0
    if args.keys_command == "role":
        before = store.set_role(args.key_id, args.role)
        change = f"role {before.role} -> {args.role}"
        print(f"{args.key_id} ({before.name!r}): {change}; routers apply it on their next deploy.")
        return 0
    if args.keys_command == "revoke":
        info = store.revoke(args.key_id)
        print(
            f"revoked {info.key_id} ({info.name!r}, {info.role}); running routers refuse it after their "
            "next deploy."
        )
        return 0
    infos = store.list()
    if not infos:
        print(f"no API keys in {store.path}; auth {state}")
        return 0
    rows = [("KEY_ID", "NAME", "ROLE", "CREATED (UTC)")]
    rows += [(i.key_id, i.name, i.role, i.created[:19].replace("T", " ")) for i in infos]
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    print(f"\n{len(infos)} key(s) in {store.path}; auth {state}")
    return 0
