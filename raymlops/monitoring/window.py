"""The monitored window: its bounds as UTC instants, and reading its prediction-log rows.

A window whose files take more than ``monitor.ray_data_min_bytes`` on disk is read by Ray Data, one
task per file (:func:`partials_with_ray`: each task computes the partial statistics of its rows and the
driver merges them); a smaller one is read in this process.
"""

from __future__ import annotations

import datetime as dt
import pickle
from typing import Any

import pyarrow as pa

from raymlops.errors import ConfigError
from raymlops.monitoring.window_stats import window_partials

__all__ = ["block_partials", "iso", "log_dataset", "parse_instant", "partials_with_ray", "timestamp"]


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_instant(value: dt.datetime | str | None, what: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(what, f"is not an ISO 8601 date-time: {value!r}.") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def timestamp(us: int | None) -> str | None:
    """An ISO 8601 UTC string of unix microseconds (None stays None)."""
    return None if us is None else iso(dt.datetime.fromtimestamp(us / 1e6, tz=dt.UTC))


def log_dataset(root: str, model: str, since: Any, until: Any) -> tuple[Any, Any, int]:
    """(unified pyarrow dataset of the window's files or None, row filter, bytes on disk)."""
    import pyarrow.dataset as ds
    from pyarrow import fs

    from raymlops.monitoring.parquet_log import discover, resolve_root
    from raymlops.monitoring.prediction_log import PREDICTIONS_DIR, _window

    filesystem, base = resolve_root(f"{root.rstrip('/')}/{PREDICTIONS_DIR}")
    partition, row = _window(since, until)
    if filesystem.get_file_info(base).type != fs.FileType.Directory:
        return None, row, 0
    partitioning = ds.partitioning(pa.schema([("model", pa.string()), ("date", pa.string())]), flavor="hive")
    dataset, encrypted = discover(filesystem, base, partitioning)
    if encrypted or dataset is None:
        # Encrypted parts are decrypted in this process (read_predictions -> read_log): Ray Data's
        # readers would need the KEK in every read task.
        return None, row, 0
    wanted = ds.field("model") == model
    fragments = list(dataset.get_fragments(filter=wanted if partition is None else wanted & partition))
    if not fragments:
        return None, row, 0
    size = sum(info.size or 0 for info in filesystem.get_file_info([f.path for f in fragments]))
    schema = pa.unify_schemas(
        [f.physical_schema for f in fragments] + [partitioning.schema], promote_options="permissive"
    )
    return ds.FileSystemDataset(fragments, schema, dataset.format, filesystem), row, size


def block_partials(block: pa.Table, row_filter: Any, feedback: pa.Table | None) -> pa.Table:
    rows = block.filter(row_filter) if row_filter is not None else block
    return pa.table({"partials": [pickle.dumps(window_partials(rows, feedback))]})


def partials_with_ray(cfg: Any, dataset: Any, row_filter: Any, feedback: pa.Table) -> list[dict]:
    import ray

    from raymlops.data.arrow_read import read_arrow_dataset
    from raymlops.pipeline.ray_session import connect_ray

    if not ray.is_initialized():
        connect_ray(cfg.ray)
    blocks = read_arrow_dataset(dataset).map_batches(
        block_partials,
        fn_kwargs={"row_filter": row_filter, "feedback": feedback if feedback.num_rows else None},
        batch_format="pyarrow",
        batch_size=None,
        zero_copy_batch=True,
    )
    return [pickle.loads(row["partials"]) for row in blocks.take_all()]
