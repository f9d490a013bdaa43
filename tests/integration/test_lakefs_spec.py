"""The lakeFS stand-in held to lakeFS's published OpenAPI spec, and the backend's pre-signed URL path.

Every call the backend makes (write, overwrite, stage/publish, stage/discard, resolve, log, schema, row
count, a Ray Data read, a wrong key pair) runs against two stand-ins: one offering pre-signed URLs (what a
lakeFS on S3 does) and one not. Each request the stand-ins answered must be a route of
``tests/schemas/lakefs/swagger.yml`` with that method, send only query parameters the operation declares
(and every required one), get a status the operation declares, and a JSON body that validates against the
spec's response schema; a non-JSON body must be a content type the spec declares for that answer.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from raymlops.data.lakefs_backend import LakeFSBackend
from raymlops.errors import ConfigError
from tests.fakes.lakefs_server import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    FakeLakeFS,
    Recorded,
    start_fake_lakefs,
)

SPEC = Path(__file__).resolve().parents[1] / "schemas" / "lakefs" / "swagger.yml"
PATH = "tables/spec"


@cache
def _spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC.read_text())


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, section, name = node["$ref"].split("/")
        node = _spec()["components"][section][name]
    return node


def _operation(method: str, path: str) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """The spec's route template for ``path`` (below /api/v1), its operation and all its parameters."""
    matches = []
    for template, item in _spec()["paths"].items():
        literals = re.split(r"\{[^}]+\}", template)
        if re.fullmatch("[^/]+".join(re.escape(part) for part in literals), path):
            matches.append((len("".join(literals)), template, item))
    assert matches, f"{method} {path}: no route of lakeFS's spec has this path"
    _, template, item = max(matches)  # the most literal template wins (objects/ls over objects)
    operation = item.get(method.lower())
    assert operation is not None, f"{method} {path}: lakeFS's spec has {template} but not {method} on it"
    parameters = [_deref(p) for p in item.get("parameters", []) + operation.get("parameters", [])]
    return template, operation, parameters


def _check(request: Recorded) -> str:
    """Hold one answered request against the spec; returns ``METHOD template`` for the coverage check."""
    from openapi_schema_validator import OAS30Validator

    assert request.path.startswith("/api/v1/"), request.path
    template, operation, parameters = _operation(request.method, request.path.removeprefix("/api/v1"))
    where = f"{request.method} {template}"
    declared = {p["name"] for p in parameters if p["in"] == "query"}
    assert set(request.query) <= declared, (
        f"{where}: undeclared query parameters {set(request.query) - declared}"
    )
    required = {p["name"] for p in parameters if p["in"] == "query" and p.get("required")}
    assert required <= set(request.query), (
        f"{where}: required query parameters {required - set(request.query)}"
    )
    responses = operation["responses"]
    answer = responses.get(request.status, responses.get(str(request.status), responses.get("default")))
    assert answer is not None, f"{where}: status {request.status} is not in the spec ({sorted(responses)})"
    content = _deref(answer).get("content", {})
    if not request.body:
        return where
    if request.content_type == "application/json":
        assert "application/json" in content, f"{where} {request.status}: the spec declares no JSON body"
        schema = {**content["application/json"]["schema"], "components": _spec()["components"]}
        errors = list(OAS30Validator(schema).iter_errors(json.loads(request.body)))
        assert not errors, f"{where} {request.status}: {[e.message for e in errors[:3]]}"
    else:
        assert request.content_type in content, f"{where} {request.status}: {request.content_type} undeclared"
    return where


def _table(rows: int, start: int = 0) -> pa.Table:
    ids = list(range(start, start + rows))
    return pa.table(
        {"id": ids, "carrier": [["UA", "AA"][i % 2] for i in ids], "distance": [1.5 * i for i in ids]}
    )


