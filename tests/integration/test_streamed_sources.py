"""Data that never sits whole in one process: raw sources streamed into Delta and lakeFS part files, and
plain files' digests hashed in pieces (threads, or Ray tasks on large data) with the same answer."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from raymlops.data import file_digest, lakefs_backend
from raymlops.data.files_backend import FilesBackend
from raymlops.data.seed import open_seeded
from raymlops.data.sources import load_source, open_source, source_schema
from raymlops.errors import DataVersionError

pytestmark = pytest.mark.usefixtures("ray_local")


def _rows(n: int, start: int = 0) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table({"id": ids, "x": [i * 0.5 for i in ids], "city": [f"c{i % 7}" for i in ids]})


def _parquet_folder(root: Path, files: int, rows: int) -> Path:
    root.mkdir()
    for index in range(files):
        pq.write_table(_rows(rows, index * rows), root / f"part-{index}.parquet", row_group_size=rows // 2)
    return root


def test_a_parquet_folder_streams_into_a_delta_table_batch_by_batch(tmp_path: Path) -> None:
    folder = _parquet_folder(tmp_path / "raw", files=3, rows=2_000)
    reader = open_source(str(folder))
    batches = list(reader)
    assert len(batches) >= 6 and max(b.num_rows for b in batches) <= 1_000  # row group by row group
    assert source_schema(str(folder)) == reader.schema

    backend = open_seeded(f"delta:{tmp_path / 'table'}", str(folder))
    version = backend.resolve()
    assert version.version == "0"
    written = pa.concat_tables(backend.read(version).iter_batches(batch_format="pyarrow")).sort_by("id")
    assert written.num_rows == 6_000
    assert written.select(["id", "x", "city"]).equals(load_source(str(folder)).sort_by("id"))


def test_a_gzipped_csv_streams_with_the_types_a_whole_read_infers(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv.gz"
    table = _rows(5_000)
    with gzip.open(path, "wb") as handle:
        pacsv.write_csv(table, handle)
    streamed = open_source(str(path)).read_all()
    assert streamed.equals(pacsv.read_csv(path)) and streamed.schema == table.schema


def test_lakefs_writes_a_stream_as_bounded_part_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lakefs_backend, "_PART_ROWS", 1_000)
    stream = pa.RecordBatchReader.from_batches(_rows(1).schema, _rows(2_500).to_batches(max_chunksize=300))
    parts = list(lakefs_backend._parquet_parts(stream))
    assert [rows for _, rows in parts] == [1_200, 1_200, 100]  # a part closes once it holds 1,000 rows
    read = [pq.read_table(pa.BufferReader(data)) for data, _ in parts]
    assert pa.concat_tables(read).equals(_rows(2_500).combine_chunks())
    empty = list(lakefs_backend._parquet_parts(_rows(0)))
    assert len(empty) == 1 and pq.read_table(pa.BufferReader(empty[0][0])).schema == _rows(0).schema


def test_file_digests_agree_across_threads_and_ray_tasks_and_old_pins_still_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _parquet_folder(tmp_path / "files", files=3, rows=4_000)
    files = sorted(folder.glob("*.parquet"))
    monkeypatch.setattr(file_digest, "PIECE_BYTES", 4_096)  # several pieces per file
    threaded = file_digest.content_digest(folder, files)
    monkeypatch.setattr(file_digest, "_RAY_MIN_BYTES", 0)  # the same pieces, hashed by Ray tasks
    assert file_digest.content_digest(folder, files) == threaded
    monkeypatch.setattr(file_digest, "PIECE_BYTES", 1 << 20)  # other pieces: another digest of the same bytes
    assert file_digest.content_digest(folder, files) != threaded

    backend = FilesBackend(str(folder))
    version = backend.resolve()
    assert backend.read(version).count() == 12_000
    legacy = file_digest.legacy_digest(folder, files)
    pinned = FilesBackend(str(folder), pinned=legacy)  # a reference recorded before the pieces
    assert pinned.resolve().version == legacy and pinned.num_rows(pinned.resolve()) == 12_000

    pq.write_table(_rows(10), files[0])  # the files change: both forms are refused
    for stale in (version.version, legacy):
        with pytest.raises(DataVersionError):
            FilesBackend(str(folder), pinned=stale).resolve()
    with pytest.raises(DataVersionError, match="cannot be read any more"):
        backend.read(version)
