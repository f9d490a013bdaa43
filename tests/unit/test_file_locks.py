"""The three cross-process locks (registry writes, the audit log, the key file) exclude each other and
time out with an error that names the lock, instead of waiting for ever."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from raymlops.errors import AuthError, GovernanceError
from raymlops.registry.mlflow_registry import file_lock
from raymlops.security.audit import _locked_append, audit_event, read_audit, verify_chain
from raymlops.security.keys import KeyStore


def _held_elsewhere(lock, release: threading.Event) -> threading.Thread:
    """Hold ``lock`` (a context manager) in another thread until ``release`` is set."""
    taken = threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            release.wait(10)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(5)
    return thread


def test_a_held_lock_times_out_with_an_error_naming_it(tmp_path: Path) -> None:
    registry_lock = tmp_path / "mlflow.db.lock"
    keys = KeyStore(tmp_path / "keys.json")
    audit_log = tmp_path / "audit" / "security.jsonl"
    cases = [
        (file_lock(registry_lock), lambda: file_lock(registry_lock, timeout_s=0.2), GovernanceError),
        (keys._locked(), lambda: keys._locked(timeout_s=0.2), AuthError),
        (_locked_append(audit_log), lambda: _locked_append(audit_log, timeout_s=0.2), TimeoutError),
    ]
    for held, attempt, error in cases:
        release = threading.Event()
        thread = _held_elsewhere(held, release)
        with pytest.raises(error, match="held for more than 0 s"), attempt():
            pass
        release.set()
        thread.join(5)
        with attempt():  # free again once the holder lets go
            pass


def _append(log: Path, worker: int) -> None:
    for i in range(50):
        audit_event("serve.traffic", f"app-{worker}-{i}", "ok", "test", who="ops", path=log)


def test_concurrent_audit_appends_keep_the_hash_chain(tmp_path: Path) -> None:
    log = tmp_path / "security.jsonl"
    # Processes, as in production (jobs, CLI, replicas): threads hardly interleave under the GIL.
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append, args=(log, w)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert [w.exitcode for w in workers] == [0] * 4
    assert len(read_audit(log)) == 200
    assert verify_chain(log) is None  # every record's prev is the line before it: no two wrote at once
