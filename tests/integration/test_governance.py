"""Aliases, lifecycle, audit log, races and the ``models`` CLI on a real MLflow registry (SQLite file)."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pytest

from raymlops.cli import main
from raymlops.errors import AliasConflictError, GovernanceError
from raymlops.registry.governance import Governance
from raymlops.registry.mlflow_registry import ModelRegistry

NAME = "flights-delay"


def _registry(state_dir: Path) -> ModelRegistry:
    return ModelRegistry(f"sqlite:///{state_dir}/mlflow.db", str(state_dir / "artifacts"), "dev-flights")


def _register(state_dir: Path, label: str) -> str:
    """One real run and model version (a small file stands in for the ONNX graph)."""
    registry = _registry(state_dir)
    run = registry.client.create_run(registry.experiment_id(), run_name=label)
    model = state_dir / f"{label}.onnx"
    model.write_bytes(label.encode())
    tags = {"raymlops.data_version": f"delta:/t@{label}", "raymlops.git_sha": "abc123"}
    version = registry.register_version(
        model_name=NAME, run_id=run.info.run_id, model_files=[model], tags=tags
    )
    registry.client.set_terminated(run.info.run_id)
    return version.version


def _register_in_process(state_dir: str, label: str, queue) -> None:  # a separate process: a second job
    queue.put(_register(Path(state_dir), label))


@pytest.fixture
def gov(tmp_path: Path) -> Governance:
    for label in ("a", "b", "c"):
        _register(tmp_path, label)
    return Governance(_registry(tmp_path))


def test_promote_rollback_and_audit_records(gov: Governance, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYMLOPS_USER", "alice")
    gov.set_alias(NAME, "champion", "1", why="first model", run_id="run-1")
    gov.set_alias(NAME, "champion", "2", why="better auc")
    gov.set_alias(NAME, "challenger", "3", why="next in line")
    registry = gov.registry
    assert gov.aliases(NAME) == {"champion": "2", "challenger": "3"}
    assert [registry.version(NAME, v).lifecycle for v in "123"] == ["candidate", "production", "staging"]

    record = gov.rollback(NAME, why="v2 misbehaves")
    assert (record.from_version, record.to_version, record.action) == ("2", "1", "rollback")
    assert gov.aliases(NAME)["champion"] == "1"
    assert registry.version(NAME, "1").lifecycle == "production"
    assert registry.version(NAME, "2").lifecycle == "candidate"
    with pytest.raises(GovernanceError, match="no previous champion"):
        gov.rollback(NAME, why="again")  # v1 was the first champion: nothing before it

    history = gov.history(NAME)
    moves = [(r.action, r.alias, r.from_version, r.to_version, r.outcome) for r in history]
    assert moves == [
        ("promote", "champion", None, "1", "ok"),
        ("promote", "champion", "1", "2", "ok"),
        ("promote", "challenger", None, "3", "ok"),
        ("rollback", "champion", "2", "1", "ok"),
    ]
    assert {r.who for r in history} == {"alice"} and history[0].run_id == "run-1"
    assert history[1].why == "better auc" and history[0].when < history[-1].when


def test_rejected_and_archived_versions_never_hold_an_alias(gov: Governance) -> None:
    gov.set_lifecycle(NAME, "3", "rejected", why="test/auc = 0.51, must be >= 0.6")
    with pytest.raises(GovernanceError, match="v3 is rejected"):
        gov.set_alias(NAME, "champion", "3", why="try anyway")
    assert "champion" not in gov.aliases(NAME)
    assert gov.history(NAME)[-1].outcome == "refused"


def test_archive_refuses_champion_and_deployed_versions_unless_undeployed(gov: Governance) -> None:
    gov.set_alias(NAME, "champion", "1", why="serve")
    with pytest.raises(GovernanceError, match="it is the champion"):
        gov.archive(NAME, "1", why="old")
    gov.mark_deployed(NAME, "2", "raymlops-dev", deployed=True, why="canary")
    with pytest.raises(GovernanceError, match="still deployed in raymlops-dev: pass --undeploy"):
        gov.archive(NAME, "2", why="old")
    assert gov.registry.version(NAME, "2").lifecycle != "archived"
    undeployed: list[str] = []
    gov.archive(NAME, "2", why="old", undeploy=undeployed.append)
    assert undeployed == ["raymlops-dev"]
    archived = gov.registry.version(NAME, "2")
    assert archived.lifecycle == "archived" and gov.deployed_apps(archived) == []
    with pytest.raises(GovernanceError, match="archived"):
        gov.set_alias(NAME, "challenger", "2", why="revive")
    assert [r.outcome for r in gov.history(NAME) if r.action == "archive"] == ["refused", "refused", "ok"]


def test_racing_alias_changes_one_wins_the_other_fails_cleanly(gov: Governance) -> None:
    gov.set_alias(NAME, "champion", "1", why="start")
    barrier, outcomes = threading.Barrier(2), {}

    def promote(version: str) -> None:
        barrier.wait()
        try:
            gov.set_alias(NAME, "champion", version, why=f"race {version}", expected="1")
            outcomes[version] = "won"
        except AliasConflictError as exc:
            outcomes[version] = str(exc)

    threads = [threading.Thread(target=promote, args=(v,)) for v in ("2", "3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winner = [v for v, o in outcomes.items() if o == "won"]
    assert len(winner) == 1, outcomes
    loser = ({"2", "3"} - set(winner)).pop()
    assert "not 1 as this change expected" in outcomes[loser]
    assert gov.aliases(NAME)["champion"] == winner[0]
    races = [(r.to_version, r.outcome) for r in gov.history(NAME) if r.why.startswith("race")]
    assert sorted(races) == sorted([(winner[0], "ok"), (loser, "conflict")])


def test_two_jobs_registering_at_once_get_distinct_versions(tmp_path: Path) -> None:
    _register(tmp_path, "seed")  # the registered model exists; both racers add versions
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    procs = [
        context.Process(target=_register_in_process, args=(str(tmp_path), f"job{i}", queue)) for i in (1, 2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted([queue.get(timeout=5), queue.get(timeout=5)]) == ["2", "3"]
    assert [v.version for v in _registry(tmp_path).versions(NAME)] == ["1", "2", "3"]


def test_models_cli_promote_rollback_lineage_history(
    gov: Governance, capsys: pytest.CaptureFixture[str]
) -> None:
    state = f"state_dir={Path(gov.registry.tracking_uri.removeprefix('sqlite:///')).parent}"
    assert main(["models", "promote", NAME, "1", "--reason", "first", state]) == 0
    assert main(["models", "promote", NAME, "2", "--reason", "better", "--expect", "1", state]) == 0
    assert main(["models", "promote", NAME, "3", "--reason", "stale view", "--expect", "1", state]) == 2
    assert "someone else changed it meanwhile" in capsys.readouterr().err
    assert main(["models", "rollback", NAME, "--reason", "bad canary", state]) == 0
    assert "champion rolled back v2 -> v1" in capsys.readouterr().out
    assert main(["models", "list", state]) == 0
    assert f"{NAME}  versions=3  champion=v1" in capsys.readouterr().out
    assert main(["models", "lineage", NAME, "2", "--json", state]) == 0
    lineage = json.loads(capsys.readouterr().out)
    assert lineage["data_version"] == "delta:/t@b" and lineage["git_sha"] == "abc123"
    assert main(["models", "history", NAME, "--json", state]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [(h["action"], h["outcome"]) for h in history] == [
        ("promote", "ok"),
        ("promote", "ok"),
        ("promote", "conflict"),
        ("rollback", "ok"),
    ]
    assert main(["models", "archive", NAME, "1", "--reason", "x", state]) == 2
    assert "it is the champion" in capsys.readouterr().err
    assert main(["models", "promote", NAME, "9", "--reason", "x", state]) == 2
    assert "Unknown model 'flights-delay v9'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: invalid choice 'champ' (choose from champion, ...)
        main(["models", "promote", NAME, "1", "--alias", "champ", "--reason", "x", state])
    assert "invalid choice: 'champ'" in capsys.readouterr().err


def test_an_experiment_cannot_change_a_prod_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """env=dev (an experiment) may not register into, promote, clear, archive or roll back a model that
    env=prod owns; each refusal is audited and leaves the registry as it was. Prod itself may."""
    registry = _registry(tmp_path)
    prod_name = "flights-delay-prod"
    run = registry.client.create_run(registry.experiment_id(), run_name="prod")
    model = tmp_path / "prod.onnx"
    model.write_bytes(b"prod")
    for _ in range(2):
        registry.register_version(
            model_name=prod_name, run_id=run.info.run_id, model_files=[model], tags={}, env="prod"
        )
    prod, dev = Governance(registry, env="prod"), Governance(registry, env="dev")
    prod.set_alias(prod_name, "champion", "1", why="release")

    with pytest.raises(GovernanceError, match="belongs to env=prod; this run is env=dev"):
        dev.set_alias(prod_name, "champion", "2", why="my experiment is better")
    with pytest.raises(GovernanceError, match="env=prod"):
        dev.clear_alias(prod_name, "champion", why="oops")
    with pytest.raises(GovernanceError, match="env=prod"):
        dev.archive(prod_name, "2", why="cleanup")
    with pytest.raises(GovernanceError, match="env=prod"):
        registry.register_version(
            model_name=prod_name, run_id=run.info.run_id, model_files=[model], tags={}, env="dev"
        )
    assert prod.aliases(prod_name) == {"champion": "1"}
    assert [v.version for v in registry.versions(prod_name)] == ["1", "2"]
    assert registry.version(prod_name, "2").lifecycle == "candidate"
    refused = [(r.action, r.outcome, r.details) for r in prod.history(prod_name) if r.outcome != "ok"]
    assert refused == [
        ("promote", "refused", {"owner_env": "prod", "env": "dev"}),
        ("clear", "refused", {"owner_env": "prod", "env": "dev"}),
        ("archive", "refused", {"owner_env": "prod", "env": "dev"}),
    ]
    # The CLI acts as its env too: env=dev is refused, env=prod goes through.
    state = f"state_dir={tmp_path}"
    assert main(["models", "promote", prod_name, "2", "--reason", "x", state, "env=dev"]) == 2
    assert "belongs to env=prod" in capsys.readouterr().err
    assert main(["models", "promote", prod_name, "2", "--reason", "ok", state, "env=prod"]) == 0
    assert prod.aliases(prod_name) == {"champion": "2"}
    # A model registered without an env (before owners existed) stays open to every env.
    _register(tmp_path, "legacy")
    dev.set_alias(NAME, "champion", "1", why="unowned")


def test_models_show_names_the_versions_task(gov: Governance, capsys: pytest.CaptureFixture[str]) -> None:
    from raymlops.registry.tags import TASK_TAG
    from raymlops.tasks.codec import task_to_json
    from raymlops.tasks.multiclass import MulticlassTask

    state = f"state_dir={Path(gov.registry.tracking_uri.removeprefix('sqlite:///')).parent}"
    task = MulticlassTask(classes=("bronze", "gold", "silver"))
    gov.registry.client.set_model_version_tag(NAME, "2", TASK_TAG, task_to_json(task))
    assert main(["models", "show", NAME, "2", "--json", state]) == 0
    assert json.loads(capsys.readouterr().out)["task"] == {
        "task": "multiclass",
        "classes": ["bronze", "gold", "silver"],
    }
    # A version registered before tasks existed (no tag) reads as the flights binary task.
    assert main(["models", "show", NAME, "1", "--json", state]) == 0
    assert json.loads(capsys.readouterr().out)["task"] == {"task": "binary", "threshold": 0.0}
