"""Write a profiled table's configs: ``data/``, ``validate/``, ``features/`` and ``experiment/<name>.yaml``
in one folder that Hydra's search path adds to the shipped configs (``hydra.searchpath=[file://DIR]``).

Commented like the shipped configs in ``configs/``: every value says where it came from (what the
profile observed, what the task inference decided) so the user can read and edit it.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from pathlib import Path

from raymlops.data.stats import ColumnStats
from raymlops.errors import ConfigError
from raymlops.scaffold.columns import ColumnPlan
from raymlops.scaffold.profile import SPLIT_QUANTILES, TableProfile
from raymlops.scaffold.yaml_text import ceil_fraction, flow_list, key, outward, scalar

__all__ = ["GROUPS", "NAME_PATTERN", "check_name", "run_command", "write_configs"]

GROUPS = ("data", "validate", "features", "experiment")
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
MAX_ALLOWED = 20  # string columns with at most this many values get an `allowed` list (and are slices)


def check_name(name: str, config_dir: Path | None = None) -> str:
    """``name`` if it can name the four configs, the experiment and the registered model; and names no
    shipped config (the shipped one would win in Hydra's search path)."""
    if not NAME_PATTERN.match(name):
        raise ConfigError(
            "--name", f"{name!r} must start with a letter and hold only letters, digits, '_' and '-'."
        )
    if config_dir is None:
        from raymlops.config import CONFIG_DIR

        config_dir = CONFIG_DIR
    taken = [g for g in GROUPS if (config_dir / g / f"{name}.yaml").exists()]
    if taken:
        raise ConfigError(
            "--name", f"{name!r} is a shipped config in {', '.join(taken)}: choose another name."
        )
    return name


def run_command(out_dir: Path, name: str) -> str:
    """The one command that runs the experiment, from any directory."""
    searchpath = f"hydra.searchpath=[file://{Path(out_dir).resolve()}]"
    return f"python -m raymlops.job {shlex.quote(searchpath)} +experiment={name}"


def _header(profile: TableProfile) -> str:
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    return (
        f"# Written by `raymlops init` on {today} from {profile.data} "
        f"({profile.rows:,} rows, {len(profile.columns)} columns)."
    )


def _data(profile: TableProfile, name: str) -> str:
    task = profile.task
    return f"""{_header(profile)}
# ref: delta:<path>[@version] | lakefs://<repo>/<branch|tag|commit>/<path> | files:<path>[@sha256:<digest>]
#      | <package.module:Class>:<location>  (a backend of your own: docs/plugins.md)
# Without a pin the current content is read, and the run records which version (files: a digest).
ref: {scalar(profile.ref)}
source: null                   # nothing to seed: the data exists where the reference points
sample_fraction: 1.0           # < 1 reads a seeded random sample (quick runs)
name: {scalar(name):<25}# the MLflow experiment is <env>-<name>
model_name: {scalar(name):<19}# the registered model (registry.model_name)
# The model card's sections (registry.intended_use / limitations): say who uses the model, for what
# decisions, and where it must not be used.
intended_use: {
        scalar(
            f"Predict {profile.label} ({task.name}) for rows of the {name} table. "
            "Replace this with who uses the model and for which decisions."
        )
    }
limitations:
  - {scalar(f"Trained and evaluated on {profile.rows:,} rows of {profile.data} only.")}
"""


def _observed(stats: ColumnStats, types: str) -> str:
    null = f"{stats.null_fraction:.2%} null"
    if stats.kind == "numeric":
        return f"# {types}, {null}, mean {stats.mean:.4g}, std {stats.std:.4g}"
    if stats.kind == "timestamp" and stats.min is not None and stats.max is not None:
        first, last = (dt.datetime.fromtimestamp(int(v), tz=dt.timezone.utc) for v in (stats.min, stats.max))
        return f"# {types}, {null}, {first:%Y-%m-%d %H:%M:%S} .. {last:%Y-%m-%d %H:%M:%S} UTC"
    if stats.kind == "string":
        return f"# {types}, {null}, {stats.distinct} distinct values"
    return f"# {types}, {null}"


def _rule(stats: ColumnStats) -> str | None:
    if stats.kind not in ("numeric", "string", "timestamp"):
        return None
    parts = [f"type: {stats.kind}", f"max_null_fraction: {ceil_fraction(stats.null_fraction)!r}"]
    if stats.kind == "numeric" and stats.min is not None and stats.max is not None:
        low, high = outward(float(stats.min), up=False), outward(float(stats.max), up=True)
        parts += [f"min: {scalar(low)}", f"max: {scalar(high)}"]
    if stats.kind == "string" and 0 < stats.distinct <= MAX_ALLOWED:
        parts.append(f"allowed: {flow_list(sorted(stats.counts, key=str))}")
    return "{" + ", ".join(parts) + "}"


def _validate(profile: TableProfile) -> str:
    lines = [
        _header(profile),
        "# Rules the raw table must pass, all checked in one distributed pass before anything trains: the",
        "# null fractions, ranges and categories observed by init. Widen them for data to come; a rule with",
        "# severity: warn is reported and logged instead of stopping the run.",
        f"min_rows: {max(1, profile.rows // 2):<11}# half the rows profiled: far fewer means a broken export",
        "max_rows: null",
        "fail_on_error: true",
        "unique:",
        "  key: []              # columns that together identify a row, e.g. [order_id]: duplicates fail",
        "freshness:",
    ]
    stamp = profile.time_column or "ts"
    lines.append(f"  column: null         # data that should be current: {{column: {stamp}, max_age: 2d}}")
    lines.append("columns:")
    for name, stats in profile.columns.items():
        rule = _rule(stats)
        observed = _observed(stats, profile.types.get(name, stats.kind))
        if rule is None:
            lines.append(f"  # {name}: not checked ({observed[2:]})")
        else:
            lines += [f"  {observed}", f"  {key(name)}: {rule}"]
    lines += ["drift:", "  reference: null      # a profile.json (every run writes one) to compare against"]
    return "\n".join(lines) + "\n"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _split(profile: TableProfile) -> list[str]:
    kind = profile.split_kind
    if profile.time_bounds is not None:
        valid, test = profile.time_bounds
        low, high = (f"{q:.0%}" for q in SPLIT_QUANTILES)
        return [
            f"# {_capital(profile.time_reason)}: train on the earlier rows, validate and test on later ones.",
            "split:",
            "  kind: time                  # time | random | stratified | group",
            f"  time_column: {scalar(profile.time_column)}",
            f"  valid_start: {scalar(valid)}   # the instant {low} of the rows come before (UTC)",
            f"  test_start: {scalar(test)}    # ... and {high}",
            "  fractions: [0.8, 0.1, 0.1]  # train, valid, test of a hash split (random, stratified, group)",
            "  seed: 42",
            "  group_column: null",
        ]
    why = {
        "stratified": "each split keeps every class's share of the rows",
        "random": "rows fall in train, valid or test by a seeded hash of their content",
    }.get(kind, "the task's default split")
    return [
        f"# {_capital(profile.time_reason)}, so a hash split: {kind} ({why}).",
        "split:",
        f"  kind: {kind:<22}# time | random | stratified | group",
        "  time_column: null           # kind time: an instant column, with valid_start and test_start",
        "  valid_start: null",
        "  test_start: null",
        "  fractions: [0.8, 0.1, 0.1]  # train, valid, test",
        "  seed: 42                    # the same seed, the same rows in every run; another, other splits",
        "  group_column: null          # kind group: e.g. a customer id, so no customer is in two splits",
    ]


def _features(profile: TableProfile, plan: ColumnPlan) -> str:
    task = profile.task
    description = task.describe()
    positive = description.get("positive")
    min_frequency = max(1, min(10, profile.rows // 200))
    lines = [
        _header(profile),
        f"# The task: {task.name}, because {profile.task_reason} (raymlops.tasks.infer).",
        "# Written out rather than left to `task: auto`, which re-infers from each run's train split.",
        f"task: {task.name:<23}# auto | binary | multiclass | regression",
        "max_classes: 50",
        "label:",
        f"  column: {scalar(profile.label)}",
        "  threshold: null            # a numeric label made binary: positive when column > threshold",
        f"  positive: {scalar(positive):<17}# binary: the label value that is the positive class",
        *_split(profile),
        "# Imputed with the train mean, standardised:",
        f"numeric: {flow_list(plan.numeric)}",
        "# One-hot over the train values seen at least min_frequency times (others: the 'unknown' code):",
        f"categorical: {flow_list(plan.categorical)}",
        "max_categories: 64",
        f"min_frequency: {min_frequency:<14}# 10, or fewer on a small table",
        "forbidden: []                # columns that must never be features (they leak the label)",
    ]
    if plan.suspects:
        lines += [
            "# Leakage suspects, left out of the features: decide for each. Known before the event? Add",
            "# it to numeric or categorical. Known only after it, or derived from the label? To forbidden.",
            *(f"#   {name}: {why}" for name, why in plan.suspects.items()),
        ]
    if plan.skipped:
        lines += ["# Not features:", *(f"#   {name}: {why}" for name, why in plan.skipped.items())]
    return "\n".join(lines) + "\n"


def _experiment(profile: TableProfile, plan: ColumnPlan, name: str, out_dir: Path) -> str:
    slices = [c for c in plan.categorical if profile.columns[c].distinct <= MAX_ALLOWED][:3]
    return f"""# @package _global_
{_header(profile)}
# {profile.task.name} on {profile.label}, trained by XGBoost on Ray Train, exported to ONNX, registered
# as {name}, served over HTTP. Run it from anywhere (the configs stay in this folder):
#   {run_command(out_dir, name)}
defaults:
  - override /data: {name}
  - override /validate: {name}
  - override /features: {name}
  - override /model: xgboost   # xgboost | torch_mlp
  - override /trainer: ddp
run_name: {scalar(name)}
evaluate:
  gates: null                  # the task's default: its primary metric beats the constant baseline
  champion:
    max_regression: null       # the task's default tolerance against the current champion
  # Metrics per value of these columns, in the report and the model card:
  slices: {flow_list(slices)}
"""


def write_configs(
    profile: TableProfile, plan: ColumnPlan, name: str, out_dir: Path, *, force: bool = False
) -> dict[str, Path]:
    """Write the four configs under ``out_dir/<group>/<name>.yaml``; group -> path written.

    Raises:
        ConfigError: a file is there already and ``force`` is not set.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    texts = {
        "data": _data(profile, name),
        "validate": _validate(profile),
        "features": _features(profile, plan),
        "experiment": _experiment(profile, plan, name, out_dir),
    }
    paths = {group: out_dir / group / f"{name}.yaml" for group in texts}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        there = ", ".join(existing)
        raise ConfigError("--out", f"{there} exist(s): pass --force to overwrite them, or another --out.")
    for group, text in texts.items():
        paths[group].parent.mkdir(parents=True, exist_ok=True)
        paths[group].write_text(text)
    return paths
