"""Every data backend keeps the DataBackend contract: the shipped ones (Delta, plain files, lakeFS against
the fake server) and one written outside the package (tests/plugins/external_backend.py), named only by
its dotted path in a reference. Each check runs over every backend; writes are checked on the backends
that write (a read-only one keeps DataBackend's refusals)."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raymlops.config.schema import LakeFSConfig
from raymlops.data.refs import open_backend, parse_ref, parse_version
from raymlops.data.seed import open_seeded
from raymlops.data.versioning import (
    BACKENDS,
    Candidate,
    DataBackend,
    DataVersion,
    SeedableBackend,
    backend_class,
)
from raymlops.errors import ConfigError
from tests.fakes.lakefs_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, FakeLakeFS, start_fake_lakefs

EXTERNAL = "tests.plugins.external_backend:SnapshotFolderBackend"


def _table(rows: int, start: int = 0, extra: bool = False) -> pa.Table:
    columns: dict[str, Any] = {"id": list(range(start, start + rows)), "x": [float(i) for i in range(rows)]}
    if extra:
        columns["note"] = ["n"] * rows
    return pa.table(columns)


@dataclass(frozen=True)
class Case:
    """A backend under test: ``make`` puts ``table`` somewhere new and returns its reference."""

    name: str
    make: Callable[[Path, pa.Table], str]
    settings: Any = None


@pytest.fixture(scope="module")
def lakefs() -> Iterator[FakeLakeFS]:
    server = start_fake_lakefs()
    yield server
    server.close()


def _seeded(scheme: str) -> Callable[[Path, pa.Table], str]:
    def make(folder: Path, table: pa.Table) -> str:
        ref = f"{scheme}:{folder / 'table'}"
        backend = open_backend(ref)
        assert isinstance(backend, SeedableBackend) and not backend.exists()
        backend.create(table, "first version")
        return ref

    return make


def _files(folder: Path, table: pa.Table) -> str:
    (folder / "files").mkdir()
    pq.write_table(table, folder / "files" / "part.parquet")
    return str(folder / "files")


@pytest.fixture(params=["delta", "files", "lakefs", "external"])
def case(request: pytest.FixtureRequest) -> Case:
    if request.param == "lakefs":
        server: FakeLakeFS = request.getfixturevalue("lakefs")
        settings = LakeFSConfig(
            host=server.url, access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY
        )

        def make(folder: Path, table: pa.Table) -> str:
            repo = f"repo-{uuid.uuid4().hex[:8]}"
            server.create_repository(repo)
            ref = f"lakefs://{repo}/main/tables/t"
            open_backend(ref, settings).write(table, "first version", {})
            return ref

        return Case("lakefs", make, settings)
    if request.param == "files":
        return Case("files", _files)
    return Case(request.param, _seeded(EXTERNAL if request.param == "external" else "delta"))


def _open(case: Case, tmp_path: Path, table: pa.Table) -> tuple[DataBackend, str]:
    ref = case.make(tmp_path, table)
    return open_backend(ref, case.settings), ref


def _writes(backend: DataBackend) -> bool:
    return type(backend).write is not DataBackend.write


def _rows(backend: DataBackend, version: DataVersion) -> list[int]:
    return sorted(backend.read(version).to_pandas()["id"].tolist())


def test_every_registered_scheme_is_a_data_backend() -> None:
    for name in BACKENDS:
        assert issubclass(backend_class(name), DataBackend) and backend_class(name).name == name
    assert backend_class(EXTERNAL).name == EXTERNAL  # named by its dotted path, nothing registered


def test_a_version_is_a_reference_that_reads_the_same_rows(
    ray_local: None, case: Case, tmp_path: Path
) -> None:
    backend, ref = _open(case, tmp_path, _table(5))
    assert isinstance(backend, backend_class(parse_ref(ref).backend))
    version = backend.resolve()
    assert version.backend == type(backend).name
    assert parse_version(str(version), "recorded") == version  # str() parses back to the same version
    again = open_backend(str(version), case.settings)
    assert again.resolve() == version
    assert backend.num_rows(version) == 5 and backend.schema(version).names[:2] == ["id", "x"]
    assert _rows(again, version) == list(range(5))
    assert backend.log(5)[0].version == version  # newest first
    restored = pickle.loads(pickle.dumps(backend))  # backends travel to Ray workers
    assert restored.resolve() == version


def test_writes_make_new_versions_and_old_ones_still_read(case: Case, tmp_path: Path) -> None:
    backend, _ = _open(case, tmp_path, _table(5))
    first = backend.resolve()
    if not _writes(backend):
        with pytest.raises(ConfigError, match=r"data\.ref"):
            backend.write(_table(2), "more", {})
        with pytest.raises(ConfigError, match=r"data\.ref"):
            backend.stage(_table(2), "more", {})
        return
    second = backend.write(_table(3, start=5, extra=True), "three more", {"source": "test"})
    assert second != first and backend.resolve() == second
    assert type(backend).is_newer(second, first) in (True, None)
    assert (backend.num_rows(first), backend.num_rows(second)) == (5, 8)  # rows are read once, above
    diff = backend.diff(first, second)
    assert (diff.old_rows, diff.new_rows, diff.added_columns) == (5, 8, {"note": "string"})
    log = backend.log(10)
    assert [e.version for e in log[:2]] == [second, first] and log[0].message == "three more"
    third = backend.write(_table(2, start=100), "replace", {}, mode="overwrite")
    assert backend.num_rows(third) == 2 and backend.num_rows(second) == 8


def test_candidates_are_invisible_until_published(case: Case, tmp_path: Path) -> None:
    backend, _ = _open(case, tmp_path, _table(5))
    main = backend.resolve()
    if not _writes(backend):  # a read-only backend refuses the whole write-audit-publish path, by name
        for refused in (backend.discard, lambda c: backend.publish(c, "audited", {})):
            with pytest.raises(ConfigError, match=r"data\.ref"):
                refused(Candidate(main, "never-staged"))
        assert backend.resolve() == main
        return
    dropped = backend.stage(_table(2, start=50), "bad batch", {})
    # The candidate holds the staged rows (Delta: those alone; a lakeFS branch: what publishing makes).
    assert backend.num_rows(dropped.version) in (2, 7) and backend.resolve() == main
    backend.discard(dropped)
    assert backend.resolve() == main
    candidate = backend.stage(_table(2, start=5), "good batch", {})
    published = backend.publish(candidate, "audited", {"audit": "passed"})
    assert backend.resolve() == published and backend.num_rows(published) == 7


def test_seeding_writes_only_a_seedable_backend_that_has_no_data(case: Case, tmp_path: Path) -> None:
    source = tmp_path / "source.parquet"
    pq.write_table(_table(4), source)
    if case.name in ("delta", "external"):
        scheme = EXTERNAL if case.name == "external" else "delta"
        ref = f"{scheme}:{tmp_path / 'seeded'}"
        seeded = open_seeded(ref, str(source))
        assert seeded.num_rows(seeded.resolve()) == 4
        assert open_seeded(ref, str(source)).resolve() == seeded.resolve()  # a second open writes nothing
    else:
        backend, ref = _open(case, tmp_path, _table(3))
        before = backend.resolve()
        assert open_seeded(ref, str(source), case.settings).resolve() == before


def test_a_malformed_or_unknown_reference_names_the_formats() -> None:
    with pytest.raises(ConfigError, match=r"cannot parse.*<package\.module:Class>:<location>"):
        parse_ref("s3://bucket/x")
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        parse_ref("no_such_module:Backend:/x")
    with pytest.raises(ConfigError, match=r"not a subclass of raymlops\.data\.versioning\.DataBackend"):
        parse_ref("pathlib:Path:/x")
