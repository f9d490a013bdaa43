"""jobs/ci_gate.py and the CI template that runs it: arguments, the dry run, the workflow's commands.

Nothing trains here (CI time): the gate's pipeline is the job's own, tested in tests/e2e.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.conftest import load_script

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "templates" / "ci" / "github-actions.yml"


@pytest.fixture(scope="module")
def gate() -> ModuleType:
    return load_script("jobs/ci_gate.py", "ci_gate")


def test_dry_run_writes_the_plan_with_the_champion_gate(gate: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "plan.md"
    argv = ["--dry-run", "--out", str(out), "--max-regression", "test/auc=0.01", "+experiment=quickstart"]
    assert gate.main(argv) == 0
    plan = out.read_text()
    assert "ingest -> validate -> features -> train -> evaluate" in plan  # nothing registered or deployed
    assert "`flights-delay@champion` (`test/auc` may drop 0.01)" in plan


def test_bad_arguments_exit_2_naming_the_problem(gate: ModuleType, tmp_path: Path, capsys: Any) -> None:
    out = str(tmp_path / "x.md")
    assert gate.main(["--dry-run", "--out", out, "--max-regression", "auc=-1", "+experiment=quickstart"]) == 2
    assert "--max-regression 'auc=-1'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        gate.parse_args(["--dryrun"])
    assert info.value.code == 2 and "--dryrun" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gate.parse_args(["quickstart"])  # not key=value
    assert "no Hydra override" in capsys.readouterr().err


def test_the_workflow_runs_the_gate_with_arguments_it_accepts(gate: ModuleType) -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in triggers and workflow["permissions"]["pull-requests"] == "write"
    [job] = workflow["jobs"].values()
    commands = [line for step in job["steps"] for line in step.get("run", "").splitlines()]
    gates = [
        shlex.split(c.replace("$OVERRIDES", "+experiment=quickstart")) for c in commands if "ci_gate.py" in c
    ]
    assert len(gates) == 2
    for argv in gates:
        assert argv[:2] == ["python", "jobs/ci_gate.py"]
        args, overrides = gate.parse_args(argv[2:])
        assert overrides == ["+experiment=quickstart"] and args.out.suffix == ".md"
    assert any("gh pr comment" in c and "ci_gate.md" in c for c in commands)


def test_the_comparison_lists_any_tasks_metrics_with_their_direction() -> None:
    from omegaconf import OmegaConf

    from raymlops.cli.ci_gate import DEFAULT_MAX_REGRESSION, compose_config, plan_markdown, result_markdown
    from raymlops.evaluation.metrics import champion_gates
    from raymlops.pipeline.state import EvaluateOutput
    from raymlops.tasks.multiclass import MulticlassTask
    from raymlops.tasks.regression import RegressionTask

    task = MulticlassTask(classes=("a", "b", "c"))
    mine = {"test/accuracy": 0.71, "test/macro_f1": 0.64, "test/logloss": 0.80, "test/rows": 300.0}
    theirs = {"test/accuracy": 0.70, "test/macro_f1": 0.66, "test/logloss": 0.75, "test/rows": 300.0}
    gates = champion_gates(mine, theirs, DEFAULT_MAX_REGRESSION, "champion v2", task)
    baseline = {"test/macro_f1": 0.22, "test/accuracy": 0.5}
    evaluation = EvaluateOutput(
        mine, baseline, False, (gates[0].detail,), tuple(gates), {}, {"version": "2", "metrics": theirs}
    )
    cfg = OmegaConf.create(
        {
            "run_name": "cand",
            "data": {"ref": "t.csv"},
            "registry": {"model_name": "gems"},
            "evaluate": {"champion": {"alias": "champion"}},
        }
    )
    text = result_markdown(cfg, evaluation, task)
    assert "| test/macro_f1 | higher | 0.6400 | 0.6600 | -0.0200 | 0.2200 |" in text
    assert "| test/logloss | lower | 0.8000 | 0.7500 | +0.0500 | - |" in text
    assert "| test/rows | - |" in text
    assert "`test/macro_f1 vs champion v2 (max 0 worse)` | FAIL" in text  # 'primary' named for the task
    skipped = EvaluateOutput(
        mine,
        baseline,
        True,
        (),
        (),
        {},
        {"version": "2", "metrics": {}, "skipped": "answers another task (regression)"},
    )
    text = result_markdown(cfg, skipped, RegressionTask())
    assert "The champion was not compared: it answers another task (regression)." in text
    # No bound anywhere (the config's null) -> the task's primary metric may not drop at all.
    composed = compose_config(["+experiment=quickstart", "evaluate.champion.max_regression=null"], {})
    assert OmegaConf.to_container(composed.evaluate.champion.max_regression) == {"test/primary": 0.0}
    plan = plan_markdown(compose_config(["+experiment=quickstart", "evaluate.gates=null"], {}))
    assert "gates: the task's default (its primary metric beats the constant baseline)" in plan
