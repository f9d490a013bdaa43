"""API keys and roles: hashing, the key file, the route table, the middleware on a toy app; no Ray."""

from __future__ import annotations

import argparse
import json
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from raymlops.errors import AuthError, ConfigError
from raymlops.security.keys import AuthTable, KeyStore, parse_key, router_auth, verify_key
from raymlops.security.role_ranks import ROLES, role_allows
from raymlops.serving import auth
from raymlops.serving.asgi import route_path
from raymlops.serving.auth import ApiKeyMiddleware, required_role
from raymlops.serving.protocols.registry import ROUTE_ROLES
from raymlops.serving.spec import ModelSpec, build_user_config, parse_user_config


@dataclass
class Keys:
    store: KeyStore
    viewer: str
    predictor: str
    admin: str


def key_id_of(key: str) -> str:
    parsed = parse_key(key)
    assert parsed is not None
    return parsed[0]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    store = KeyStore(tmp_path_factory.mktemp("auth") / "state" / "api_keys.json")
    return Keys(
        store,
        store.create("dashboard", "viewer"),
        store.create("checkout", "predictor"),
        store.create("ops", "admin"),
    )


def test_a_key_verifies_against_its_salted_pbkdf2_hash_only(keys: Keys) -> None:
    key_id, secret = parse_key(keys.predictor) or ("", "")
    assert keys.predictor == f"rmk_{key_id}_{secret}" and len(secret) >= 43  # token_urlsafe(32)
    record = keys.store.public_table()[key_id]
    algorithm, iterations, digest = record["hash"].split("$")
    assert algorithm == "pbkdf2_sha256" and int(iterations) >= 100_000 and len(digest) == 64
    assert verify_key(keys.predictor, record["salt"], record["hash"])
    assert not verify_key(
        keys.predictor[:-1] + ("A" if secret[-1] != "A" else "B"), record["salt"], record["hash"]
    )
    assert not verify_key(keys.viewer, record["salt"], record["hash"])
    salts = {r["salt"] for r in keys.store.public_table().values()}
    assert len(salts) == 3  # one salt per key
    assert parse_key("rmk_nothex_abc") is None and parse_key("Bearer x") is None


def test_the_key_file_holds_no_plaintext_and_is_private(keys: Keys) -> None:
    text = keys.store.path.read_text()
    for key in (keys.viewer, keys.predictor, keys.admin):
        assert key not in text and key.split("_", 2)[2] not in text
    assert stat.S_IMODE(keys.store.path.stat().st_mode) == 0o600
    stored = json.loads(text)
    assert all(set(r) == {"role", "salt", "hash", "created", "name"} for r in stored.values())
    listed = keys.store.list()
    assert [(i.name, i.role) for i in listed] == [
        ("dashboard", "viewer"),
        ("checkout", "predictor"),
        ("ops", "admin"),
    ]
    assert "hash" not in str(listed) and "salt" not in str(listed)
    public = json.dumps(keys.store.public_table())
    assert all(k not in public for k in (keys.viewer, keys.predictor, keys.admin))
    left = {p.name for p in keys.store.path.parent.iterdir()}
    assert left == {"api_keys.json", ".api_keys.json.lock"}  # no temporary file left behind


def test_roles_are_ordered() -> None:
    assert ROLES == ("viewer", "predictor", "data-scientist", "operator", "admin")
    for i, role in enumerate(ROLES):
        for j, needed in enumerate(ROLES):
            assert role_allows(role, needed) == (i >= j)


