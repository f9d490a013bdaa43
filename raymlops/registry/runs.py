"""Job runs as MLflow records them: list them, resolve a run by id, compare runs, plot their curves.

A job run is a top-level MLflow run tagged ``raymlops.run_id``; Tune trials are its child runs (tag
``mlflow.parentRunId``). Final metrics sit at step 0, per-epoch history at step = epoch.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from raymlops.errors import ConfigError, RayMLOpsError
from raymlops.registry.mlflow_registry import ModelRegistry
from raymlops.registry.tags import (
    DATA_VERSION_TAG,
    ENV_TAG,
    GIT_DIRTY_TAG,
    GIT_SHA_TAG,
    MODEL_NAME_TAG,
    MODEL_VERSION_TAG,
    RUN_ID_TAG,
    RUN_NAME_TAG,
    TRIAL_TAG,
)

__all__ = [
    "RunNotFoundError",
    "RunSummary",
    "compare_report",
    "format_table",
    "list_runs",
    "metric_histories",
    "plot_curves",
    "resolve_run",
    "runs_table",
]

KEY_METRICS = ("test/auc", "test/logloss")
_PAGE = 500
_MAX_CELL = 40
_LINESTYLES = ("-", "--", "-.", ":")


class RunNotFoundError(RayMLOpsError, LookupError):
    """No run (or more than one) matches the id the user gave; lists the closest ids."""

    def __init__(
        self, ref: str, problem: str, closest: Sequence[str] = (), label: str = "Closest ids"
    ) -> None:
        self.ref, self.problem, self.closest, self.label = ref, problem, tuple(closest), label
        message = f"Run {ref!r}: {problem}"
        if self.closest:
            message += f" {label}: {', '.join(self.closest)}."
        message += " See `python -m raymlops runs list --all`."
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.ref, self.problem, self.closest, self.label))


@dataclass(frozen=True)
class RunSummary:
    """What the CLI shows of one MLflow run; ``metrics`` are the latest values (last epoch or step 0)."""

    run_id: str
    name: str
    status: str
    start_ms: int
    end_ms: int | None
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]

    @property
    def short_id(self) -> str:
        return self.run_id[:8]

    @property
    def job_id(self) -> str:
        return self.tags.get(RUN_ID_TAG, "")

    @property
    def parent_id(self) -> str | None:
        return self.tags.get("mlflow.parentRunId")

    @property
    def git(self) -> str:
        sha = self.tags.get(GIT_SHA_TAG, "")
        dirty = self.tags.get(GIT_DIRTY_TAG) == "true" or sha.endswith("-dirty")
        sha = sha.removesuffix("-dirty")
        return (sha[:8] if sha != "unknown" else sha) + ("*" if dirty else "") if sha else "-"

    @property
    def model(self) -> str:
        name, version = self.tags.get(MODEL_NAME_TAG), self.tags.get(MODEL_VERSION_TAG)
        return f"{name} v{version}" if name and version else "-"

    @property
    def started(self) -> str:
        return datetime.fromtimestamp(self.start_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

    @property
    def duration(self) -> str:
        if self.end_ms is None:
            return "running" if self.status == "RUNNING" else "-"
        seconds = max(0, round((self.end_ms - self.start_ms) / 1000))
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _summary(run: Any) -> RunSummary:
    tags = dict(run.data.tags)
    return RunSummary(
        run_id=run.info.run_id,
        name=tags.get(TRIAL_TAG) or tags.get(RUN_NAME_TAG) or run.info.run_name or "",
        status=run.info.status,
        start_ms=int(run.info.start_time or 0),
        end_ms=int(run.info.end_time) if run.info.end_time else None,
        tags=tags,
        params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
    )


def _all_runs(registry: ModelRegistry) -> Iterator[RunSummary]:
    """Every run of the registry's experiment, newest first, a page at a time."""
    client, token = registry.client, None
    experiment = registry.experiment_id()
    while True:
        page = client.search_runs(
            [experiment], order_by=["attributes.start_time DESC"], max_results=_PAGE, page_token=token
        )
        yield from (_summary(run) for run in page)
        token = page.token
        if not token:
            return


