"""Read a table and profile it for ``raymlops init``: the project's column statistics
(:mod:`raymlops.data.stats`), the task its label asks for (:mod:`raymlops.tasks.infer`), the time column
and the split that fits.

A local CSV/parquet file (or folder of them) is read with pyarrow exactly as the ``files`` backend reads
it in the job, so what init sees is what the experiment trains on. Any other data reference
(``delta:...``, ``lakefs://...``, a backend of your own) is read through its backend with Ray Data and
profiled with the same one-pass statistics the validate stage uses.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from raymlops.data.stats import ColumnStats, TableStats, table_stats
from raymlops.errors import ConfigError
from raymlops.tasks.base import Task
from raymlops.tasks.infer import LabelSummary, resolve_task, summarize_label

__all__ = ["SPLIT_QUANTILES", "TableProfile", "profile_data", "profile_table"]

logger = logging.getLogger(__name__)

# A time split trains on the earliest 80% of rows and validates / tests on the next 10% / last 10%.
SPLIT_QUANTILES = (0.8, 0.9)
# Names that suggest a column is the instant of the event (preferred when several timestamps exist).
_EVENT_TIME = re.compile(r"(^|_)(time|date|datetime|timestamp|ts|event|created|when)(_|$)", re.IGNORECASE)
_SUFFIXES = (".csv", ".parquet")
# resolve_task's config keys -> init's options that set them
_OPTIONS = {
    "features.task": "--task",
    "features.label.column": "--label",
    "features.max_classes": "--max-classes",
}


@dataclass(frozen=True)
class TableProfile:
    """What init learnt about one table; :func:`raymlops.scaffold.write_configs` turns it into configs."""

    data: str  # what the user named (a path or a reference)
    ref: str  # the data.ref the configs read it by
    rows: int
    columns: TableStats  # in the table's column order
    types: dict[str, str]  # column -> its Arrow type, for comments
    label: str
    task: Task
    task_reason: str  # why this task (auto inference or --task)
    time_column: str | None
    time_reason: str  # why this time column, or why none
    time_bounds: tuple[str, str] | None  # (valid_start, test_start) of a time split; None: no time split

    @property
    def split_kind(self) -> str:
        """time when a usable time column exists; else the task's own (stratified for classes)."""
        return "time" if self.time_bounds is not None else self.task.split_kind()


def _local_files(path: Path) -> tuple[list[str], str]:
    """The data files under ``path`` and their one format, as the files backend finds them."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES)
    formats = {f.suffix for f in files}
    if not files or not formats <= set(_SUFFIXES) or len(formats) > 1:
        raise ConfigError(
            "--data",
            f"{str(path)!r} is not one CSV or parquet file, nor a folder of files of one of those formats.",
            ["<file>.csv", "<file>.parquet", "<folder of .csv or .parquet files>", "<data reference>"],
        )
    return [str(f) for f in files], formats.pop().lstrip(".")


def _read_local(path: Path) -> pa.Table:
    import pyarrow.dataset as pads

    files, file_format = _local_files(path)
    return pads.dataset(files, format=file_format).to_table()


def _read_reference(ref: str) -> tuple[int, TableStats, dict[str, str]]:
    """Rows, column statistics and types of a reference's current version, read with Ray Data."""
    import ray

    from raymlops.data.refs import open_backend
    from raymlops.data.stats import compute_dataset_stats

    if not ray.is_initialized():
        from raymlops.pipeline.ray_session import start_local_ray

        start_local_ray(include_dashboard=False, log_to_driver=False, configure_logging=False)
    backend = open_backend(ref, key="--data")
    version = backend.resolve()
    schema = backend.schema(version)
    stats = compute_dataset_stats(backend.read(version))
    ordered = {f.name: stats.columns[f.name] for f in schema if f.name in stats.columns}
    return stats.rows, ordered, {f.name: str(f.type) for f in schema}


def _time_column(columns: TableStats, label: str, asked: str | None) -> tuple[str | None, str]:
    stamps = [name for name, stats in columns.items() if stats.kind == "timestamp" and name != label]
    if asked is not None:
        if asked not in columns:
            raise ConfigError("--time-column", f"{asked!r} is not a column; columns: {', '.join(columns)}.")
        if columns[asked].kind != "timestamp":
            raise ConfigError(
                "--time-column",
                f"{asked!r} holds {columns[asked].kind} values, not timestamps or dates: "
                f"name a timestamp column ({', '.join(stamps) or 'none found'}) or leave --time-column out.",
            )
        return asked, f"{asked} was given with --time-column"
    if not stamps:
        return None, "no timestamp or date column"
    named = [s for s in stamps if _EVENT_TIME.search(s)]
    chosen = (named or stamps)[0]
    others = f" (of {', '.join(stamps)})" if len(stamps) > 1 else ""
    return chosen, f"{chosen} is the table's timestamp column{others}"


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(int(seconds), tz=dt.timezone.utc).replace(tzinfo=None).isoformat()