def flat_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(method, path)`` of every route, through included routers and mounts."""
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router (serve.ingress)
        if included is not None:
            yield from flat_routes(included.routes, prefix + route.include_context.prefix)
            continue
        if isinstance(route, Mount):
            yield from flat_routes(route.routes, prefix + route.path)
            continue
        methods, path = getattr(route, "methods", None), getattr(route, "path", None)
        assert methods and path, (
            f"cannot tell what {route!r} serves: teach flat_routes, map it in ROUTE_ROLES"
        )
        for method in sorted(set(methods) - {"HEAD"}):
            yield method, prefix + path


def test_every_route_of_the_app_has_a_role() -> None:
    """A new endpoint without an entry in ROUTE_ROLES fails here (it would need admin at run time)."""
    from raymlops.serving.app import app

    seen = set()
    for method, path in flat_routes(app.routes):
        assert (method, path) in ROUTE_ROLES, f"{method} {path} has no role in protocols.registry.ROUTE_ROLES"
        concrete = re.sub(r"\{[^}]+\}", "x-1.0", path)
        assert required_role(method, concrete) == ROUTE_ROLES[(method, path)]
        seen.add((method, path))
    assert {("GET", "/v2/health/live"), ("POST", "/v1/models/{name}/predict")} <= seen
    assert all(role is None or role in ROLES for role in ROUTE_ROLES.values())


def test_route_table() -> None:
    assert required_role("GET", "/v2/health/ready") is None
    assert required_role("HEAD", "/v2/health/live") is None
    assert required_role("GET", "/v1/models") == "viewer"
    assert required_role("GET", "/v1/models/flights/stats") == "viewer"
    assert required_role("GET", "/v2/models/flights/versions/3/ready") == "viewer"
    assert required_role("POST", "/v1/models/flights/predict") == "predictor"
    assert required_role("POST", "/v2/models/flights/versions/3/infer") == "predictor"
    assert required_role("POST", "/v1/feedback") == "predictor"
    # Default deny: unlisted routes, methods, or paths that only look like listed ones.
    assert required_role("POST", "/v1/models") == "admin"
    assert required_role("POST", "/v2/health/live") == "admin"
    assert required_role("POST", "/v1/models/a/b/predict") == "admin"
    assert required_role("DELETE", "/v1/models/flights") == "admin"
    assert required_role("GET", "/v1/models/") == "admin"


def test_revoke(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    key = store.create("temp", "operator")
    key_id = key_id_of(key)
    info = store.revoke(key_id)
    assert (info.key_id, info.name, info.role) == (key_id, "temp", "operator")
    assert store.list() == [] and store.public_table() == {}
    with pytest.raises(AuthError, match=key_id):
        store.revoke(key_id)
    with pytest.raises(ConfigError, match="Did you mean 'predictor'"):
        store.create("x", "predicter")


def test_router_table_is_validated_on_both_sides(keys: Keys) -> None:
    spec = ModelSpec("flights", "1", "/m.onnx", "3", {"distance": "float"})
    table: dict[str, Any] = {"enabled": True, "keys": keys.store.public_table()}
    user_config = build_user_config([spec], auth=table)
    assert user_config["auth"] == table
    parsed = parse_user_config(json.loads(json.dumps(user_config))).auth
    assert parsed.enabled and {r.role for r in parsed.keys.values()} == {"viewer", "predictor", "admin"}
    assert (
        "auth" not in build_user_config([spec])
        and not parse_user_config(build_user_config([spec])).auth.enabled
    )
    key_id = next(iter(table["keys"]))
    with pytest.raises(ConfigError, match="never put a plaintext key"):
        AuthTable.from_dict({"enabled": True, "keys": {key_id: {**table["keys"][key_id], "key": keys.admin}}})
    with pytest.raises(ConfigError, match="is not a role"):
        AuthTable.from_dict({"enabled": True, "keys": {key_id: {**table["keys"][key_id], "role": "root"}}})
    with pytest.raises(ConfigError, match="enabled"):
        AuthTable.from_dict({"enabled": "yes"})


def test_router_auth_from_config(keys: Keys, tmp_path: Path) -> None:
    assert router_auth(False, tmp_path / "none.json") == {"enabled": False, "keys": {}}
    assert router_auth(True, keys.store.path)["keys"] == keys.store.public_table()
    with pytest.raises(ConfigError, match="holds no API key"):
        router_auth(True, tmp_path / "none.json")


# ---------------------------------------------------------------- the middleware on a toy app


@dataclass
class Toy:
    client: TestClient
    holder: dict[str, AuthTable]


@pytest.fixture(scope="module")
def toy(keys: Keys) -> Iterator[Toy]:
    async def ok(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "key_id": getattr(request.state, "api_key_id", None)})

    holder = {"table": AuthTable.from_dict({"enabled": True, "keys": keys.store.public_table()})}

    def table() -> AuthTable:
        return holder["table"]

    app = Starlette(
        routes=[
            Route("/v2/health/live", ok),
            Route("/v1/models", ok),
            Route("/v1/models/{name}/predict", ok, methods=["POST"]),
            Route("/v1/admin/thing", ok, methods=["POST"]),  # in no table: admin only
        ]
    )
    app.add_middleware(ApiKeyMiddleware, table=table)
    with TestClient(app) as client:
        yield Toy(client, holder)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_middleware_answers_401_403_or_passes(keys: Keys, toy: Toy) -> None:
    client = toy.client
    assert client.get("/v2/health/live").status_code == 200  # open
    missing = client.post("/v1/models/flights/predict", json={})
    assert missing.status_code == 401 and missing.json()["error"].startswith("missing API key")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    forged = f"rmk_{key_id_of(keys.admin)}_{'A' * 43}"
    for bad in (forged, "rmk_0123456789ab_" + "B" * 43, "not-a-key"):
        answer = client.get("/v1/models", headers=bearer(bad))
        assert answer.status_code == 401 and "invalid API key" in answer.json()["error"]
        assert "invalid_token" in answer.headers["www-authenticate"] and bad not in answer.text
    low = client.post("/v1/models/flights/predict", headers=bearer(keys.viewer), json={})
    assert low.status_code == 403 and low.json()["error"].startswith("role predictor needed, key has viewer")
    assert client.get("/v1/models", headers=bearer(keys.viewer)).status_code == 200
    good = client.post("/v1/models/flights/predict", headers={"x-api-key": keys.predictor}, json={})
    assert good.status_code == 200 and good.json()["key_id"] == key_id_of(keys.predictor)
    unmapped = client.post("/v1/admin/thing", headers=bearer(keys.predictor))
    assert unmapped.status_code == 403 and "role admin needed" in unmapped.json()["error"]
    assert client.post("/v1/admin/thing", headers=bearer(keys.admin)).status_code == 200
    assert client.post("/v1/admin/thing").status_code == 401  # an unlisted POST never passes anonymously


def test_router_refusals_are_audit_records(keys: Keys, toy: Toy, tmp_path: Path) -> None:
    from raymlops.security.audit import read_audit

    client, original = toy.client, toy.holder["table"]
    log = tmp_path / "audit.jsonl"
    toy.holder["table"] = AuthTable(True, original.keys, audit_log=str(log))
    try:
        forged = f"rmk_{key_id_of(keys.admin)}_{'A' * 43}"
        assert client.get("/v1/models", headers=bearer(forged)).status_code == 401
        assert (
            client.post("/v1/models/flights/predict", headers=bearer(keys.viewer), json={}).status_code == 403
        )
        assert client.get("/v1/models", headers=bearer(keys.viewer)).status_code == 200  # allowed: no record
    finally:
        toy.holder["table"] = original
    records = read_audit(log)
    assert [(r.action, r.target, r.outcome, r.who, r.role) for r in records] == [
        ("authenticate", "GET /v1/models", "refused", key_id_of(keys.admin), ""),
        ("predict", "POST /v1/models/flights/predict", "refused", "dashboard", "viewer"),
    ]
    assert records[1].why.startswith("403 POST /v1/models/flights/predict needs predictor")
    assert forged not in log.read_text() and keys.viewer not in log.read_text()


def test_middleware_caches_verification_and_follows_the_table(
    keys: Keys, toy: Toy, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, original = toy.client, toy.holder["table"]
    client.get("/v1/models", headers=bearer(keys.admin))  # verified (and cached) once
    calls: list[tuple[str, ...]] = []

    def counted(*args: str) -> bool:
        calls.append(args)
        return False

    monkeypatch.setattr(auth, "verify_key", counted)
    for _ in range(3):
        assert client.get("/v1/models", headers=bearer(keys.admin)).status_code == 200
    assert calls == []  # no PBKDF2 for a key already verified
    try:
        admin_id = key_id_of(keys.admin)
        revoked = {k: r for k, r in original.keys.items() if k != admin_id}
        toy.holder["table"] = AuthTable(True, revoked)
        assert client.get("/v1/models", headers=bearer(keys.admin)).status_code == 401  # cache or not
        toy.holder["table"] = AuthTable(False, revoked)
        assert client.post("/v1/models/flights/predict", json={}).status_code == 200  # auth off
        toy.holder["table"] = None  # type: ignore[assignment]  # the router's state is unreadable
        broken = client.get("/v1/models", headers=bearer(keys.admin))
        assert broken.status_code == 503
    finally:
        toy.holder["table"] = original


def test_route_prefix_is_stripped_before_matching() -> None:
    strip = route_path
    assert strip({"path": "/api/v1/models", "root_path": "/api"}) == "/v1/models"
    assert strip({"path": "/v1/models", "root_path": ""}) == "/v1/models"
    assert strip({"path": "/apix/v1/models", "root_path": "/api"}) == "/apix/v1/models"  # -> admin


def test_keys_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from raymlops.cli.keys import add_keys_commands, run_keys_command

    parser = argparse.ArgumentParser()
    add_keys_commands(parser.add_subparsers(dest="command"))

    def run(*argv: str) -> str:
        # As the front door (raymlops.cli) does: overrides after options arrive as extras.
        args, extra = parser.parse_known_args(["keys", *argv, f"state_dir={tmp_path}", "env=prod"])
        args.overrides = [*args.overrides, *extra]
        assert run_keys_command(args) == 0
        return capsys.readouterr().out

    key = run("add", "batch-job", "--role", "operator").splitlines()[0]
    key_id = key_id_of(key)
    assert (tmp_path / "api_keys.json").exists()
    listing = run("list")
    assert key_id in listing and "batch-job" in listing and "operator" in listing and key not in listing
    assert "auth on" in listing
    assert "revoked" in run("revoke", key_id)
    assert "no API keys" in run("list")
    with pytest.raises(SystemExit):
        parser.parse_args(["keys", "add", "x", "--role", "root"])