def _drive(fake: FakeLakeFS) -> None:
    """Every public method of the backend, through the real lakeFS clients, against ``fake``."""
    repo = f"repo-{uuid.uuid4().hex[:8]}"
    fake.create_repository(repo)
    main = LakeFSBackend(
        repo, "main", PATH, host=fake.url, access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY
    )
    first = main.write(_table(50), "first", {"source": "test"})
    main.write(_table(30, 50), "second", {"source": "test"})
    candidate = main.stage(_table(20, 80), "candidate", {})
    published = main.publish(candidate, "publish", {"audit": "passed"})
    main.discard(main.stage(_table(5, 100), "rejected", {}))
    assert main.resolve() == published
    history = [entry.version for entry in main.log()]
    assert history[0] == published and first in history
    assert main.num_rows(published) == 100 and main.schema(published).names == ["id", "carrier", "distance"]
    if fake.pre_sign:  # Ray workers fetch the bytes themselves, through pre-signed URLs
        assert sorted(main.read(published).to_pandas()["id"]) == list(range(100))
    overwritten = main.write(_table(10, 500), "overwrite", {}, mode="overwrite")
    assert main.num_rows(overwritten) == 10 and main.num_rows(first) == 50  # the old commit keeps its rows
    with pytest.raises(ConfigError, match="no branch, tag or commit"):
        LakeFSBackend(
            repo,
            "nope",
            PATH,
            host=fake.url,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
        ).resolve()
    wrong = LakeFSBackend(repo, "main", PATH, host=fake.url, access_key_id="AKIAWRONG", secret_access_key="x")
    with pytest.raises(ConfigError, match=r"data\.lakefs\.access_key_id.*401"):
        wrong.resolve()


@pytest.fixture(scope="module")
def servers(ray_local) -> Iterator[dict[bool, FakeLakeFS]]:
    fakes = {pre_sign: start_fake_lakefs(pre_sign=pre_sign) for pre_sign in (False, True)}
    try:
        for fake in fakes.values():
            _drive(fake)
        yield fakes
    finally:
        for fake in fakes.values():
            fake.close()


def test_every_request_the_backend_makes_is_lakefs_api_and_every_answer_matches_its_schema(
    servers: dict[bool, FakeLakeFS],
) -> None:
    seen = {_check(request) for fake in servers.values() for request in fake.requests}
    # The backend's whole surface was exercised, pre-signed staging included.
    for route in (
        "GET /config",
        "POST /repositories/{repository}/branches",
        "DELETE /repositories/{repository}/branches/{branch}",
        "POST /repositories/{repository}/branches/{branch}/commits",
        "POST /repositories/{repository}/refs/{sourceRef}/merge/{destinationBranch}",
        "GET /repositories/{repository}/refs/{ref}/commits",
        "GET /repositories/{repository}/refs/{ref}/objects/ls",
        "GET /repositories/{repository}/refs/{ref}/objects",
        "POST /repositories/{repository}/branches/{branch}/objects",
        "POST /repositories/{repository}/branches/{branch}/objects/delete",
        "GET /repositories/{repository}/branches/{branch}/staging/backing",
        "PUT /repositories/{repository}/branches/{branch}/staging/backing",
    ):
        assert route in seen, f"{route} was never called: {sorted(seen)}"
    assert any(r.status == 401 for r in servers[False].requests)


def test_object_bytes_go_through_pre_signed_urls_when_the_server_offers_them(
    servers: dict[bool, FakeLakeFS],
) -> None:
    offered, plain = servers[True], servers[False]
    methods = {method for method, _ in offered.store.hits}
    assert methods == {"GET", "PUT"}, offered.store.hits  # uploads and reads both went to the store
    object_calls = [
        r for r in offered.requests if r.path.endswith("/objects") and r.method in ("GET", "POST")
    ]
    assert object_calls and all(
        r.status == 302 and r.query.get("presign", [""])[0].lower() == "true" for r in object_calls
    )
    assert not plain.store.hits  # a server that does not offer them is never bypassed
    assert any(r.method == "POST" and r.path.endswith("/objects") and r.status == 201 for r in plain.requests)


def test_a_pre_signed_url_is_refused_when_altered_or_without_its_signature(
    servers: dict[bool, FakeLakeFS],
) -> None:
    import httpx

    store = servers[True].store
    key = store.put("data/probe", b"payload")
    url = store.sign("GET", key)
    assert httpx.get(url).content == b"payload"
    assert httpx.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0")).status_code == 403
    assert httpx.get(url.split("?")[0]).status_code == 403
    assert httpx.put(store.sign("GET", key), content=b"x").status_code == 403  # a GET URL cannot write
