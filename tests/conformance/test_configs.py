"""Every experiment and every config group option composes, instantiates and pickles; typos fail early."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError

from raymlops.config import CONFIG_DIR, compose
from raymlops.config.schema import JobConfig
from raymlops.config.stages import DEFAULT_STAGES, STAGES
from raymlops.models.registry import build_model
from raymlops.pipeline.stage_registry import stage_class

GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "experiment")
# Groups that job.yaml's defaults leave out: chosen with +group=option (e.g. +tune=optuna).
APPENDED_GROUPS = {"tune"}
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONFIG_DIR / g).glob("*.yaml"))]
EXPERIMENTS = sorted(f.stem for f in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(experiment: str) -> None:
    cfg = compose([f"+experiment={experiment}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert Path(resolved["state_dir"]).is_absolute()
    # An experiment may add stages (monitor, the loop demo's by class path ...) around the default ones.
    assert [s for s in cfg.stages if s in DEFAULT_STAGES] == list(DEFAULT_STAGES)
    assert all(stage_class(s) for s in cfg.stages)  # each registered, or a Stage class that imports
    model = build_model(cfg.model)
    pickle.loads(pickle.dumps(model))


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_group_option_composes(group: str, option: str) -> None:
    cfg = compose([f"{'+' if group in APPENDED_GROUPS else ''}{group}={option}"])
    node = OmegaConf.to_container(cfg[group], resolve=True)
    assert isinstance(node, dict) and node
    pickle.loads(pickle.dumps(cfg))


def test_the_default_stages_are_registered_and_the_schema_default() -> None:
    assert set(DEFAULT_STAGES) <= set(STAGES)
    assert JobConfig().stages == list(DEFAULT_STAGES)


@pytest.mark.parametrize("override", ["trainer.scaling.num_workerz=3", "model.lrr=0.1", "serve.prt=1"])
def test_misspelt_key_fails_at_compose_time_naming_it(override: str) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose(["+experiment=quickstart", override])
    assert override.split("=")[0].split(".")[-1] in str(info.value) + str(info.value.__cause__)


def test_wrong_type_fails_at_compose_time() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose(["+experiment=quickstart", "trainer.scaling.num_workers=two"])
    assert "num_workers" in str(info.value) + str(info.value.__cause__)


def test_unknown_group_option_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose(["+experiment=quickstart", "model=xgbost"])
    assert "xgboost" in str(info.value) and "torch_mlp" in str(info.value)


def test_schema_rejects_unknown_key_in_a_group_file(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    (configs / "trainer" / "typo.yaml").write_text("scaling:\n  num_workers: 2\n  use_gpus: true\n")
    with pytest.raises(ConfigCompositionException) as info:
        compose(["trainer=typo"], config_dir=configs)
    assert "use_gpus" in str(info.value) + str(info.value.__cause__)


def test_composed_config_is_struct() -> None:
    cfg = compose(["+experiment=quickstart"])
    with pytest.raises(ConfigAttributeError):
        cfg.trainer.scaling.gpus = 2


def test_job_help_lists_groups_and_options() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "raymlops.job", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for group in ("model", "trainer", "data", "serve", "experiment"):
        assert f"{group}:" in out
    assert "xgboost" in out and "quickstart" in out


def test_gates_override_replaces_the_list_and_parses() -> None:
    from raymlops.evaluation.metrics import parse_gate

    cfg = compose(["+experiment=quickstart", "evaluate.gates=['test/auc>=0.7','test/logloss<=0.58']"])
    assert [parse_gate(g) for g in cfg.evaluate.gates] == [
        ("test/auc", ">=", 0.7),
        ("test/logloss", "<=", 0.58),
    ]
    assert list(compose(["+experiment=quickstart", "evaluate.gates=[]"]).evaluate.gates) == []


def test_job_names_the_misspelt_key_and_the_valid_ones() -> None:
    from raymlops.config.overrides import misspelt_key_message

    message = misspelt_key_message(["+experiment=quickstart", "trainer.scaling.num_workerz=3"])
    assert message is not None
    assert "'trainer.scaling.num_workerz'" in message and "Did you mean 'num_workers'" in message
    assert "use_gpu" in message  # the valid keys at that level
    assert misspelt_key_message(["+experiment=quickstart", "trainer.scaling.num_workers=3"]) is None
    done = subprocess.run(
        [sys.executable, "-m", "raymlops.job", "+experiment=quickstart", "serve.prot=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Did you mean 'port'" in done.stderr


def test_envs_separate_model_names_storage_apps_and_prefixes() -> None:
    """dev, staging and prod never share a registered model, an artifact or log root, a Serve app or a
    route prefix (one Serve HTTP proxy serves every app of a cluster); prod is the strictest."""
    resolved = {
        env: OmegaConf.to_container(compose([f"env={env}"]), resolve=True)
        for env in ("dev", "staging", "prod")
    }
    for key in (
        ("registry", "model_name"),
        ("registry", "artifact_root"),
        ("serve", "app_name"),
        ("serve", "route_prefix"),
        ("monitor", "log_root"),
        ("monitor", "out_dir"),
    ):
        values = [cfg[key[0]][key[1]] for cfg in resolved.values()]
        assert len(set(values)) == 3, (key, values)
    assert resolved["prod"]["monitor"]["model"] == "flights-delay-prod"
    assert [cfg["env"]["name"] for cfg in resolved.values()] == ["dev", "staging", "prod"]
    assert resolved["prod"]["serve"]["auth"]["enabled"] and not resolved["dev"]["serve"]["auth"]["enabled"]
    assert resolved["prod"]["evaluate"]["champion"]["max_regression"] == {"test/primary": 0.0}
    assert resolved["prod"]["registry"]["on_pass"] == resolved["staging"]["registry"]["on_pass"]
    assert str(compose(["env=prod"]).registry.on_pass.value) == "challenger"