def list_runs(registry: ModelRegistry, limit: int = 20, include_children: bool = False) -> list[RunSummary]:
    """The newest ``limit`` job runs; Tune trial (child) runs only with ``include_children``."""
    found: list[RunSummary] = []
    for run in _all_runs(registry):
        if include_children or run.parent_id is None:
            found.append(run)
            if len(found) >= limit:
                break
    return found


def resolve_run(registry: ModelRegistry, ref: str) -> RunSummary:
    """An MLflow run id, a raymlops run id (tag ``raymlops.run_id``), or a unique prefix of either."""
    from mlflow.exceptions import MlflowException

    ref = ref.strip()
    if not ref:
        raise RunNotFoundError(ref, "an empty run id.")
    if len(ref) == 32:
        try:
            return _summary(registry.client.get_run(ref))
        except MlflowException:
            pass  # not an MLflow id after all: try the other forms
    runs = list(_all_runs(registry))
    by_job = [r for r in runs if r.job_id == ref and r.parent_id is None]
    if len(by_job) == 1:
        return by_job[0]
    if len(by_job) > 1:
        raise RunNotFoundError(
            ref, "several job runs carry this raymlops run id.", [r.run_id for r in by_job]
        )
    matches = [
        r
        for r in runs
        if r.run_id.startswith(ref.lower()) or (r.job_id.startswith(ref) and r.parent_id is None)
    ]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        shown = [r.job_id if r.job_id.startswith(ref) else r.run_id for r in matches]
        problem = f"prefix matches {len(matches)} runs; give more characters."
        raise RunNotFoundError(ref, problem, shown[:5], label="Matches")
    ids = {r.run_id for r in runs} | {r.job_id for r in runs if r.job_id}
    closest = difflib.get_close_matches(ref, sorted(ids), n=5, cutoff=0.3)
    if not closest:
        closest = [r.run_id for r in runs[:5]]
    where = f"experiment {registry.experiment!r} ({len(runs)} runs)"
    raise RunNotFoundError(
        ref, f"no MLflow run id, id prefix or raymlops run id matches in {where}.", closest
    )


