"""Encryption at rest inside a Ray cluster: a process that was given no keyring (a serving replica's
prediction log) encrypts with the KEKs its deploy published to the cluster's key-value store, and
any process of the cluster reads the files back; after the deploy turns encryption off it writes
plaintext again. No Serve app: the replica's writer is the same ParquetLog, run in a Ray task."""

from __future__ import annotations

import base64
from pathlib import Path

import pyarrow as pa
import pytest

from raymlops.monitoring.parquet_log import read_log
from raymlops.security import crypto

pytestmark = [pytest.mark.usefixtures("ray_local")]

SCHEMA = pa.schema([("f_origin", pa.string()), ("f_distance", pa.float64()), ("model", pa.string())])


def _write_in_a_worker(root: str) -> list[str]:
    import ray

    @ray.remote(num_cpus=0)
    def write(root: str) -> None:
        from raymlops.monitoring.parquet_log import ParquetLog

        log = ParquetLog(root, schema=SCHEMA, partition_cols=["model"])  # no keyring given
        log.append(pa.table({"f_origin": ["JFK"], "f_distance": [1089.4375], "model": ["m"]}))
        log.close()

    ray.get(write.remote(root))
    return sorted(str(p) for p in Path(root).rglob("part-*"))


def test_a_replica_encrypts_with_the_published_keyring_and_stops_when_it_is_withdrawn(tmp_path, monkeypatch):
    monkeypatch.delenv("RAYMLOPS_KEK", raising=False)
    crypto.configure(None)
    ring = crypto.Keyring.parse(f"cluster1:{base64.b64encode(bytes(range(32))).decode()}", "test")
    crypto.publish_keyring(ring)
    try:
        (encrypted,) = _write_in_a_worker(str(tmp_path / "on"))
        raw = Path(encrypted).read_bytes()
        assert encrypted.endswith(".parquet.enc") and raw.startswith(crypto.MAGIC)
        assert b"JFK" not in raw and b"1089.4375" not in raw
        # This driver has no keyring of its own: it finds the file's KEK in the cluster's store.
        table = read_log(str(tmp_path / "on"), ["model"])
        assert table is not None and table.to_pylist() == [
            {"f_origin": "JFK", "f_distance": 1089.4375, "model": "m"}
        ]
    finally:
        crypto.unpublish_keyring()
    (plain,) = _write_in_a_worker(str(tmp_path / "off"))
    assert plain.endswith(".parquet") and b"JFK" in Path(plain).read_bytes()
