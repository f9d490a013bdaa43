"""The role model: every action against every role, every CLI command against the role just below the
one it needs, the job's up-front check, and the audit trail each of them leaves."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from raymlops.cli import authorize_command, build_parser, command_name, main
from raymlops.config import compose
from raymlops.errors import AuthError, PermissionDeniedError
from raymlops.pipeline.runner import run_pipeline
from raymlops.security.audit import read_audit, verify_chain
from raymlops.security.keys import KeyStore
from raymlops.security.roles import (
    ACTIONS,
    API_KEY_ENV,
    CLI_ACTIONS,
    ROLES,
    Principal,
    actions_markdown,
    authorize,
    authorize_job,
    routes_markdown,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"


@dataclass
class Secured:
    security: dict[str, Any]
    keys: dict[str, str]  # role -> API key
    audit_log: Path
    state_dir: Path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Secured:
    state = tmp_path_factory.mktemp("secured")
    store = KeyStore(state / "api_keys.json")
    keys = {role: store.create(f"{role}-key", role) for role in ROLES}
    security = {"enabled": True, "keys_file": str(store.path), "audit_log": str(state / "audit.jsonl")}
    return Secured(security, keys, state / "audit.jsonl", state)


@pytest.fixture
def as_role(secured: Secured, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("RAYMLOPS_USER", "test-user")  # restored after the test (authorize sets it)

    def use(role: str | None) -> None:
        if role is None:
            monkeypatch.delenv(API_KEY_ENV, raising=False)
        else:
            monkeypatch.setenv(API_KEY_ENV, secured.keys[role])

    yield use


def test_every_action_against_every_role(secured: Secured, as_role: Any) -> None:
    before = len(read_audit(secured.audit_log))
    expected = []
    for action, (needed, _) in ACTIONS.items():
        for rank, role in enumerate(ROLES):
            as_role(role)
            allowed = rank >= ROLES.index(needed)
            if allowed:
                assert authorize(secured.security, action, "target").role == role
            else:
                with pytest.raises(PermissionDeniedError, match=f"needs role {needed}"):
                    authorize(secured.security, action, "target")
            if not allowed or needed != "viewer":
                expected.append((action, f"{role}-key", role, "ok" if allowed else "refused"))
    records = read_audit(secured.audit_log)[before:]
    assert [(r.action, r.who, r.role, r.outcome) for r in records] == expected
    assert len(ACTIONS) * len(ROLES) >= 135  # the matrix this walks (27 actions x 5 roles)
    assert verify_chain(secured.audit_log) is None


def test_no_key_or_a_forged_key_is_refused_and_audited(
    secured: Secured, as_role: Any, monkeypatch: Any
) -> None:
    as_role(None)
    with pytest.raises(AuthError, match=API_KEY_ENV):
        authorize(secured.security, "models.read")
    forged = secured.keys["admin"][:-4] + "AAAA"  # the admin key's id with a wrong secret
    monkeypatch.setenv(API_KEY_ENV, forged)
    with pytest.raises(AuthError, match=r"secret .* is wrong"):
        authorize(secured.security, "keys.manage")
    last = read_audit(secured.audit_log)[-2:]
    assert [(r.action, r.outcome, r.why) for r in last] == [
        ("authenticate", "refused", "no API key"),
        ("authenticate", "refused", "wrong secret"),
    ]
    assert forged not in secured.audit_log.read_text()  # the presented secret is never recorded


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield prefix
    for action in subparsers:
        for name, child in action.choices.items():
            yield from _commands(child, (*prefix, name))


def _argv(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> list[str]:
    """The command's words, then a value for each required positional and option."""
    node, argv = parser, list(words)
    for word in words:
        sub = next(a for a in node._actions if isinstance(a, argparse._SubParsersAction))
        node = sub.choices[word]
    for action in node._actions:
        if action.dest in ("help", "overrides"):
            continue
        value = str(action.choices[0] if action.choices else "1")
        if not action.option_strings:
            argv.append(value)
        elif action.required:
            argv += [action.option_strings[0], value]
    return argv


def test_every_cli_command_is_mapped_and_checked(secured: Secured, as_role: Any) -> None:
    """Walks the whole parser: each command is in CLI_ACTIONS, refused for the role just below the one
    it needs (no key at all for viewer commands) and allowed for that role, with audit records."""
    parser = build_parser()
    commands = [" ".join(words) for words in _commands(parser)]
    assert set(commands) == set(CLI_ACTIONS)  # every command mapped, no action for a command that is gone
    for words in _commands(parser):
        args = parser.parse_args(_argv(parser, words))
        name = command_name(args)
        needed = ACTIONS[CLI_ACTIONS[name]][0]
        below = ROLES.index(needed) - 1
        as_role(ROLES[below] if below >= 0 else None)
        with pytest.raises(AuthError):
            authorize_command(secured.security, args)
        assert read_audit(secured.audit_log)[-1].outcome == "refused", name
        as_role(needed)
        authorize_command(secured.security, args)
        if needed != "viewer":
            last = read_audit(secured.audit_log)[-1]
            assert (last.action, last.outcome, last.role) == (CLI_ACTIONS[name], "ok", needed), name


