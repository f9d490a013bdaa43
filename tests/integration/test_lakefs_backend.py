"""The lakeFS backend through the real lakefs / lakefs-sdk / lakefs-spec clients, against a fake server.

No lakeFS server can run on these machines; ``tests/fakes/lakefs_server.py`` answers the lakeFS REST
API in memory with the SDK's own models. Reads go through Ray Data and lakefs-spec in Ray workers.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pyarrow as pa
import pytest

from raymlops.data.lakefs_backend import LakeFSBackend
from raymlops.data.versioning import DataVersion
from raymlops.errors import ConfigError
from tests.fakes.lakefs_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, FakeLakeFS, start_fake_lakefs

PATH = "tables/flights"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLakeFS]:
    server = start_fake_lakefs()
    yield server
    server.close()


@pytest.fixture
def backend(fake: FakeLakeFS) -> LakeFSBackend:
    """A fresh repository per test, so no test sees another's commits."""
    repo = f"repo-{uuid.uuid4().hex[:8]}"
    fake.create_repository(repo)
    return _open(fake, repo, "main")


def _open(fake: FakeLakeFS, repo: str, ref: str) -> LakeFSBackend:
    return LakeFSBackend(
        repo, ref, PATH, host=fake.url, access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY
    )


def _table(rows: int, start: int = 0, extra: bool = False) -> pa.Table:
    ids = list(range(start, start + rows))
    columns = {
        "id": ids,
        "carrier": [["UA", "AA", "DL", "B6"][i % 4] for i in ids],
        "distance": [100.0 + i for i in ids],
        "late": [i % 3 == 0 for i in ids],
    }
    if extra:
        columns["air_time"] = [0.5 * i for i in ids]
    return pa.table(columns)


def _rows(backend: LakeFSBackend, version: DataVersion) -> pa.Table:
    """Read through Ray Data (the backend's ``read``): the bytes are fetched in Ray workers."""
    import ray

    return pa.concat_tables(ray.get(backend.read(version).to_arrow_refs())).sort_by("id")


def _rows_here(backend: LakeFSBackend, version: DataVersion) -> pa.Table:
    """The same part files through the same lakefs-spec filesystem, in this process.

    Without a Ray job (10-40 s each on a loaded 2-core machine) once one test covers the Ray read path.
    """
    import pyarrow.parquet as pq

    return pq.read_table(backend._parts(version), filesystem=backend._filesystem()).sort_by("id")


def _branches(fake: FakeLakeFS, backend: LakeFSBackend) -> set[str]:
    return set(fake.repos[backend.repo].branches)


def _two_versions(backend: LakeFSBackend) -> tuple[DataVersion, DataVersion]:
    """v0: 200 rows, 4 columns; v1 overwrites it with 300 rows and a fifth column."""
    v0 = backend.write(_table(200), "first load", {"run_id": "run-0", "git_sha": "aaa111"})
    v1_meta = {"run_id": "run-1", "git_sha": "bbb222"}
    v1 = backend.write(_table(300, extra=True), "reload", v1_meta, mode="overwrite")
    return v0, v1


def test_resolve_branch_tag_and_commit(fake: FakeLakeFS, backend: LakeFSBackend) -> None:
    from lakefs import Tag

    v0, v1 = _two_versions(backend)
    assert v0.version != v1.version and len(v1.version) == 64
    assert str(v1) == f"lakefs://{backend.repo}/{v1.version}/{PATH}"
    assert backend.resolve() == v1  # the branch -> its head commit
    assert pickle.loads(pickle.dumps(backend)).resolve() == v1  # e.g. shipped to a Ray task
    Tag(backend.repo, "release-0", client=backend._client).create(v0.version)
    assert _open(fake, backend.repo, "release-0").resolve() == v0  # the tag -> its commit
    assert _open(fake, backend.repo, v0.version).resolve() == v0  # a commit -> itself


