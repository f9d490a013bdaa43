"""``raymlops init``: the profile, the column plan, the written configs (composed through Hydra's search
path, exactly as the printed command composes them) and the command's mistakes. No Ray: a local file is
profiled with pyarrow; the job's run of these configs is tests/e2e/test_init_outside_repo.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from raymlops.cli import main
from raymlops.config import compose
from raymlops.data.stats import DatasetStats, table_stats
from raymlops.data.validation import check_rules
from raymlops.errors import ConfigError
from raymlops.scaffold import plan_columns, profile_data, run_command, write_configs
from raymlops.scaffold.writer import check_name
from raymlops.scaffold.yaml_text import ceil_fraction, outward, scalar
from tests.task_tables import binary_yes_no, multiclass_strings, regression_numbers


def _init(tmp_path: Path, table: pa.Table, label: str, name: str, **options) -> tuple:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    profile = profile_data(str(path), label, **options)
    plan = plan_columns(profile)
    out = tmp_path / f"configs-{name}"
    write_configs(profile, plan, name, out)
    cfg = compose([f"hydra.searchpath=[file://{out}]", f"+experiment={name}", f"state_dir={tmp_path / 's'}"])
    return profile, plan, cfg


@pytest.mark.parametrize(
    ("make", "task", "split", "answer"),
    [
        (binary_yes_no, "binary", "stratified", "YES"),
        (multiclass_strings, "multiclass", "stratified", None),
        (regression_numbers, "regression", "random", None),
    ],
)
def test_each_task_gets_configs_that_compose_and_pass_their_own_rules(
    tmp_path: Path, make, task: str, split: str, answer
) -> None:
    table = make(300)
    profile, plan, cfg = _init(tmp_path, table, "target", "mytable")
    assert (profile.task.name, profile.split_kind) == (task, split)
    assert (plan.numeric, plan.categorical) == (["num_a", "num_b"], ["cat"])
    # What the job reads: the file where it is, under the name given, and the task written out.
    assert cfg.data.ref == f"files:{(tmp_path / 'mytable.parquet').resolve()}"
    assert cfg.data.source is None
    assert (cfg.registry.model_name, cfg.registry.experiment, cfg.run_name) == (
        "mytable",
        "dev-mytable",
        "mytable",
    )
    assert "mytable" in cfg.registry.intended_use
    assert cfg.features.task == task and cfg.features.label.column == "target"
    assert cfg.features.label.positive == answer and cfg.features.label.threshold is None
    assert cfg.features.split.kind == split and list(cfg.features.split.fractions) == [0.8, 0.1, 0.1]
    assert list(cfg.features.numeric) == ["num_a", "num_b"] and list(cfg.features.categorical) == ["cat"]
    assert cfg.evaluate.gates is None and cfg.model._target_.endswith("XGBoostModel")
    assert list(cfg.evaluate.slices) == ["cat"]
    # The validate config's rules, as the validate stage checks them, pass on the profiled table.
    rules = OmegaConf.to_container(cfg.validate, resolve=True, enum_to_str=True)
    report = check_rules(DatasetStats(table_stats(table), table.num_rows), rules)
    assert report["passed"], report["failures"]
    assert set(rules["columns"]) == {"num_a", "num_b", "cat", "target"}
    assert rules["columns"]["num_b"]["max_null_fraction"] > 0  # num_b has nulls
    assert rules["columns"]["cat"]["allowed"] == ["x", "y", "z"]
    # ... and fail on a table that breaks them (a category never seen, more nulls).
    broken = table.set_column(2, "cat", pa.array(["w"] * table.num_rows))
    assert not check_rules(DatasetStats(table_stats(broken), broken.num_rows), rules)["passed"]


def test_yes_no_strings_stay_strings_and_the_positive_class_is_the_rarer(tmp_path: Path) -> None:
    _, _, cfg = _init(tmp_path, binary_yes_no(300), "target", "yesno")
    assert cfg.features.label.positive == "YES"  # not YAML 1.1's boolean true
    assert cfg.validate.columns.target.allowed == ["NO", "YES"]
    text = (tmp_path / "configs-yesno" / "features" / "yesno.yaml").read_text()
    assert "because target has two values" in text  # the inference's reason, as a comment


def _events(n: int = 400) -> pa.Table:
    rng = np.random.default_rng(1)
    start = dt.datetime(2024, 1, 1)
    return pa.table(
        {
            "customer_id": pa.array(np.arange(n)),
            "booked_at": pa.array(
                [start + dt.timedelta(hours=int(h)) for h in np.sort(rng.integers(0, 9000, n))]
            ),
            "closed_at": pa.array([start + dt.timedelta(days=400 + i) for i in range(n)]),
            "amount": pa.array(rng.normal(100, 20, n)),
            "channel": pa.array(rng.choice(["web", "shop", "phone"], n)),
            "comment": pa.array([f"free text {i}" for i in range(n)]),
            "constant": pa.array(["same"] * n),
            "churn_outcome": pa.array(rng.integers(0, 2, n)),
            "price_log": pa.array(rng.normal(size=n)),
            "price": pa.array(rng.gamma(2.0, 50.0, n)),
        }
    )


def test_a_timestamp_gives_a_time_split_and_leak_suspects_are_comments_not_features(
    tmp_path: Path,
) -> None:
    table = _events()
    profile, plan, cfg = _init(tmp_path, table, "price", "bookings")
    assert profile.task.name == "regression" and profile.time_column == "booked_at"
    split = cfg.features.split
    assert (split.kind, split.time_column) == ("time", "booked_at")
    valid, test = (dt.datetime.fromisoformat(v) for v in (split.valid_start, split.test_start))
    stamps = np.array(table["booked_at"].to_pylist())
    counts = [(stamps < valid).sum(), ((stamps >= valid) & (stamps < test)).sum(), (stamps >= test).sum()]
    assert min(counts) > 0 and counts[0] > counts[1] and counts[0] > counts[2], counts
    assert plan.numeric == ["amount"] and plan.categorical == ["channel"]
    assert set(plan.suspects) == {"customer_id", "closed_at", "comment", "churn_outcome", "price_log"}
    assert "constant" in plan.skipped and "booked_at" in plan.skipped
    text = (tmp_path / "configs-bookings" / "features" / "bookings.yaml").read_text()
    for name in plan.suspects:
        assert f"#   {name}: " in text
    assert cfg.features.forbidden == [] and "customer_id" not in cfg.features.numeric


def test_a_named_time_column_must_be_a_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(_events(), path)
    with pytest.raises(ConfigError, match=r"--time-column.*'amount' holds numeric values.*booked_at"):
        profile_data(str(path), "price", time_column="amount")
    assert profile_data(str(path), "price", time_column="closed_at").time_column == "closed_at"


def test_mistakes_name_the_option_the_value_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pacsv.write_csv(binary_yes_no(100), path)
    with pytest.raises(ConfigError, match=r"'--label'.*'label' is not a column.*num_a, num_b, cat, target"):
        profile_data(str(path), "label")
    with pytest.raises(ConfigError, match=r"'--task'.*regression needs a numeric label"):
        profile_data(str(path), "target", task="regression")
    with pytest.raises(ConfigError, match=r"'--data'.*does not exist"):
        profile_data(str(tmp_path / "missing.csv"), "target")
    with pytest.raises(ConfigError, match=r"'--name'.*shipped config"):
        check_name("flights")
    with pytest.raises(ConfigError, match=r"'--name'.*must start with a letter"):
        check_name("my table")
    profile = profile_data(str(path), "target")
    write_configs(profile, plan_columns(profile), "t", tmp_path / "out")
    with pytest.raises(ConfigError, match=r"--force"):
        write_configs(profile, plan_columns(profile), "t", tmp_path / "out")
    write_configs(profile, plan_columns(profile), "t", tmp_path / "out", force=True)


def test_the_command_writes_the_configs_and_prints_the_command_that_runs_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    pacsv.write_csv(regression_numbers(200), tmp_path / "House Prices.csv")
    assert main(["init", "--data", "House Prices.csv", "--label", "target"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "configs-house_prices"
    assert run_command(folder, "house_prices") in out
    assert f"python -m raymlops.job 'hydra.searchpath=[file://{folder}]' +experiment=house_prices" in out
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.yaml")) == [
        "data/house_prices.yaml",
        "experiment/house_prices.yaml",
        "features/house_prices.yaml",
        "validate/house_prices.yaml",
    ]
    assert main(["init", "--data", "House Prices.csv", "--label", "nope"]) == 2
    assert "'nope' is not a column" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text", ["NO", "yes", "on", "null", "1.0", "a: b", "it's", "${x}", "x", "- y", "über"]
)
def test_every_string_reads_back_as_itself(text: str) -> None:
    assert OmegaConf.create(f"v: {scalar(text)}").v == text


@pytest.mark.parametrize(
    "value", [1e-7, -3.772275156122734, 3.0660367390488967, 123456.7, 2.0, -0.00123, 0.0]
)
def test_bounds_round_outward_and_read_back_as_numbers(value: float) -> None:
    low, high = outward(value, up=False), outward(value, up=True)
    assert low <= value <= high
    assert OmegaConf.create(f"v: {scalar(low)}").v == low and OmegaConf.create(f"v: {scalar(high)}").v == high
    assert ceil_fraction(7 / 350) >= 7 / 350 and ceil_fraction(0.0) == 0.0
