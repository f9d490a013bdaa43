"""A bad search space fails before any trial runs, naming the key; good entries become Tune domains."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from raymlops.config import compose
from raymlops.errors import ConfigError
from raymlops.tasks.binary import BinaryTask
from raymlops.tasks.multiclass import MulticlassTask
from raymlops.tasks.regression import RegressionTask
from raymlops.training.tune_space import decode_params, max_reports, objective, search_space, validate_tune


def _tune(*overrides: str):
    return compose(["+experiment=quickstart", "+tune=optuna", *overrides])


def _compose_error(*overrides: str) -> str:
    with pytest.raises(ConfigCompositionException) as info:
        _tune(*overrides)
    return f"{info.value} {info.value.__cause__}"


def test_shipped_option_is_valid_for_its_model() -> None:
    cfg = _tune()
    validate_tune(cfg.tune, cfg.model)
    assert cfg.tune.metric == "auto" and cfg.tune.scheduler.max_t is None
    assert compose(["+experiment=quickstart"]).tune is None  # no search unless asked for


def test_xgboost_option_is_valid_for_xgboost() -> None:
    cfg = compose(["+experiment=quickstart_xgb", "+tune=optuna_xgb"])
    validate_tune(cfg.tune, cfg.model)
    assert max_reports(cfg.model, cfg.tune.space) == 61  # 60 rounds, each reported, and one at the end


def test_unknown_type_fails_at_compose_time_with_choices() -> None:
    message = _compose_error("tune.space.lr.type=logunifrom")
    assert "tune.space.lr.type" in message and "loguniform, uniform, int, choice" in message


def test_unknown_key_of_a_dim_fails_at_compose_time() -> None:
    assert "typ" in _compose_error("tune.space.lr.typ=int")


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        (["tune.space.lr.low=1"], "tune.space.lr", "low 1.0 must be < high 0.03"),
        (["tune.space.lr.high=null"], "tune.space.lr", "needs both `low` and `high`"),
        (["tune.space.lr.low=0"], "tune.space.lr", "needs low > 0"),
        (["tune.space.hidden_sizes.values=[]"], "tune.space.hidden_sizes", "non-empty `values`"),
        (["tune.space.dropout.values=[0.1]"], "tune.space.dropout", "only for type 'choice'"),
        (["+tune.space={epochs:{type:int,low:1,high:2.5}}"], "tune.space.epochs", "whole bounds"),
        (["+tune.space={lrr:{type:uniform,low:0,high:1}}"], "tune.space.lrr", "Did you mean 'lr'?"),
        (["tune.metric=valid-auc"], "tune.metric", "Did you mean 'valid/auc'"),
        (["tune.num_samples=0"], "tune.num_samples", "must be >= 1"),
        (["tune.scheduler.max_t=0", "tune.scheduler.grace_period=1"], "tune.scheduler.max_t", "below"),
    ],
)
def test_bad_entry_names_the_key(overrides: list[str], key: str, words: str) -> None:
    cfg = _tune(*overrides)
    with pytest.raises(ConfigError) as info:
        validate_tune(cfg.tune, cfg.model)
    assert info.value.key == key and words in str(info.value)


def test_unknown_parameter_lists_the_models_parameters() -> None:
    cfg = _tune("+tune.space={lrr:{type:uniform,low:0,high:1}}")
    with pytest.raises(ConfigError) as info:
        search_space(cfg.tune.space, cfg.model)  # the domain builder refuses it too
    for name in ("lr", "hidden_sizes", "dropout", "weight_decay", "batch_size", "epochs"):
        assert name in info.value.choices


def test_plus_dot_form_of_a_new_dim_is_refused_at_compose_time() -> None:
    # OmegaConf 2.3 cannot assign a plain dict into dict[str, SearchDim]; +tune.space={name:{...}} merges.
    assert "lrr" in _compose_error("+tune.space.lrr={type:uniform,low:0,high:1}")


def test_tune_stage_without_tune_config_fails_before_anything_runs(tmp_path: Path) -> None:
    from raymlops.pipeline.context import RunContext
    from raymlops.pipeline.state import PipelineState
    from raymlops.stages.tune import TuneStage

    cfg = compose(["+experiment=quickstart", f"state_dir={tmp_path}", "stages=[tune]"])
    with pytest.raises(ConfigError, match=r"\+tune=optuna"):
        TuneStage().run(RunContext(cfg), PipelineState())  # no features yet: validation comes first


def test_domains_for_every_type() -> None:
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Uniform

    cfg = _tune("+tune.space={epochs:{type:int,low:1,high:3}}")
    domains = search_space(cfg.tune.space, cfg.model)
    lr, dropout, epochs, hidden = (domains[k] for k in ("lr", "dropout", "epochs", "hidden_sizes"))
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-4, 3e-2)
    assert isinstance(lr.sampler, LogUniform) and isinstance(dropout.sampler, Uniform)
    assert isinstance(epochs, Integer) and (epochs.lower, epochs.upper) == (1, 4)  # high included
    assert isinstance(hidden, Categorical) and hidden.categories == ["[32]", "[64, 32]", "[128, 64]"]
    samples = {epochs.sample() for _ in range(200)}
    assert samples == {1, 2, 3}
    params = decode_params({"hidden_sizes": "[64, 32]", "lr": 0.01}, cfg.tune.space)
    assert params == {"hidden_sizes": [64, 32], "lr": 0.01}
    assert max_reports(cfg.model, cfg.tune.space) == 3  # epochs is searched: its highest value


@pytest.mark.parametrize(
    ("task", "metric", "mode"),
    [
        (None, "valid/auc", "max"),  # no task: the legacy binary (flights) task
        (BinaryTask(positive="YES", negative="NO"), "valid/auc", "max"),
        (MulticlassTask(classes=("a", "b", "c")), "valid/macro_f1", "max"),
        (RegressionTask(), "valid/rmse", "min"),
    ],
)
def test_auto_metric_and_mode_are_the_tasks_primary_metric_and_its_direction(
    task: object, metric: str, mode: str
) -> None:
    cfg = _tune()
    validate_tune(cfg.tune, cfg.model)  # auto passes before the task is known
    assert objective(cfg.tune, task) == (metric, mode)  # type: ignore[arg-type]


def test_an_explicit_metric_keeps_its_mode_and_a_loss_is_minimised() -> None:
    assert objective(_tune("tune.metric=valid/loss").tune, RegressionTask()) == ("valid/loss", "min")
    assert objective(_tune("tune.metric=valid/auc", "tune.mode=min").tune, None) == ("valid/auc", "min")


def test_a_metric_another_task_reports_names_what_this_task_reports() -> None:
    cfg = _tune("tune.metric=valid/auc")
    validate_tune(cfg.tune, cfg.model)  # some task reports it
    with pytest.raises(ConfigError) as info:
        objective(cfg.tune, RegressionTask())
    assert info.value.key == "tune.metric" and "valid/rmse" in str(info.value)
