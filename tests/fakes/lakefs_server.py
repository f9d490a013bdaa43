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

Reading at a branch sees its uncommitted (staged) changes, as in lakeFS; reading at a tag or commit
sees only committed data. Errors are JSON ``lakefs_sdk.models.Error`` bodies with 400/404/409/412/416.

Not implemented: authentication (any basic-auth header, or none, is accepted), a storage namespace
(objects live in memory, ``physical_address`` is made up), pre-signed URLs, multipart/form uploads,
ref expressions (``main~1``, ``main@``), commit-id prefixes, hidden branches, branch protection,
garbage collection, hooks/actions, imports, diffs, cherry-pick/revert/reset, users and policies, and
any endpoint not listed above (they answer 404 with the method and path).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from lakefs_sdk import models as m

__all__ = ["FakeLakeFS", "start_fake_lakefs"]

SERVER_VERSION = "1.70.0"  # what /config reports; lakefs-spec only compares it for touch()


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

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lock = threading.RLock()
        self._seq = itertools.count()
        self._routes = self._route_table()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-lakefs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # state helpers (the tests may call them directly)

    def create_repository(self, name: str, default_branch: str = "main", namespace: str = "") -> Repo:
        with self.lock:
            if name in self.repos:
                raise ApiError(409, f"repository {name!r} already exists")
            now = int(time.time())
            repo = Repo(name, default_branch, namespace or f"local://fake/{name}", now)
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
                    return fn(args, query, body, headers=headers, lists=query_lists)
        raise ApiError(404, f"fake lakeFS does not implement {method} {parts.path}")

    # handlers

    def _get_config(self, args, query, body, **_) -> tuple[int, Any, dict]:
        storage = m.StorageConfig(
            blockstore_type="local",
            blockstore_namespace_example="local://example-bucket/",
            blockstore_namespace_ValidityRegex="^local://",
            pre_sign_support=False,
            pre_sign_support_ui=False,
            import_support=False,
            import_validity_regex="^local://",
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

    def _stats(self, path: str, obj: Obj) -> m.ObjectStats:
        return m.ObjectStats(
            path=path,
            path_type="object",
            physical_address=f"local://fake/data/{obj.checksum}",
            checksum=obj.checksum,
            size_bytes=len(obj.data),
            mtime=obj.mtime,
            content_type=obj.content_type,
            metadata={},
        )

    def _get_object(self, args, query, body, headers, **_):
        obj = self._object(args, query)
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
        return 200, self._stats(query.get("path", ""), self._object(args, query)), {}

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


def _make_handler(fake: FakeLakeFS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as urllib3 pools connections
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # urllib3 streams file bodies
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _handle(self) -> None:
            try:
                status, payload, headers = fake.dispatch(self.command, self.path, self.headers, self._body())
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
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

    return Handler


def start_fake_lakefs() -> FakeLakeFS:
    """Start a fake lakeFS on 127.0.0.1 and a free port; ``.url`` for the clients, ``.close()`` to stop."""
    return FakeLakeFS()
