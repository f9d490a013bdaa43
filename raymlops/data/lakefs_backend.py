"""lakeFS backend: a table is a folder of parquet part files in a lakeFS repository; versions are commits.

Reads go through lakefs-spec (an fsspec filesystem wrapped for Arrow), so Ray workers fetch the bytes of
one commit themselves and a commit id keeps returning the same rows after its branch moves on.
Write-audit-publish: a candidate is a ``candidate-<id>`` branch off the main branch; publishing merges it.
Object bytes go through the object store's pre-signed URLs when the server offers them (``pre_sign``), so
a lakeFS on S3 serves metadata only, as lakeFS recommends for data-heavy clients.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

import pyarrow as pa

from raymlops.data.versioning import Candidate, CommitInfo, DataBackend, DataVersion, Rows
from raymlops.errors import ConfigError

__all__ = ["LakeFSBackend"]

logger = logging.getLogger(__name__)

_MODES = ("append", "overwrite")
_PART_ROWS = 1_000_000  # rows per uploaded part file: what one upload holds in memory


def _parquet_parts(rows: Rows) -> Iterator[tuple[bytes, int]]:
    """Parquet files of at most ``_PART_ROWS`` rows each, read from a table or a stream as they fill
    (an empty input still gives one part: the table's schema)."""
    import pyarrow.parquet as pq

    def encode(table: pa.Table) -> tuple[bytes, int]:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        return sink.getvalue().to_pybytes(), table.num_rows

    reader = rows.to_reader(max_chunksize=_PART_ROWS) if isinstance(rows, pa.Table) else rows
    pending: list[pa.RecordBatch] = []
    filled, written = 0, 0
    for batch in reader:
        pending.append(batch)
        filled += batch.num_rows
        if filled >= _PART_ROWS:
            yield encode(pa.Table.from_batches(pending, reader.schema))
            written += 1
            pending, filled = [], 0
    if pending or not written:
        yield encode(pa.Table.from_batches(pending, reader.schema))


_LOCATION = re.compile(r"^//(?P<repo>[^/]+)/(?P<ref>[^/]+)/(?P<path>.+)$")


class LakeFSBackend(DataBackend):
    """The parquet files under ``path`` in lakeFS repository ``repo``, at ``ref`` (branch, tag or commit).

    Credentials are explicit so that a run never picks up a stray ``~/.lakectl.yaml`` or environment.
    """

    name = "lakefs"
    streams_writes = True  # parts of _PART_ROWS rows, uploaded as they fill
    ref_format = "//<repo>/<branch|tag|commit>/<path>"

    def __init__(
        self,
        repo: str,
        ref: str,
        path: str,
        *,
        host: str,
        access_key_id: str,
        secret_access_key: str,
        main_branch: str = "main",
        verify_ssl: bool = True,
        pre_sign: bool | None = None,
    ) -> None:
        self.repo, self.ref, self.path = repo, ref, path.strip("/")
        self.host, self.main_branch, self.verify_ssl = host, main_branch, verify_ssl
        self.pre_sign = pre_sign  # None: the server's storage config decides (the lakeFS clients probe it)
        self._credentials = (access_key_id, secret_access_key)

    @classmethod
    def parse_location(cls, rest: str) -> tuple[str, str | None] | None:
        """``//<repo>/<ref>/<path>`` -> (``<repo>/<path>``, ref)."""
        match = _LOCATION.match(rest)
        return (f"{match['repo']}/{match['path'].strip('/')}", match["ref"]) if match else None

    @classmethod
    def format_version(cls, version: DataVersion) -> str:
        repo, _, path = version.location.partition("/")
        return f"lakefs://{repo}/{version.version}/{path}"

    @classmethod
    def open(cls, location: str, pin: str | None, settings: Any = None) -> LakeFSBackend:
        """``settings``: the ``data.lakefs`` config (host, credentials, main branch)."""
        repo, _, path = location.partition("/")
        if settings is None or not settings.host:
            ref = f"lakefs://{repo}/{pin or '<main branch>'}/{path}"
            raise ConfigError("data.lakefs.host", f"{ref!r} is a lakeFS reference but no lakeFS host is set.")
        return cls(
            repo,
            pin or settings.main_branch,
            path,
            host=settings.host,
            access_key_id=settings.access_key_id,
            secret_access_key=settings.secret_access_key,
            main_branch=settings.main_branch,
            verify_ssl=settings.verify_ssl,
            pre_sign=getattr(settings, "pre_sign", None),
        )

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_client"}  # a live HTTP pool: rebuilt lazily

    @cached_property
    def _client(self):  # -> lakefs.Client
        from lakefs import Client

        user, password = self._credentials
        return Client(host=self.host, username=user, password=password, verify_ssl=self.verify_ssl)

    def _filesystem(self):  # -> pyarrow.fs.PyFileSystem
        """Arrow view of lakefs-spec; it pickles (fsspec rebuilds it from its arguments) for Ray workers."""
        from lakefs_spec import LakeFSFileSystem
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        user, password = self._credentials
        fs = LakeFSFileSystem(
            host=self.host,
            username=user,
            password=password,
            verify_ssl=self.verify_ssl,
            pre_sign=self.pre_sign,
        )
        return PyFileSystem(FSSpecHandler(fs))

    def _version(self, commit_id: str) -> DataVersion:
        return DataVersion("lakefs", f"{self.repo}/{self.path}", commit_id)

    def _branch(self, name: str):  # -> lakefs.Branch
        from lakefs import Branch

        return Branch(self.repo, name, client=self._client)

    def _branches(self) -> list[str] | None:
        """The repository's branches, or None when the repository itself does not exist."""
        from lakefs import Repository
        from lakefs.exceptions import NotFoundException

        try:
            return [b.id for b in Repository(self.repo, client=self._client).branches()]
        except NotFoundException:
            return None

    def resolve(self) -> DataVersion:
        from lakefs import Reference
        from lakefs.exceptions import NotAuthorizedException, NotFoundException

        try:
            return self._version(Reference(self.repo, self.ref, client=self._client).get_commit().id)
        except NotAuthorizedException as exc:
            raise ConfigError(
                "data.lakefs.access_key_id",
                f"lakeFS at {self.host} refused the access key id {self._credentials[0]!r} and its secret "
                "(HTTP 401): set data.lakefs.access_key_id and secret_access_key (or LAKEFS_ACCESS_KEY_ID "
                "and LAKEFS_SECRET_ACCESS_KEY) to a key pair of that server.",
            ) from exc
        except NotFoundException as exc:
            branches = self._branches()
            if branches is None:
                problem = f"lakeFS repository {self.repo!r} does not exist on {self.host}."
            else:
                problem = f"lakeFS ref {self.ref!r} is no branch, tag or commit of repository {self.repo!r}."
            raise ConfigError("data.ref", problem, branches) from exc

    def _parts(self, version: DataVersion) -> list[str]:
        """Paths (``repo/commit/key``) of the version's parquet files, for the lakefs-spec filesystem."""
        from lakefs import Reference

        repo, _, path = version.location.partition("/")
        listing = Reference(repo, version.version, client=self._client).objects(prefix=f"{path}/")
        files = sorted(f"{repo}/{version.version}/{o.path}" for o in listing if o.path.endswith(".parquet"))
        if not files:
            raise ConfigError("data.ref", f"{version} holds no .parquet files under {path + '/'!r}.")
        return files

    def read(self, version: DataVersion):  # -> ray.data.Dataset
        import ray.data

        return ray.data.read_parquet(self._parts(version), filesystem=self._filesystem())

    def schema(self, version: DataVersion) -> pa.Schema:
        """The union of the part files' schemas (appends may add columns), from their footers only."""
        import pyarrow.parquet as pq

        fs = self._filesystem()
        return pa.unify_schemas([pq.read_schema(f, filesystem=fs) for f in self._parts(version)])

    def num_rows(self, version: DataVersion) -> int:
        import pyarrow.parquet as pq

        fs = self._filesystem()
        return sum(pq.read_metadata(f, filesystem=fs).num_rows for f in self._parts(version))

    def _commit(self, branch: str, table: Rows, message: str, metadata: dict[str, str], mode: str) -> str:
        """Upload ``table`` as new part files on ``branch`` (one per ``_PART_ROWS`` rows, so a stream is
        held one part at a time) and commit them in one commit; returns the commit id.

        Writes go straight to the branch, so changes another writer left uncommitted there would ride
        along in this commit: use stage/publish where several writers share the main branch.
        """
        if mode not in _MODES:
            raise ConfigError("mode", f"unknown write mode {mode!r}.", _MODES)
        target = self._branch(branch)
        if mode == "overwrite":
            old = [o.path for o in target.objects(prefix=f"{self.path}/")]
            if old:
                target.delete_objects(old)
        rows = 0
        for part, part_rows in _parquet_parts(table):
            key = f"{self.path}/part-{uuid.uuid4().hex}.parquet"
            target.object(key).upload(part, mode="wb", pre_sign=self.pre_sign)
            rows += part_rows
        commit_id: str = target.commit(message, metadata={k: str(v) for k, v in metadata.items()}).id
        logger.info("lakefs commit repo=%s branch=%s id=%s rows=%d", self.repo, branch, commit_id, rows)
        return commit_id

    def write(self, table: Rows, message: str, metadata: dict[str, str], mode: str = "append") -> DataVersion:
        return self._version(self._commit(self.main_branch, table, message, metadata, mode))

    def log(self, limit: int = 20) -> list[CommitInfo]:
        """Commits at ``ref`` that changed this table's folder (merges included), newest first."""
        from lakefs import Reference

        ref = Reference(self.repo, self.ref, client=self._client)
        entries = []
        for commit in ref.log(max_amount=limit, amount=min(limit, 1000), prefixes=[f"{self.path}/"]):
            stamp = datetime.fromtimestamp(commit.creation_date, tz=timezone.utc).isoformat()
            entries.append(
                CommitInfo(self._version(commit.id), stamp, commit.message, dict(commit.metadata or {}))
            )
        return entries[: max(limit, 0)]  # the SDK's paging yields one entry even for max_amount=0

    # write-audit-publish

    def stage(self, table: Rows, message: str, metadata: dict[str, str], mode: str = "append") -> Candidate:
        name = f"candidate-{uuid.uuid4().hex[:12]}"
        branch = self._branch(name).create(self.main_branch)
        try:
            return Candidate(self._version(self._commit(name, table, message, metadata, mode)), name)
        except BaseException:
            branch.delete()  # no half-written candidate left behind
            raise

    def publish(self, candidate: Candidate, message: str, metadata: dict[str, str]) -> DataVersion:
        """Merge the candidate branch into the main branch (one merge commit), then delete the branch.

        A failed merge (a conflict) leaves the branch in place, to inspect or discard.
        """
        branch = self._branch(candidate.handle)
        merged = branch.merge_into(self.main_branch, message=message, metadata=dict(metadata))
        branch.delete()
        return self._version(merged)

    def discard(self, candidate: Candidate) -> None:
        self._branch(candidate.handle).delete()
