"""A FAKE lakeFS server: a small in-memory stand-in for the lakeFS REST API, for tests only.

Why: no lakeFS server can run on the machines these tests run on (no Docker, no Go binary), yet the
lakeFS backend should be tested through the real clients (``lakefs``, ``lakefs-sdk``, ``lakefs-spec``)
over real HTTP. Every JSON response is built from ``lakefs_sdk.models`` classes and request bodies are
parsed with them, so payloads are validated by the SDK's own models.

Implemented (all under ``/api/v1``), just what the backend and its tests call:

- ``GET /config`` (version, storage config without pre-signed URLs)
- ``POST /repositories``, ``GET /repositories/{repo}``
- ``GET|POST /repositories/{repo}/branches``, ``GET|DELETE /repositories/{repo}/branches/{branch}``
- ``POST /repositories/{repo}/branches/{branch}/commits`` (refuses an empty commit, like lakeFS)
- ``GET /repositories/{repo}/commits/{ref}`` (a branch, tag or commit id)
- ``GET /repositories/{repo}/refs/{ref}/commits`` (log: ``after``/``amount`` paging, ``prefixes``,
  ``objects`` and ``first_parent`` filters)
- ``POST /repositories/{repo}/refs/{source}/merge/{branch}`` (three-way merge from the merge base;
  a path changed differently on both sides is a 409 conflict unless ``strategy`` picks a side)
- ``POST /repositories/{repo}/tags``, ``GET /repositories/{repo}/tags/{tag}``
- ``GET|HEAD /repositories/{repo}/refs/{ref}/objects`` (byte ``Range`` reads: 206 / 416)
- ``GET /repositories/{repo}/refs/{ref}/objects/stat``, ``.../objects/ls`` (``prefix``, ``delimiter``,
  ``after``, ``amount``)
- ``POST|DELETE /repositories/{repo}/branches/{branch}/objects`` (raw upload, chunked or not; delete),
  ``POST /repositories/{repo}/branches/{branch}/objects/delete`` (bulk delete)

- pre-signed URLs, when started with ``pre_sign=True`` (what a lakeFS on S3 offers): ``/config`` says
  ``pre_sign_support``; ``GET .../objects?presign=true`` answers 302 to a signed URL of a second HTTP server
  standing in for the object store (the signature an HMAC over method, key and expiry, checked there;
  Range reads; expired or altered URLs get 403); ``GET .../objects/stat?presign=true`` puts the signed
  URL in ``physical_address``; uploads go ``GET|PUT /repositories/{repo}/branches/{branch}/staging/backing``
  (an address and a signed PUT URL; the client PUTs the bytes to the store, then links the address).

Authentication is lakeFS's basic auth with the access key id and secret the server was started with; a
request without them, or with others, gets 401 and an ``Error`` body. Every request and its answer are
recorded in ``requests`` (method, path, query, status, content type, body), so a test can hold them
against lakeFS's published OpenAPI spec (``tests/integration/test_lakefs_spec.py``).

Reading at a branch sees its uncommitted (staged) changes, as in lakeFS; reading at a tag or commit
sees only committed data. Errors are JSON ``lakefs_sdk.models.Error`` bodies with 400/401/404/409/412/416.

Not implemented: users, tokens and policies (one key pair has every right), a real storage namespace
(objects live in memory), multipart/form uploads, ref expressions (``main~1``, ``main@``), commit-id
prefixes, hidden branches, branch protection, garbage collection, hooks/actions, imports, diffs,
cherry-pick/revert/reset, and any endpoint not listed above (they answer 404 with the method and path).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from lakefs_sdk import models as m

__all__ = ["ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "FakeLakeFS", "Recorded", "start_fake_lakefs"]

SERVER_VERSION = "1.70.0"  # what /config reports; lakefs-spec only compares it for touch()
ACCESS_KEY_ID, SECRET_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PRESIGN_TTL_S = 900  # lakeFS's default pre-signed URL lifetime (15 minutes)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Obj:
    data: bytes
    content_type: str
    mtime: int

    @property
    def checksum(self) -> str:
        return hashlib.md5(self.data).hexdigest()


@dataclass(frozen=True)
class Recorded:
    """One request the server answered, as a client sent it and as it was answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    content_type: str
    body: bytes


