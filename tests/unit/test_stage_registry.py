"""The stage registry: production stages only, class paths for a project's own, errors that name the fix."""

from __future__ import annotations

import pickle

import pytest

from raymlops.config import compose
from raymlops.config.stages import DEFAULT_STAGES, OPTIONAL_STAGES, STAGES
from raymlops.errors import ConfigError
from raymlops.loop.retrain import retrain_config
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.stage_registry import class_path, stage_class, stage_name

EXTERNAL = "tests.plugins.external_stage:RowCountStage"


def test_the_production_registry_holds_production_stages_only() -> None:
    assert all(path.startswith("raymlops.stages.") for path in STAGES.values())
    assert not {"loop", "loop_seed", "loop_fault"} & set(STAGES)
    assert set(DEFAULT_STAGES) <= set(STAGES) and set(OPTIONAL_STAGES) == {"tune", "monitor"}
    for name in STAGES:
        assert stage_class(name).name == name


def test_a_stage_of_ones_own_is_named_by_class_path() -> None:
    cls = stage_class(EXTERNAL)
    assert issubclass(cls, Stage) and cls.__module__ == "tests.plugins.external_stage"
    assert stage_name(EXTERNAL) == "row_count" and class_path(cls) == EXTERNAL
    assert stage_name("train") == "train"


def test_an_unknown_stage_names_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        stage_class("trian")
    message = str(info.value)
    assert "stages.trian" in message and "'train'" in message and "package.module:ClassName" in message
    assert pickle.loads(pickle.dumps(info.value)).key == "stages.trian"
    # The demo's stages are no longer registered: by name they are unknown, by class path they run.
    with pytest.raises(ConfigError, match="is not a stage"):
        stage_class("loop")
    assert stage_name("raymlops.loop.stages:LoopStage") == "loop"


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("tests.plugins.no_such_module:Stage", "cannot be imported"),
        ("tests.plugins.external_stage:Missing", "names nothing"),
        ("tests.plugins.external_stage:NotAStage", "not a subclass"),
    ],
)
def test_a_bad_class_path_is_refused_naming_it(entry: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        stage_class(entry)
    assert entry in str(info.value)


def test_a_retrain_leaves_out_the_stages_that_watch_or_drive_models() -> None:
    cfg = compose(["+experiment=flights_loop", "stages=[ingest,train,deploy,monitor]"])
    assert retrain_config(cfg, None, False, {}).stages == ["ingest", "train", "deploy"]
    loop = compose(["+experiment=flights_loop"])
    stages = retrain_config(loop, None, False, {}).stages
    assert [stage_name(s) for s in stages] == list(DEFAULT_STAGES)


def test_the_loop_demo_inserts_its_fault_stage_by_class_path() -> None:
    from raymlops.loop.stages import retrain_stages

    names = [stage_name(s) for s in retrain_stages(compose(["+experiment=flights_loop_broken"]))]
    # explain left out (SHAP does not decide a rollout), the fault right after export:
    assert names == [*DEFAULT_STAGES[:6], "loop_fault", "register", "deploy"]