def test_read_commit_after_branch_moved(ray_local: None, backend: LakeFSBackend) -> None:
    v0, v1 = _two_versions(backend)
    assert _rows(backend, v0).equals(_table(200))  # v1 deleted v0's part file on main
    assert backend.num_rows(v0) == 200 and backend.num_rows(v1) == 300
    assert backend.schema(v1).names == ["id", "carrier", "distance", "late", "air_time"]


def test_log_newest_first_with_metadata(backend: LakeFSBackend) -> None:
    v0, v1 = _two_versions(backend)
    log = backend.log()
    assert [entry.version for entry in log] == [v1, v0]  # no "Repository created": it left PATH alone
    assert [entry.message for entry in log] == ["reload", "first load"]
    assert log[0].metadata == {"run_id": "run-1", "git_sha": "bbb222"}
    assert log[1].metadata == {"run_id": "run-0", "git_sha": "aaa111"}
    stamp = datetime.fromisoformat(log[0].timestamp)
    assert stamp.utcoffset() == timedelta(0)
    assert backend.log(limit=1) == log[:1]


def test_diff_counts_rows_and_added_column(backend: LakeFSBackend) -> None:
    v0, v1 = _two_versions(backend)
    diff = backend.diff(v0, v1)
    assert (diff.old_rows, diff.new_rows) == (200, 300)
    assert diff.added_columns == {"air_time": "double"}
    assert diff.removed_columns == {} and diff.changed_types == {}
    assert diff.as_dict()["row_delta"] == 100


def test_stage_then_publish(fake: FakeLakeFS, backend: LakeFSBackend) -> None:
    v0 = backend.write(_table(200), "first load", {"run_id": "run-0"})
    candidate = backend.stage(_table(50, start=200), "candidate rows", {"run_id": "run-1"})
    assert candidate.handle.startswith("candidate-") and candidate.handle in _branches(fake, backend)
    assert backend.num_rows(candidate.version) == 250  # readable for the audit...
    assert backend.resolve() == v0  # ...while main has not moved
    assert _rows_here(backend, backend.resolve()).equals(_table(200))

    publish_meta = {"run_id": "run-1", "audit": "passed"}
    published = backend.publish(candidate, "publish audited rows", publish_meta)
    assert backend.resolve() == published != v0
    assert _rows_here(backend, published).equals(_table(250))
    assert _branches(fake, backend) == {"main"}
    newest = backend.log(limit=1)[0]
    assert (newest.message, newest.metadata) == ("publish audited rows", publish_meta)


def test_stage_then_discard(fake: FakeLakeFS, backend: LakeFSBackend) -> None:
    v0 = backend.write(_table(200), "first load", {"run_id": "run-0"})
    candidate = backend.stage(_table(300, extra=True), "bad rows", {"run_id": "run-1"}, mode="overwrite")
    assert backend.num_rows(candidate.version) == 300
    backend.discard(candidate)
    assert _branches(fake, backend) == {"main"}
    assert backend.resolve() == v0 and _rows_here(backend, v0).equals(_table(200))


def test_unknown_ref_or_repo_names_what_was_looked_up(fake: FakeLakeFS, backend: LakeFSBackend) -> None:
    from lakefs import Branch

    Branch(backend.repo, "dev", client=backend._client).create("main")
    with pytest.raises(ConfigError, match="no-such-branch") as caught:
        _open(fake, backend.repo, "no-such-branch").resolve()
    assert caught.value.key == "data.ref" and caught.value.choices == ("dev", "main")
    assert "Valid choices: dev, main." in str(caught.value)
    with pytest.raises(ConfigError, match="'no-such-repo' does not exist"):
        _open(fake, "no-such-repo", "main").resolve()


def test_unknown_write_mode_is_refused_before_any_upload(fake: FakeLakeFS, backend: LakeFSBackend) -> None:
    head = backend.resolve()
    with pytest.raises(ConfigError, match="'upsert'"):
        backend.write(_table(10), "nope", {}, mode="upsert")
    assert backend.resolve() == head and not fake.repos[backend.repo].staged["main"]
