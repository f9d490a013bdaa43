"""State backup/restore without Ray: consistent copies while writers run, refusals of bad archives."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import sqlite3
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from raymlops.errors import ConfigError, IntegrityError
from raymlops.monitoring.parquet_log import ParquetLog, read_log
from raymlops.security.audit import audit_event, read_audit, verify_chain
from raymlops.state.backup import MANIFEST_NAME, backup_state
from raymlops.state.restore import restore_state, rewrite_root

ROWS_PER_COMMIT = 50
ROWS_PER_TXN = 10


class Writers:
    """A Delta table, a SQLite database, a parquet log and the audit log, all written to at once."""

    def __init__(self, root: Path) -> None:
        from deltalake import write_deltalake

        self.root, self.stop = root, threading.Event()
        self.table = str(root / "data" / "flights")
        write_deltalake(self.table, self._batch(0))
        self.db = root / "mlflow.db"
        with sqlite3.connect(self.db) as conn:
            conn.execute("CREATE TABLE runs (batch INTEGER, uri TEXT)")
        self.log = ParquetLog(
            root / "prediction_log",
            schema=pa.schema([("ts", pa.timestamp("us", tz="UTC")), ("x", pa.int64())]),
            flush_rows=5,
            flush_interval_s=0.01,
        )
        self.audit = root / "audit" / "security.jsonl"
        writers = (self._delta, self._sqlite, self._log, self._audit)
        self.threads = [threading.Thread(target=f) for f in writers]

    @staticmethod
    def _batch(i: int) -> pa.Table:
        return pa.table({"commit": pa.array([i] * ROWS_PER_COMMIT, pa.int64())})

    def _delta(self) -> None:
        from deltalake import write_deltalake

        i = 1
        while not self.stop.is_set():
            write_deltalake(self.table, self._batch(i), mode="append")
            i += 1
            self.stop.wait(0.01)  # paced: the test needs writes in flight, not thousands of commits

    def _sqlite(self) -> None:
        batch = 0
        uri = f"file://{self.root}/artifacts/1/model"
        while not self.stop.is_set():
            with sqlite3.connect(self.db, timeout=30) as conn:  # one transaction of ROWS_PER_TXN rows
                conn.executemany("INSERT INTO runs VALUES (?, ?)", [(batch, uri)] * ROWS_PER_TXN)
            batch += 1
            self.stop.wait(0.002)

    def _log(self) -> None:
        while not self.stop.is_set():
            self.log.append([{"ts": dt.datetime.now(dt.timezone.utc), "x": 1}])
            self.stop.wait(0.001)

    def _audit(self) -> None:
        while not self.stop.is_set():
            audit_event("job.run", "flights", "ok", "test", who="t", path=self.audit)
            self.stop.wait(0.005)

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.log.close()


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, dict]]:
    root = tmp_path_factory.mktemp("state")
    (root / "api_keys.json").write_text("{}")
    (root / "api_keys.json").chmod(0o600)
    archive = tmp_path_factory.mktemp("backups") / "state.tar"
    with Writers(root) as writers:
        threading.Event().wait(0.3)  # writers under way
        result = backup_state(root, archive)
        assert writers.threads[0].is_alive()  # the backup ran while the table was being written
    with tarfile.open(archive) as tar:
        member = tar.extractfile(MANIFEST_NAME)
        assert member is not None
        manifest = json.loads(member.read())
    assert result.delta_versions == manifest["delta_versions"] and result.sqlite == ("mlflow.db",)
    yield root, archive, manifest


def test_restore_of_a_backup_taken_mid_write_is_consistent(backed_up, tmp_path: Path) -> None:
    from deltalake import DeltaTable

    _, archive, manifest = backed_up
    target = tmp_path / "restored"
    result = restore_state(archive, target, audit_log=target / "audit" / "security.jsonl")
    # Delta: exactly the captured version, every commit whole, older versions still readable.
    version = manifest["delta_versions"]["data/flights"]
    assert version >= 1
    table = DeltaTable(str(target / "data" / "flights"))
    assert table.version() == version
    commits = table.to_pyarrow_table().column("commit").to_pylist()
    assert sorted(set(commits)) == list(range(version + 1))
    assert len(commits) == (version + 1) * ROWS_PER_COMMIT
    first = DeltaTable(str(target / "data" / "flights"), version=0)
    assert first.to_pyarrow_table().num_rows == ROWS_PER_COMMIT
    # SQLite: a transactionally consistent snapshot (whole transactions only), paths moved to the new root.
    with sqlite3.connect(target / "mlflow.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        count, uris = conn.execute("SELECT count(*), group_concat(DISTINCT uri) FROM runs").fetchone()
    assert count > 0 and count % ROWS_PER_TXN == 0
    assert uris == f"file://{target}/artifacts/1/model" and result.rewritten == count
    # Prediction log: complete parquet files only; audit log: whole lines, its chain intact, the restore last.
    logged = read_log(target / "prediction_log", ["date"])
    assert logged is not None and logged.num_rows > 0
    assert verify_chain(target / "audit" / "security.jsonl") is None
    assert read_audit(target / "audit" / "security.jsonl")[-1].action == "state.restore"
    # Key files keep their mode.
    assert (target / "api_keys.json").stat().st_mode & 0o777 == 0o600


def test_tampered_archive_is_refused_and_nothing_is_written(backed_up, tmp_path: Path) -> None:
    _, archive, _ = backed_up
    data = bytearray(archive.read_bytes())
    with tarfile.open(archive) as tar:
        member = tar.getmember("state/api_keys.json")
        data[member.offset_data] ^= 0x01  # one bit of one file's content
    tampered = tmp_path / "tampered.tar"
    tampered.write_bytes(bytes(data))
    target, audit = tmp_path / "restored", tmp_path / "audit.jsonl"
    with pytest.raises(IntegrityError, match=r"api_keys\.json does not match its manifest digest"):
        restore_state(tampered, target, audit_log=audit)
    assert not target.exists() and not list(tmp_path.glob(".restored.restore-*"))
    [refusal] = read_audit(audit)
    assert (refusal.action, refusal.outcome) == ("state.restore", "refused")
    # The whole-archive digest catches it before any member is read.
    with pytest.raises(IntegrityError, match="not the expected"):
        restore_state(tampered, target, sha256=hashlib.sha256(archive.read_bytes()).hexdigest())


def test_members_that_leave_the_root_or_are_links_are_refused(backed_up, tmp_path: Path) -> None:
    _, _, manifest = backed_up
    for name, kind in (("state/../escaped", tarfile.REGTYPE), ("state/link", tarfile.SYMTYPE)):
        evil = tmp_path / "evil.tar"
        with tarfile.open(evil, "w") as tar:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "/etc/passwd"
            tar.addfile(info, io.BytesIO(b""))
            body = json.dumps({**manifest, "files": {}}).encode()
            info = tarfile.TarInfo(MANIFEST_NAME)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        with pytest.raises(IntegrityError, match="refused"):
            restore_state(evil, tmp_path / "restored")
        assert not (tmp_path / "escaped").exists() and not (tmp_path / "restored").exists()


def test_non_empty_target_is_refused_unless_forced_and_then_moved_aside(backed_up, tmp_path: Path) -> None:
    _, archive, _ = backed_up
    target = tmp_path / "state"
    (target / "data").mkdir(parents=True)
    (target / "data" / "mine.parquet").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"not empty .*--force"):
        restore_state(archive, target)
    assert (target / "data" / "mine.parquet").read_bytes() == b"x"
    result = restore_state(archive, target, force=True)
    assert result.moved_aside is not None and (result.moved_aside / "data" / "mine.parquet").exists()
    assert (target / "mlflow.db").exists() and not (target / "data" / "mine.parquet").exists()


def test_backup_refuses_an_archive_inside_the_root_or_one_that_exists(backed_up) -> None:
    root, archive, _ = backed_up
    with pytest.raises(ConfigError, match="inside the state root"):
        backup_state(root, root / "b.tar")
    with pytest.raises(ConfigError, match="exists"):
        backup_state(root, archive)


def test_rewrite_root_stops_at_path_boundaries(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
        rows = [("a", "file:///old/root/artifacts/1"), ("b", "delta:/old/root@3"), ("c", "/old/root2/x")]
        conn.executemany("INSERT INTO t VALUES (?, ?)", [*rows, ("/old/root/k", "/old/root")])
    assert rewrite_root(db, "/old/root", "/new/place") == 3
    with sqlite3.connect(db) as conn:
        values = dict(conn.execute("SELECT k, v FROM t"))
    assert values == {
        "a": "file:///new/place/artifacts/1",
        "b": "delta:/new/place@3",
        "c": "/old/root2/x",  # another root
        "/old/root/k": "/new/place",  # a primary key is left alone, its value is not
    }
