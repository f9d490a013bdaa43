"""Encryption at rest inside a Ray cluster: a process that was given no keyring (a serving replica's
prediction log) encrypts with the KEKs its deploy published to the cluster's key-value store, and
any process of the cluster reads the files back; after the deploy turns encryption off it writes
plaintext again. No Serve app: the replica's writer is the same ParquetLog, run in a Ray task."""

from __future__ import annotations

import base64
import struct
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
        # This driver has no keyring of its own: it finds the file's KEK in the cluster's store.
        table = read_log(str(tmp_path / "on"), ["model"])
        assert table is not None and table.to_pylist() == [
            {"f_origin": "JFK", "f_distance": 1089.4375, "model": "m"}
        ]
    finally:
        crypto.unpublish_keyring()
    (plain,) = _write_in_a_worker(str(tmp_path / "off"))
    clear = Path(plain).read_bytes()
    assert plain.endswith(".parquet") and clear.startswith(b"PAR1")
    # Compared with the bytes Parquet really stores: a float64 is its 8 little-endian bytes (a decimal
    # string would be absent from the plaintext too). Both values are in the plaintext file ...
    value = struct.pack("<d", 1089.4375)
    assert b"JFK" in clear and value in clear
    # ... and neither, nor any 16-byte run of the plaintext file (its data pages, statistics and
    # footer: the same table, written the same way), is in the encrypted one.
    assert b"JFK" not in raw and value not in raw
    leaked = [i for i in range(len(clear) - 15) if clear[i : i + 16] in raw]
    assert not leaked, f"{len(leaked)} 16-byte runs of the plaintext file in the encrypted file"