def _time_bounds(stats: ColumnStats) -> tuple[tuple[str, str] | None, str]:
    """valid_start / test_start at the 80th / 90th percentile instants, or why a time split cannot work."""
    from raymlops.data.sketch import QuantileSketch

    if stats.sketch is None or stats.min is None or stats.max is None:
        return None, "it holds no values"
    valid, test = QuantileSketch.from_dict(stats.sketch).quantiles(list(SPLIT_QUANTILES))
    valid, test = int(valid), int(test)  # whole seconds, as the statistics keep them
    if not stats.min < valid < test <= stats.max:
        return None, "too few distinct instants to leave rows in train, valid and test"
    return (_iso(valid), _iso(test)), ""


def profile_table(
    table: pa.Table,
    label: str,
    *,
    data: str = "<table>",
    ref: str | None = None,
    task: str = "auto",
    time_column: str | None = None,
    max_classes: int = 50,
) -> TableProfile:
    """Profile an in-memory table (see :func:`profile_data` for files and references)."""
    return _profile(
        data,
        ref or data,
        table.num_rows,
        table_stats(table),
        {f.name: str(f.type) for f in table.schema},
        table[label] if label in table.column_names else None,
        label,
        task,
        time_column,
        max_classes,
    )


def profile_data(
    data: str, label: str, *, task: str = "auto", time_column: str | None = None, max_classes: int = 50
) -> TableProfile:
    """Profile a CSV/parquet file or folder (read as ``files:<absolute path>``) or a data reference."""
    path = Path(data).expanduser()
    if path.exists():
        resolved = path.resolve()
        table = _read_local(resolved)
        return profile_table(
            table,
            label,
            data=data,
            ref=f"files:{resolved}",
            task=task,
            time_column=time_column,
            max_classes=max_classes,
        )
    if ":" not in data:
        raise ConfigError("--data", f"{data!r} does not exist (and is no data reference).")
    rows, columns, types = _read_reference(data)
    label_values = _label_of_reference(data, label) if label in columns else None
    return _profile(data, data, rows, columns, types, label_values, label, task, time_column, max_classes)


def _label_of_reference(ref: str, label: str) -> pa.ChunkedArray:
    """The label column alone (one column of the table, for the task's value counts)."""
    import ray

    from raymlops.data.refs import open_backend

    backend = open_backend(ref, key="--data")
    refs = backend.read(backend.resolve()).select_columns([label]).to_arrow_refs()
    return pa.concat_tables(ray.get(refs))[label]


def _profile(
    data: str,
    ref: str,
    rows: int,
    columns: TableStats,
    types: dict[str, str],
    label_values: Any,
    label: str,
    task: str,
    time_column: str | None,
    max_classes: int,
) -> TableProfile:
    if label_values is None:
        known = ", ".join(columns)
        raise ConfigError("--label", f"{label!r} is not a column of {data}; its columns: {known}.")
    summary: LabelSummary = summarize_label(pa.table({label: label_values}), label, max_classes)
    try:
        resolved, reason = resolve_task(task, label, summary, max_classes=max_classes)
    except ConfigError as exc:  # the same mistakes the features stage names, said in init's terms
        raise ConfigError(_OPTIONS.get(exc.key, exc.key), exc.problem) from None
    chosen, time_reason = _time_column(columns, label, time_column)
    bounds = None
    if chosen is not None:
        bounds, why_not = _time_bounds(columns[chosen])
        if bounds is None:
            if time_column is not None:
                raise ConfigError("--time-column", f"{chosen!r} cannot split the rows by time: {why_not}.")
            time_reason += f", but it cannot split the rows by time: {why_not}"
            chosen = None
    logger.debug("init profiled data=%s rows=%d task=%s time_column=%s", data, rows, resolved.name, chosen)
    return TableProfile(data, ref, rows, columns, types, label, resolved, reason, chosen, time_reason, bounds)
