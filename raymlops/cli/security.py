"""``python -m raymlops security ...``: key procedures.

    security rotate-kek [--path P ...] [overrides]   re-wrap every encrypted file's data key under the
                                                     current (first) KEK; the data is not re-encrypted
    security audit [--tail N] [--action A] [overrides]   the last N audit records, then whether the hash
                                                     chain is intact (exit 1 when it is broken)

Without PATHs it walks the places the job writes encrypted files: ``state_dir`` (run folders, the
registry's artifacts, reports) and, where they lie elsewhere, ``registry.artifact_root``,
``monitor.log_root`` and ``monitor.out_dir``. The keyring is ``security.encryption``'s
(:mod:`raymlops.security.crypto`); it must still hold the old KEKs, after the new one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_security_commands", "run_security_command"]


def add_security_commands(sub: argparse._SubParsersAction) -> None:
    security = sub.add_parser("security", help="security key procedures").add_subparsers(
        dest="command", required=True
    )
    rotate = security.add_parser(
        "rotate-kek", help="re-wrap every encrypted file's data key under the current KEK (no re-encryption)"
    )
    rotate.add_argument(
        "--path",
        action="append",
        default=None,
        type=Path,
        help="a file or folder to rotate (repeatable; default: state_dir, the artifact root, the logs)",
    )
    rotate.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job")
    audit = security.add_parser("audit", help="show the audit log's last records and verify its hash chain")
    audit.add_argument("--tail", type=int, default=20, help="records to show (default: %(default)s; 0: none)")
    audit.add_argument("--action", default=None, help="only records of this action (e.g. serve.traffic)")
    audit.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job")


def run_security_command(args: argparse.Namespace) -> int:
    from raymlops.config import compose
    from raymlops.security.crypto import Keyring, rotate_tree

    cfg = compose(list(args.overrides))
    if args.command == "rotate-kek":
        enc = cfg.security.encryption
        keyring = Keyring.from_settings(enc.kek_file, str(enc.kek_env))
        roots = _roots(cfg) if not args.path else [Path(p) for p in args.path]
        from raymlops.cli.console import progress_bar

        with progress_bar("rotate-kek") as progress:
            counts = rotate_tree(roots, keyring, progress=progress)
        from raymlops.security.audit import audit_event

        audit_event(
            "security.rotate",
            keyring.current.key_id,
            "ok",
            "python -m raymlops security rotate-kek",
            details={**counts, "roots": [str(r) for r in roots], "kek_ids": list(keyring.ids)},
            path=str(cfg.security.audit_log),
        )
        print(
            f"rotated to KEK {keyring.current.key_id!r}: {counts['rewrapped']} file(s) re-wrapped, "
            f"{counts['current']} already current, {counts['plaintext']} not encrypted "
            f"(under {', '.join(str(r) for r in roots)})"
        )
        return 0
    if args.command == "audit":
        return _show_audit(str(cfg.security.audit_log), args.tail, args.action)
    raise AssertionError(f"unhandled security command {args.command!r}")  # argparse lists the choices


def _show_audit(path: str, tail: int, action: str | None) -> int:
    """Print the last ``tail`` records (of ``action``), then the chain's state; 1 when it is broken."""
    from raymlops.security.audit import read_audit, verify_chain

    broken = verify_chain(path)
    records = [r for r in read_audit(path) if action is None or r.action == action] if broken is None else []
    for record in records[-tail:] if tail > 0 else []:
        print(
            f"{record.when}  {record.outcome:<7} {record.action:<18} {record.who} ({record.role or '-'}) "
            f"{record.target}  {record.why}"
        )
    if broken is not None:
        print(f"{path}: the hash chain breaks at line {broken}: a line was edited, removed or inserted")
        return 1
    print(f"{path}: {len(read_audit(path))} record(s), hash chain intact")
    return 0


def _roots(cfg) -> list[Path]:  # cfg: the composed job config
    """``state_dir`` plus the configured roots that lie outside it (each walked once)."""
    state = Path(str(cfg.state_dir)).expanduser().resolve()
    roots = [state]
    for value in (cfg.registry.artifact_root, cfg.monitor.log_root, cfg.monitor.out_dir):
        text = str(value)
        if "://" in text:
            continue  # object stores: rotate with their own tools (or --path on a mounted copy)
        path = Path(text).expanduser().resolve()
        if path.exists() and state not in path.parents and path != state and path not in roots:
            roots.append(path)
    return [r for r in roots if r.exists()]