@dataclass
class Commit:
    id: str
    parents: list[str]
    message: str
    metadata: dict[str, str]
    creation_date: int
    generation: int
    seq: int  # global creation order: commits made within one second still log newest first
    tree: dict[str, Obj]  # the snapshot (what lakeFS keeps as a meta-range)

    def model(self) -> m.Commit:
        snapshot = sorted((path, obj.checksum) for path, obj in self.tree.items())
        meta_range = hashlib.sha256(json.dumps(snapshot).encode())
        return m.Commit(
            id=self.id,
            parents=list(self.parents),
            committer="fake-lakefs",
            message=self.message,
            creation_date=self.creation_date,
            meta_range_id=meta_range.hexdigest(),
            metadata=dict(self.metadata),
            generation=self.generation,
            version=1,
        )


@dataclass
class Repo:
    name: str
    default_branch: str
    storage_namespace: str
    creation_date: int
    branches: dict[str, str] = field(default_factory=dict)  # name -> head commit id
    staged: dict[str, dict[str, Obj | None]] = field(default_factory=dict)  # branch -> path -> obj/deleted
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)


def _page(items: list, key: Callable[[Any], str], query: dict[str, str]) -> tuple[list, m.Pagination]:
    """lakeFS paging: items strictly after ``after`` (by key), at most ``amount`` of them."""
    after, amount = query.get("after", ""), int(query.get("amount") or 0)
    if after:
        items = [i for i in items if key(i) > after]
    amount = amount if amount > 0 else 100  # lakeFS's default page size
    page, more = items[:amount], len(items) > amount
    pagination = m.Pagination(
        has_more=more, next_offset=key(page[-1]) if more else "", results=len(page), max_per_page=amount
    )
    return page, pagination


