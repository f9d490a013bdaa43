"""``python -m raymlops state ...``: the embedded state to one archive and back.

    state backup ARCHIVE                          the state root (state_dir) into ARCHIVE (.tar or .tar.gz)
    state restore ARCHIVE [--force] [--sha256 H]  ARCHIVE into the state root, checked file by file

The state root is the config's ``state_dir`` (``RAYMLOPS_HOME``, or a ``state_dir=...`` override), so
``RAYMLOPS_HOME=/srv/new python -m raymlops state restore backup.tar.gz`` restores into /srv/new.
A backup may run while a job, the server or the monitor writes (see ``raymlops.state.backup``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_state_commands", "run_state_command"]


def add_state_commands(sub: argparse._SubParsersAction) -> None:
    state = sub.add_parser("state", help="back up and restore the embedded state").add_subparsers(
        dest="command", required=True
    )
    backup = state.add_parser("backup", help="the state root into one archive, consistent while jobs run")
    backup.add_argument("archive", type=Path, help="a new file: .tar, or .tar.gz/.tgz to compress")
    restore = state.add_parser("restore", help="an archive into an empty state root, every file checked")
    restore.add_argument("archive", type=Path, help="an archive written by `state backup`")
    restore.add_argument(
        "--force",
        action="store_true",
        help="restore into a non-empty state root: its contents are moved to <root>.pre-restore-<time>",
    )
    restore.add_argument(
        "--sha256", default=None, metavar="HEX", help="the archive's digest as `state backup` printed it"
    )
    for parser in (backup, restore):
        parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for the job (state_dir=...)")


def _locations(cfg) -> dict[str, str]:  # cfg: DictConfig
    """Where the config keeps state: those outside state_dir are not in the archive (reported)."""
    locations = {
        "registry.tracking_uri": str(cfg.registry.tracking_uri),
        "registry.artifact_root": str(cfg.registry.artifact_root),
        "data.ref": str(cfg.data.ref),
        "monitor.log_root": str(cfg.monitor.log_root),
        "monitor.out_dir": str(cfg.monitor.out_dir),
        "security.keys_file": str(cfg.security.keys_file),
        "security.audit_log": str(cfg.security.audit_log),
    }
    store = cfg.features.online_store
    locations["features.online_store"] = str(store.path if store.kind == "sqlite" else store.url)
    return locations


def run_state_command(args: argparse.Namespace) -> int:
    from raymlops.cli.console import progress_bar
    from raymlops.config import compose
    from raymlops.state.backup import backup_state
    from raymlops.state.restore import restore_state

    cfg = compose(list(args.overrides))
    if args.command == "backup":
        with progress_bar("backup") as progress:
            result = backup_state(cfg.state_dir, args.archive, locations=_locations(cfg), progress=progress)
        tables = ", ".join(f"{t}@{v}" for t, v in sorted(result.delta_versions.items())) or "none"
        print(f"archive   {result.archive}")
        print(f"sha256    {result.sha256}")
        print(f"files     {result.files} ({result.bytes / 1e6:.1f} MB) in {result.seconds:.1f} s")
        print(f"sqlite    {', '.join(result.sqlite) or 'none'} (online backup)")
        print(f"delta     {tables}")
        for line in result.skipped:
            print(f"skipped   {line}")
        for key, where in sorted(result.outside.items()):
            print(f"NOT IN THE ARCHIVE  {key} = {where} (outside state_dir: back it up by its own means)")
        return 0
    with progress_bar("restore") as progress:
        result2 = restore_state(
            args.archive,
            cfg.state_dir,
            force=args.force,
            sha256=args.sha256,
            audit_log=cfg.security.audit_log,
            progress=progress,
        )
    print(f"restored  {result2.files} files ({result2.bytes / 1e6:.1f} MB) into {result2.target}")
    print(f"from      {result2.from_root}; {result2.rewritten} registry value(s) now name the new root")
    if result2.moved_aside is not None:
        print(f"previous  contents moved to {result2.moved_aside}")
    for key, where in sorted(result2.outside.items()):
        print(f"NOT RESTORED  {key} = {where} (it was outside state_dir at backup time)")
    return 0