def test_a_refused_cli_command_changes_nothing(secured: Secured, as_role: Any, capsys: Any) -> None:
    overrides = [
        f"state_dir={secured.state_dir}",
        "security.enabled=true",
        f"security.audit_log={secured.audit_log}",
    ]
    as_role("operator")
    store = KeyStore(secured.security["keys_file"])
    before = store.path.read_bytes()
    assert main(["serve", "keys", "add", "intruder", "--role", "admin", *overrides]) == 2
    assert "operator-key (role operator) may not keys.manage" in capsys.readouterr().err
    assert store.path.read_bytes() == before
    as_role("admin")
    viewer_id = next(i.key_id for i in store.list() if i.role == "viewer")
    assert main(["serve", "keys", "role", viewer_id, "predictor", *overrides]) == 0
    assert {i.key_id: i.role for i in store.list()}[viewer_id] == "predictor"
    assert main(["serve", "keys", "role", viewer_id, "viewer", *overrides]) == 0  # as it was
    last = read_audit(secured.audit_log)[-1]
    assert (last.action, last.who, last.outcome, last.target) == (
        "roles.manage",
        "admin-key",
        "ok",
        viewer_id,
    )


def test_the_first_key_can_be_created_by_anyone_and_that_is_audited(tmp_path: Path, capsys: Any) -> None:
    overrides = [f"state_dir={tmp_path}", "security.enabled=true"]
    assert main(["serve", "keys", "add", "first-admin", "--role", "admin", *overrides]) == 0
    assert capsys.readouterr().out.startswith("rmk_")
    [record] = read_audit(tmp_path / "audit" / "security.jsonl")
    assert (record.action, record.outcome, record.why) == (
        "keys.manage",
        "ok",
        "bootstrap: the key file holds no key yet",
    )
    # The key file is no longer empty: the next key needs an admin key.
    assert main(["serve", "keys", "add", "second", "--role", "admin", *overrides]) == 2


def test_the_job_checks_every_action_before_its_first_stage(
    secured: Secured, as_role: Any, tmp_path: Path
) -> None:
    cfg = compose(["+experiment=quickstart", f"state_dir={tmp_path}", "security.enabled=true",
                   f"security.keys_file={secured.security['keys_file']}",
                   f"security.audit_log={secured.audit_log}"])  # fmt: skip
    stages = list(cfg.stages)
    as_role("data-scientist")
    with pytest.raises(PermissionDeniedError, match=r"models\.promote.*registry\.on_pass=none"):
        authorize_job(cfg, stages)
    cfg.registry.on_pass = "none"
    with pytest.raises(PermissionDeniedError, match=r"serve\.deploy.*deploy stage"):
        authorize_job(cfg, stages)
    assert authorize_job(cfg, [s for s in stages if s != "deploy"]) == Principal(
        "data-scientist-key", "data-scientist", secured.keys["data-scientist"].split("_")[1]
    )
    as_role("predictor")
    cfg.stages = ["ingest", "validate"]
    with pytest.raises(PermissionDeniedError, match=r"job\.run"):
        run_pipeline(cfg)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written (or Ray started)


def test_the_docs_hold_the_current_role_tables() -> None:
    text = DOCS.read_text()
    assert actions_markdown() in text, "regenerate with `python -m raymlops.security.roles`"
    assert routes_markdown() in text


def test_security_audit_command_shows_records_and_finds_an_edited_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from raymlops.security.audit import audit_event

    log = tmp_path / "audit.jsonl"
    for target in ("app-a", "app-b", "app-c"):
        audit_event("serve.traffic", target, "ok", "weights changed", who="ops", role="operator", path=log)
    audit_event(
        "models.promote", "flights", "refused", "role too low", who="ds", role="data-scientist", path=log
    )
    overrides = [f"state_dir={tmp_path}", f"security.audit_log={log}"]
    assert main(["security", "audit", "--tail", "2", "--action", "serve.traffic", *overrides]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "app-b" in out[0] and "app-c" in out[1] and "app-a" not in "".join(out)
    assert out[2].endswith("5 record(s), hash chain intact")  # the 4 above and the command's own
    lines = log.read_text().splitlines()
    lines[1] = lines[1].replace("app-b", "app-x")  # an edited record: the next line's prev no longer matches
    log.write_text("\n".join(lines) + "\n")
    assert main(["security", "audit", *overrides]) == 1
    assert "breaks at line 3" in capsys.readouterr().out