def metric_histories(
    registry: ModelRegistry, run: RunSummary, keys: Sequence[str] | None = None
) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` sorted by step; step 0 (the final value) is dropped from a
    metric that also has per-epoch values."""
    out: dict[str, list[tuple[int, float]]] = {}
    for key in keys if keys is not None else sorted(run.metrics):
        if key not in run.metrics:
            continue
        points = sorted(
            (int(m.step), float(m.value)) for m in registry.client.get_metric_history(run.run_id, key)
        )
        if any(step > 0 for step, _ in points):
            points = [(step, value) for step, value in points if step > 0]
        out[key] = points
    return out


# -- text tables ---------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 3] + "..."


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain, left-aligned table with two spaces between columns."""
    cells = [list(headers)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def runs_table(runs: Sequence[RunSummary], show_parent: bool = False) -> str:
    headers = ["RUN", "RAYMLOPS RUN", "NAME", "STATUS", "STARTED (UTC)", "DURATION", "DATA", "GIT"]
    headers += [*KEY_METRICS, "MODEL"] + (["PARENT"] if show_parent else [])
    rows = []
    for run in runs:
        row: list[Any] = [run.short_id, run.job_id or "-", run.name or "-", run.status, run.started]
        row += [run.duration, run.tags.get(DATA_VERSION_TAG, "-"), run.git]
        row += [_metric(run, key) for key in KEY_METRICS] + [run.model]
        if show_parent:
            row.append(run.parent_id[:8] if run.parent_id else "-")
        rows.append(row)
    return format_table(headers, rows)


def _metric(run: RunSummary, key: str) -> str:
    return f"{run.metrics[key]:.4f}" if key in run.metrics else "-"


def compare_report(runs: Sequence[RunSummary]) -> str:
    """Runs side by side: the params that differ, every metric's latest value, the tags that matter."""
    columns = _column_names(runs)
    lines = ["runs:"]
    lines += [
        f"  {c}  {r.run_id}  {r.job_id or '-'}  {r.name or '-'}" for c, r in zip(columns, runs, strict=True)
    ]

    keys = sorted(set().union(*(r.params for r in runs)))
    differ = [k for k in keys if len({r.params.get(k) for r in runs}) > 1]
    same = len(keys) - len(differ)
    lines += ["", f"params: {len(differ)} differ, {same} identical (not shown)"]
    if differ:
        lines.append(
            format_table(["PARAM", *columns], [[k, *(r.params.get(k) for r in runs)] for k in differ])
        )

    metrics = sorted(set().union(*(r.metrics for r in runs)))
    lines += ["", "metrics (last value: final metrics, or the last epoch of a curve):"]
    lines.append(
        format_table(["METRIC", *columns], [[k, *(r.metrics.get(k) for r in runs)] for k in metrics])
    )

    tags: list[tuple[str, Any]] = [
        ("status", lambda r: r.status),
        ("started (UTC)", lambda r: r.started),
        ("duration", lambda r: r.duration),
        ("env", lambda r: r.tags.get(ENV_TAG)),
        ("data version", lambda r: r.tags.get(DATA_VERSION_TAG)),
        ("git sha", lambda r: r.git),
        ("model", lambda r: r.model),
        ("parent run", lambda r: r.parent_id[:8] if r.parent_id else None),
    ]
    lines += ["", "tags:"]
    lines.append(format_table(["TAG", *columns], [[name, *(get(r) for r in runs)] for name, get in tags]))
    return "\n".join(lines)


def _column_names(runs: Sequence[RunSummary]) -> list[str]:
    """Short ids as column headers, longer where two runs share the first 8 characters."""
    names = [r.short_id for r in runs]
    for i, run in enumerate(runs):
        if names.count(names[i]) > 1:
            names[i] = run.run_id
    return [f"{n}#{i + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]


# -- curves --------------------------------------------------------------------------------------------


def plot_curves(
    registry: ModelRegistry, runs: Sequence[RunSummary], path: Path, metrics: Sequence[str] | None = None
) -> list[str]:
    """Write a PNG with one subplot per metric and one line per run; return the metrics plotted.

    Default metrics: every metric that has more than one step in any of the runs (train/loss, valid/loss),
    less those whose value never changes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    histories = [metric_histories(registry, run, metrics) for run in runs]
    if metrics:
        known = set().union(*(r.metrics for r in runs))
        for key in metrics:
            if key not in known:
                raise ConfigError("--metric", f"no run logged {key!r}.", sorted(known))
        chosen = list(dict.fromkeys(metrics))
    else:
        # Curves over epochs; a counter that stays flat in every run (rows per worker) says nothing.
        chosen = sorted(
            {k for h in histories for k, points in h.items() if len(points) > 1}
            - {
                k
                for k in set().union(*histories)
                if len({v for h in histories for _, v in h.get(k, [])}) == 1
            }
        )
    if not chosen:
        raise RayMLOpsError(
            "None of the runs has a metric with more than one step (epoch) to plot; name one with --metric."
        )
    columns = min(len(chosen), 2)
    rows = -(-len(chosen) // columns)
    figure = Figure(figsize=(6.4 * columns, 4.2 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, key in zip(axes, chosen, strict=False):
        for index, (run, label, history) in enumerate(zip(runs, _column_names(runs), histories, strict=True)):
            points = history.get(key, [])
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(
                    steps,
                    values,
                    linestyle=_LINESTYLES[index % len(_LINESTYLES)],  # runs that overlap stay visible
                    marker="o" if len(points) <= 30 else None,
                    markersize=4,
                    label=f"{label} {run.job_id or run.name}".strip(),
                )
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    for ax in axes[len(chosen) :]:
        ax.set_visible(False)
    figure.suptitle(f"metric curves of {len(runs)} runs")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return chosen