class FakeLakeFS:
    """The server and its state; ``url`` is the host to give the lakeFS clients, ``close()`` stops it."""

    def __init__(
        self,
        access_key_id: str = ACCESS_KEY_ID,
        secret_access_key: str = SECRET_ACCESS_KEY,
        pre_sign: bool = False,
    ) -> None:
        self.repos: dict[str, Repo] = {}
        self.lock = threading.RLock()
        self.pre_sign = pre_sign
        self.requests: list[Recorded] = []
        self._auth = "Basic " + base64.b64encode(f"{access_key_id}:{secret_access_key}".encode()).decode()
        self._seq = itertools.count()
        self._routes = self._route_table()
        self.store = FakeObjectStore(secret_access_key.encode())  # the bucket pre-signed URLs point into
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-lakefs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self.store.close()

    def authorized(self, header: str | None) -> bool:
        return header is not None and hmac.compare_digest(header, self._auth)

    # state helpers (the tests may call them directly)

    def create_repository(self, name: str, default_branch: str = "main", namespace: str = "") -> Repo:
        with self.lock:
            if name in self.repos:
                raise ApiError(409, f"repository {name!r} already exists")
            now = int(time.time())
            scheme = "s3" if self.pre_sign else "local"
            repo = Repo(name, default_branch, namespace or f"{scheme}://fake/{name}", now)
            first = self._new_commit(repo, [], "Repository created", {}, {})
            repo.branches[default_branch], repo.staged[default_branch] = first.id, {}
            self.repos[name] = repo
            return repo

    def _new_commit(
        self, repo: Repo, parents: list[str], message: str, metadata: dict[str, str], tree: dict[str, Obj]
    ) -> Commit:
        seq = next(self._seq)
        digest = hashlib.sha256(json.dumps([repo.name, parents, message, metadata, seq]).encode())
        generation = 1 + max((repo.commits[p].generation for p in parents), default=0)
        now = int(time.time())
        commit = Commit(digest.hexdigest(), parents, message, metadata, now, generation, seq, tree)
        repo.commits[commit.id] = commit
        return commit

    def _repo(self, name: str) -> Repo:
        if name not in self.repos:
            raise ApiError(404, f"repository not found: {name}")
        return self.repos[name]

    @staticmethod
    def _commit_of(repo: Repo, ref: str) -> Commit:
        """Resolve a branch, then a tag, then a full commit id, as lakeFS does (no ref expressions)."""
        commit_id = repo.branches.get(ref) or repo.tags.get(ref) or ref
        if commit_id not in repo.commits:
            raise ApiError(404, f"ref {ref!r} not found in repository {repo.name!r}")
        return repo.commits[commit_id]

    def _branch(self, repo: Repo, name: str) -> str:
        if name not in repo.branches:
            raise ApiError(404, f"branch {name!r} not found in repository {repo.name!r}")
        return name

    def _tree(self, repo: Repo, ref: str) -> dict[str, Obj]:
        """What a read at ``ref`` sees: a branch's head plus its staged changes, else the commit's tree."""
        tree = dict(self._commit_of(repo, ref).tree)
        for path, obj in repo.staged.get(ref, {}).items() if ref in repo.branches else ():
            if obj is None:
                tree.pop(path, None)
            else:
                tree[path] = obj
        return tree

    def _ancestors(self, repo: Repo, commit_id: str, first_parent: bool = False) -> list[Commit]:
        seen, todo = {commit_id}, [commit_id]
        while todo:
            parents = repo.commits[todo.pop()].parents
            for parent in parents[:1] if first_parent else parents:
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return sorted((repo.commits[c] for c in seen), key=lambda c: c.seq, reverse=True)

    def _merge_base(self, repo: Repo, a: str, b: str) -> Commit:
        ours = {c.id for c in self._ancestors(repo, a)}
        return next(c for c in self._ancestors(repo, b) if c.id in ours)  # newest common ancestor

    # routes: (method, path regex) -> handler(repo name, groups, query, body) -> (status, body, headers)

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Callable[..., tuple[int, Any, dict]]]]:
        r = "/api/v1/repositories/(?P<repo>[^/]+)"
        table = [
            ("GET", "/api/v1/config", self._get_config),
            ("POST", "/api/v1/repositories", self._post_repository),
            ("GET", r, self._get_repository),
            ("GET", r + "/branches", self._list_branches),
            ("POST", r + "/branches", self._create_branch),
            ("GET", r + "/branches/(?P<branch>[^/]+)", self._get_branch),
            ("DELETE", r + "/branches/(?P<branch>[^/]+)", self._delete_branch),
            ("POST", r + "/branches/(?P<branch>[^/]+)/commits", self._commit),
            ("POST", r + "/branches/(?P<branch>[^/]+)/objects", self._upload),
            ("DELETE", r + "/branches/(?P<branch>[^/]+)/objects", self._delete_object),
            ("POST", r + "/branches/(?P<branch>[^/]+)/objects/delete", self._delete_objects),
            ("GET", r + "/commits/(?P<ref>[^/]+)", self._get_commit),
            ("GET", r + "/refs/(?P<ref>[^/]+)/commits", self._log),
            ("POST", r + "/refs/(?P<ref>[^/]+)/merge/(?P<branch>[^/]+)", self._merge),
            ("POST", r + "/tags", self._create_tag),
            ("GET", r + "/tags/(?P<tag>[^/]+)", self._get_tag),
            ("GET", r + "/refs/(?P<ref>[^/]+)/objects", self._get_object),
            ("HEAD", r + "/refs/(?P<ref>[^/]+)/objects", self._get_object),
            ("GET", r + "/refs/(?P<ref>[^/]+)/objects/stat", self._stat_object),
            ("GET", r + "/refs/(?P<ref>[^/]+)/objects/ls", self._list_objects),
            ("GET", r + "/branches/(?P<branch>[^/]+)/staging/backing", self._physical_address),
            ("PUT", r + "/branches/(?P<branch>[^/]+)/staging/backing", self._link_physical_address),
        ]
        return [(method, re.compile(pattern + "$"), fn) for method, pattern, fn in table]

    def dispatch(self, method: str, raw_path: str, headers: Any, body: bytes) -> tuple[int, Any, dict]:
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        query_lists = parse_qs(parts.query)
        for route_method, pattern, fn in self._routes:
            match = pattern.match(parts.path)
            if route_method == method and match:
                args = {k: unquote(v) for k, v in match.groupdict().items()}
                with self.lock:
                    return fn(args, query, body, headers=headers, lists=query_lists, method=method)
        raise ApiError(404, f"fake lakeFS does not implement {method} {parts.path}")

    # handlers

    def _get_config(self, args, query, body, **_) -> tuple[int, Any, dict]:
        scheme = "s3" if self.pre_sign else "local"  # lakeFS's local blockstore cannot pre-sign
        storage = m.StorageConfig(
            blockstore_type=scheme,
            blockstore_namespace_example=f"{scheme}://example-bucket/",
            blockstore_namespace_ValidityRegex=f"^{scheme}://",
            pre_sign_support=self.pre_sign,
            pre_sign_support_ui=False,
            import_support=False,
            import_validity_regex=f"^{scheme}://",
        )
        version = m.VersionConfig(version=SERVER_VERSION)
        return 200, m.Config(version_config=version, storage_config=storage), {}

    def _repo_model(self, repo: Repo) -> m.Repository:
        return m.Repository(
            id=repo.name,
            creation_date=repo.creation_date,
            default_branch=repo.default_branch,
            storage_namespace=repo.storage_namespace,
        )

    def _post_repository(self, args, query, body, **_):
        spec = m.RepositoryCreation.from_json(body.decode())
        repo = self.create_repository(spec.name, spec.default_branch or "main", spec.storage_namespace)
        return 201, self._repo_model(repo), {}

    def _get_repository(self, args, query, body, **_):
        return 200, self._repo_model(self._repo(args["repo"])), {}

    def _list_branches(self, args, query, body, **_):
        repo = self._repo(args["repo"])
        refs = [m.Ref(id=b, commit_id=c) for b, c in sorted(repo.branches.items())]
        refs = [r for r in refs if r.id.startswith(query.get("prefix", ""))]
        page, pagination = _page(refs, lambda r: r.id, query)
        return 200, m.RefList(pagination=pagination, results=page), {}

    def _create_branch(self, args, query, body, **_):
        repo, spec = self._repo(args["repo"]), m.BranchCreation.from_json(body.decode())
        if spec.name in repo.branches:
            raise ApiError(409, f"branch {spec.name!r} already exists")
        repo.branches[spec.name], repo.staged[spec.name] = self._commit_of(repo, spec.source).id, {}
        return 201, repo.branches[spec.name], {}  # lakeFS answers the new head as text/html

    def _get_branch(self, args, query, body, **_):
        repo = self._repo(args["repo"])
        branch = self._branch(repo, args["branch"])
        return 200, m.Ref(id=branch, commit_id=repo.branches[branch]), {}

    def _delete_branch(self, args, query, body, **_):
        repo = self._repo(args["repo"])
        branch = self._branch(repo, args["branch"])
        if branch == repo.default_branch:
            raise ApiError(400, f"cannot delete the default branch {branch!r}")
        del repo.branches[branch], repo.staged[branch]
        return 204, None, {}

    def _commit(self, args, query, body, **_):
        repo = self._repo(args["repo"])
        branch, spec = self._branch(repo, args["branch"]), m.CommitCreation.from_json(body.decode())
        if not repo.staged[branch] and not spec.allow_empty:
            raise ApiError(400, "commit: no changes")
        tree = self._tree(repo, branch)
        commit = self._new_commit(repo, [repo.branches[branch]], spec.message, spec.metadata or {}, tree)
        repo.branches[branch], repo.staged[branch] = commit.id, {}
        return 201, commit.model(), {}

    def _get_commit(self, args, query, body, **_):
        return 200, self._commit_of(self._repo(args["repo"]), args["ref"]).model(), {}

    def _log(self, args, query, body, lists, **_):
        repo = self._repo(args["repo"])
        start = self._commit_of(repo, args["ref"])
        commits = self._ancestors(repo, start.id, first_parent=query.get("first_parent") == "true")
        objects, prefixes = lists.get("objects", []), lists.get("prefixes", [])
        if objects or prefixes:  # commits that changed a listed object or something under a prefix

            def touched(c: Commit) -> bool:
                before = repo.commits[c.parents[0]].tree if c.parents else {}
                changed = {p for p in before.keys() | c.tree.keys() if before.get(p) != c.tree.get(p)}
                return any(p in objects or any(p.startswith(x) for x in prefixes) for p in changed)

            commits = [c for c in commits if touched(c)]
        seqs = {c.id: c.seq for c in commits}
        after = query.pop("after", "")  # paging by commit id, in log order
        if after in seqs:
            commits = [c for c in commits if c.seq < seqs[after]]
        page, pagination = _page(commits, lambda c: c.id, query)
        return 200, m.CommitList(pagination=pagination, results=[c.model() for c in page]), {}

    def _merge(self, args, query, body, **_):
        repo = self._repo(args["repo"])
        dest = self._branch(repo, args["branch"])
        spec = m.Merge.from_json(body.decode()) if body.strip() else m.Merge()
        source, head = self._commit_of(repo, args["ref"]), repo.commits[repo.branches[dest]]
        if repo.staged[dest]:
            raise ApiError(400, f"branch {dest!r} has uncommitted changes")
        base = self._merge_base(repo, source.id, head.id).tree
        tree, conflicts = dict(head.tree), []
        for path in base.keys() | source.tree.keys() | head.tree.keys():
            ours, theirs, was = head.tree.get(path), source.tree.get(path), base.get(path)
            if theirs in (was, ours):
                continue
            if ours != was and spec.strategy != "source-wins":
                if spec.strategy != "dest-wins":
                    conflicts.append(path)
                continue
            if theirs is None:
                tree.pop(path, None)
            else:
                tree[path] = theirs
        if conflicts:
            raise ApiError(409, f"conflict found: {sorted(conflicts)}")
        if tree == head.tree and not (spec.allow_empty or spec.force):
            raise ApiError(400, "no changes")
        message = spec.message or f"Merge '{args['ref']}' into '{dest}'"
        commit = self._new_commit(repo, [head.id, source.id], message, spec.metadata or {}, tree)
        repo.branches[dest] = commit.id
        return 200, m.MergeResult(reference=commit.id), {}

    def _create_tag(self, args, query, body, **_):
        repo, spec = self._repo(args["repo"]), m.TagCreation.from_json(body.decode())
        if spec.id in repo.tags:
            raise ApiError(409, f"tag {spec.id!r} already exists")
        repo.tags[spec.id] = self._commit_of(repo, spec.ref).id
        return 201, m.Ref(id=spec.id, commit_id=repo.tags[spec.id]), {}

    def _get_tag(self, args, query, body, **_):
        repo = self._repo(args["repo"])
        if args["tag"] not in repo.tags:
            raise ApiError(404, f"tag {args['tag']!r} not found")
        return 200, m.Ref(id=args["tag"], commit_id=repo.tags[args["tag"]]), {}

    def _object(self, args, query) -> Obj:
        repo = self._repo(args["repo"])
        obj = self._tree(repo, args["ref"]).get(query.get("path", ""))
        if obj is None:
            raise ApiError(404, f"object not found: {query.get('path')!r} at {args['ref']!r}")
        return obj

    def _presigned(self, query: dict[str, str]) -> bool:
        if query.get("presign", "").lower() != "true":  # the SDK sends Python's "True"
            return False
        if not self.pre_sign:
            raise ApiError(400, "pre-signed URLs are not supported by this server's storage")
        return True

    def _stats(self, path: str, obj: Obj, presign: bool = False) -> m.ObjectStats:
        key = self.store.put(f"data/{obj.checksum}", obj.data)
        return m.ObjectStats(
            path=path,
            path_type="object",
            physical_address=self.store.sign("GET", key) if presign else f"s3://fake-bucket/{key}",
            checksum=obj.checksum,
            size_bytes=len(obj.data),
            mtime=obj.mtime,
            content_type=obj.content_type,
            metadata={},
        )

    def _get_object(self, args, query, body, headers, method, **_):
        obj = self._object(args, query)
        if method == "GET" and self._presigned(query):  # as lakeFS on S3: a redirect to the store
            return (
                302,
                None,
                {"Location": self.store.sign("GET", self.store.put(f"data/{obj.checksum}", obj.data))},
            )
        size, wanted = len(obj.data), headers.get("Range")
        reply = {"ETag": f'"{obj.checksum}"', "Content-Type": obj.content_type}
        if not wanted:
            return 200, obj.data, reply
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
        if not match or int(match[1]) >= size:
            error = m.Error(message=f"invalid range {wanted!r} for {size} bytes")
            return 416, error, {"Content-Range": f"bytes */{size}"}
        start, end = int(match[1]), min(int(match[2] or size - 1), size - 1)
        return 206, obj.data[start : end + 1], {**reply, "Content-Range": f"bytes {start}-{end}/{size}"}

    def _stat_object(self, args, query, body, **_):
        return 200, self._stats(query.get("path", ""), self._object(args, query), self._presigned(query)), {}

    def _list_objects(self, args, query, body, **_):
        tree = self._tree(self._repo(args["repo"]), args["ref"])
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        entries: dict[str, m.ObjectStats] = {}
        for path in sorted(p for p in tree if p.startswith(prefix)):
            cut = path.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = path[: cut + len(delimiter)]
                entries[common] = m.ObjectStats(
                    path=common, path_type="common_prefix", physical_address="", checksum="", mtime=0
                )
            else:
                entries[path] = self._stats(path, tree[path])
        page, pagination = _page(sorted(entries.values(), key=lambda s: s.path), lambda s: s.path, query)
        return 200, m.ObjectStatsList(pagination=pagination, results=page), {}

    def _upload(self, args, query, body, headers, **_):
        repo = self._repo(args["repo"])
        branch, path = self._branch(repo, args["branch"]), query.get("path", "")
        if headers.get("If-None-Match") == "*" and path in self._tree(repo, branch):
            raise ApiError(412, f"object {path!r} exists")
        content_type = headers.get("Content-Type") or "application/octet-stream"
        repo.staged[branch][path] = obj = Obj(bytes(body), content_type, int(time.time()))
        return 201, self._stats(path, obj), {}

    def _physical_address(self, args, query, body, **_):
        """Where a client may put the bytes of ``path`` itself (a pre-signed PUT URL when asked)."""
        repo = self._repo(args["repo"])
        self._branch(repo, args["branch"])
        if not query.get("path"):
            raise ApiError(400, "path is required")
        key = f"staging/{hashlib.sha256(str(next(self._seq)).encode()).hexdigest()[:24]}"
        presign = self._presigned(query)
        location = m.StagingLocation(
            physical_address=f"s3://fake-bucket/{key}",
            presigned_url=self.store.sign("PUT", key) if presign else None,
            presigned_url_expiry=int(time.time()) + PRESIGN_TTL_S if presign else None,
        )
        return 200, location, {}

    def _link_physical_address(self, args, query, body, headers, **_):
        """Make the bytes a client uploaded to a staging address the object at ``path`` (uncommitted)."""
        repo = self._repo(args["repo"])
        branch, path = self._branch(repo, args["branch"]), query.get("path", "")
        spec = m.StagingMetadata.from_json(body.decode())
        key = (spec.staging.physical_address or "").removeprefix("s3://fake-bucket/")
        data = self.store.get(key)
        if data is None:
            raise ApiError(400, f"nothing was uploaded to {spec.staging.physical_address!r}")
        if headers.get("If-None-Match") == "*" and path in self._tree(repo, branch):
            raise ApiError(412, f"object {path!r} exists")
        content_type = spec.content_type or "application/octet-stream"
        repo.staged[branch][path] = obj = Obj(data, content_type, int(time.time()))
        return 200, self._stats(path, obj), {}

    def _delete_object(self, args, query, body, **_):
        repo = self._repo(args["repo"])
        branch, path = self._branch(repo, args["branch"]), query.get("path", "")
        if path not in self._tree(repo, branch):
            raise ApiError(404, f"object not found: {path!r}")
        repo.staged[branch][path] = None
        return 204, None, {}

    def _delete_objects(self, args, query, body, **_):
        repo = self._repo(args["repo"])
        branch = self._branch(repo, args["branch"])
        tree = self._tree(repo, branch)
        for path in m.PathList.from_json(body.decode()).paths:
            if path in tree:  # lakeFS does not report missing paths as errors
                repo.staged[branch][path] = None
        return 200, m.ObjectErrorList(errors=[]), {}


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":  # urllib3 streams file bodies
        chunks = []
        while size := int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        return b"".join(chunks)
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _reply(
    handler: BaseHTTPRequestHandler, status: int, data: bytes, content_type: str, headers: dict
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as urllib3 pools connections
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass


def _make_handler(fake: FakeLakeFS) -> type[BaseHTTPRequestHandler]:
    class Handler(_QuietHandler):
        def _handle(self) -> None:
            body = _read_body(self)
            try:
                if not fake.authorized(self.headers.get("Authorization")):
                    raise ApiError(401, "authentication required: the server's access key id and secret")
                status, payload, headers = fake.dispatch(self.command, self.path, self.headers, body)
            except ApiError as exc:
                status, payload, headers = exc.status, m.Error(message=exc.message), {}
            if isinstance(payload, bytes):
                data, content_type = payload, headers.pop("Content-Type", "application/octet-stream")
            elif isinstance(payload, str):
                data, content_type = payload.encode(), "text/html"
            elif payload is None:
                data, content_type = b"", "application/json"
            else:
                data, content_type = payload.to_json().encode(), "application/json"
            parts = urlsplit(self.path)
            with fake.lock:
                fake.requests.append(
                    Recorded(
                        self.command,
                        parts.path,
                        parse_qs(parts.query),
                        status,
                        content_type,
                        b"" if self.command == "HEAD" else data,
                    )
                )
            _reply(self, status, data, content_type, headers)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

    return Handler


class FakeObjectStore:
    """The bucket behind pre-signed URLs: GET and PUT of ``/<key>`` with a valid, unexpired signature.

    The signature stands in for S3's SigV4 query signing: the store (like S3) checks it without asking
    lakeFS, and the client sends no lakeFS credentials here.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret, self._objects = secret, {}
        self.lock = threading.Lock()
        self.hits: list[tuple[str, str]] = []  # (method, key) of every signed request served
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _store_handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-store", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def put(self, key: str, data: bytes) -> str:
        with self.lock:
            self._objects[key] = data
        return key

    def get(self, key: str) -> bytes | None:
        with self.lock:
            return self._objects.get(key)

    def _signature(self, method: str, key: str, expires: int) -> str:
        return hmac.new(self._secret, f"{method}\n{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, method: str, key: str) -> str:
        expires = int(time.time()) + PRESIGN_TTL_S
        signature = self._signature(method, key, expires)
        return f"{self.url}/{quote(key)}?X-Amz-Expires={expires}&X-Amz-Signature={signature}"

    def check(self, method: str, key: str, query: dict[str, str]) -> bool:
        try:
            expires = int(query.get("X-Amz-Expires", ""))
        except ValueError:
            return False
        expected = self._signature(method, key, expires)
        return expires >= time.time() and hmac.compare_digest(expected, query.get("X-Amz-Signature", ""))


def _store_handler(store: FakeObjectStore) -> type[BaseHTTPRequestHandler]:
    class Handler(_QuietHandler):
        def _handle(self) -> None:
            body, parts = _read_body(self), urlsplit(self.path)
            key, query = unquote(parts.path.lstrip("/")), {k: v[-1] for k, v in parse_qs(parts.query).items()}
            if self.headers.get("Authorization") or not store.check(self.command, key, query):
                return _reply(self, 403, b"<Error><Code>AccessDenied</Code></Error>", "application/xml", {})
            with store.lock:
                store.hits.append((self.command, key))
            if self.command == "PUT":
                store.put(key, body)
                etag = hashlib.md5(body).hexdigest()
                return _reply(self, 200, b"", "application/xml", {"ETag": f'"{etag}"'})
            data = store.get(key)
            if data is None:
                return _reply(self, 404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml", {})
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", (self.headers.get("Range") or "").strip())
            if not match:
                return _reply(self, 200, data, "application/octet-stream", {})
            start, end = int(match[1]), min(int(match[2] or len(data) - 1), len(data) - 1)
            if start >= len(data):
                return _reply(self, 416, b"", "application/xml", {"Content-Range": f"bytes */{len(data)}"})
            headers = {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
            return _reply(self, 206, data[start : end + 1], "application/octet-stream", headers)

        do_GET = do_PUT = _handle

    return Handler


def start_fake_lakefs(pre_sign: bool = False) -> FakeLakeFS:
    """Start a fake lakeFS on 127.0.0.1 and a free port, with the key pair ``ACCESS_KEY_ID`` /
    ``SECRET_ACCESS_KEY``; ``.url`` for the clients, ``.close()`` to stop."""
    return FakeLakeFS(pre_sign=pre_sign)
