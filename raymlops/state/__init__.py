"""The embedded state (registry, artifacts, Delta tables, prediction log, keys, audit) to one archive
and back: ``python -m raymlops state backup|restore`` (:mod:`raymlops.cli.state`)."""

from raymlops.state.backup import MANIFEST_NAME, BackupResult, backup_state
from raymlops.state.restore import RestoreResult, restore_state

__all__ = ["MANIFEST_NAME", "BackupResult", "RestoreResult", "backup_state", "restore_state"]
