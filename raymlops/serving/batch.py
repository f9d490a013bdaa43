"""Batch scoring: a registered ONNX model over a versioned dataset, as a Ray Data job (DESIGN §4).

Batch inference is a job, not the endpoint: ``map_batches`` over a pool of actors, each holding one
onnxruntime session (``intra_op_num_threads`` = the CPUs the actor reserved; the CUDA provider and a
reserved GPU when ``use_gpu``). The model travels as bytes, so actors on other nodes need not see the
driver's disk.

``batch_score`` is the whole job: ``<name>@<alias|version>`` resolved in the registry, the input
reference resolved to an immutable data version, the data's columns checked against the model's before
any work, parquet parts written by the scoring actors themselves (the read tasks fuse into the same
actors, so rows go file -> actor -> part file without another trip through the object store), and
``_raymlops_batch.json`` written last, beside the parts, as the mark of a complete output. Parquet
readers skip files whose names start with ``_``, so the output folder reads as a table.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from raymlops.errors import ConfigError, DataVersionError, ModelNotFoundError
from raymlops.models.export import parse_input_columns
from raymlops.registry.model_ref import parse_model_ref, resolve_model
from raymlops.registry.tags import DATA_VERSION_TAG, INPUT_COLUMNS_TAG, TASK_TAG
from raymlops.security.integrity import registered_artifact
from raymlops.serving.batch_scorers import (
    DEFAULT_BATCH_SIZE,
    check_threshold,
    output_columns,
    output_filesystem,
    score_to_parquet,
)
from raymlops.serving.spec import task_description

__all__ = ["METADATA_FILE", "BatchScoreResult", "batch_score", "check_input_schema"]

logger = logging.getLogger(__name__)

METADATA_FILE = "_raymlops_batch.json"


def _numeric(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_decimal(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_null(dtype)
    )


def check_input_schema(
    schema: pa.Schema,
    input_columns: Mapping[str, str],
    keep_columns: Sequence[str] | None,
    model: str,
    task: Mapping[str, Any] | None = None,
) -> list[str]:
    """Fail before any work when the data cannot be scored; return the columns the output keeps.
    ``task``: the model's (``Task.describe()``; None: legacy binary), whose columns scoring adds."""
    names = list(schema.names)
    missing = [c for c in input_columns if c not in names]
    if missing:
        raise ConfigError(
            "input",
            f"the data lacks column(s) {', '.join(missing)} that model {model} needs. "
            f"Model inputs: {', '.join(input_columns)}. Data columns: {', '.join(names)}.",
        )
    wrong = [
        f"{c} ({schema.field(c).type})"
        for c, kind in input_columns.items()
        if kind == "float" and not _numeric(schema.field(c).type)
    ]
    if wrong:
        raise ConfigError(
            "input",
            f"model {model} needs numbers in column(s) {', '.join(wrong)}; the data holds other types.",
        )
    keep = names if keep_columns is None else list(keep_columns)
    unknown = [c for c in keep if c not in names]
    if unknown:
        raise ConfigError(
            "keep", f"column(s) {', '.join(unknown)} are not in the data. Data columns: {', '.join(names)}."
        )
    clash = [c for c in keep if c in output_columns(task).names]
    if clash:
        raise ConfigError(
            "keep",
            f"the data already has column(s) {', '.join(clash)}, which scoring adds; "
            "choose the columns to keep without them (keep=col1,col2).",
        )
    return keep


# ---------------------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class BatchScoreResult:
    """What a batch scoring run did; also written to ``<output>/_raymlops_batch.json``."""

    model_name: str
    model_version: str
    model_run_id: str
    model_ref: str  # as given, e.g. flights@champion
    model_data_version: str  # the data the model was trained on
    data_ref: str  # as given
    data_version: str  # the immutable version that was scored (str(DataVersion))
    output: str
    rows: int
    seconds: float  # wall time of the whole run: resolving, Ray start-up, scoring, writing
    started_at: str  # ISO 8601, UTC
    finished_at: str
    threshold: float
    input_columns: dict[str, str]
    columns: list[str]  # of the output, in order
    files: list[str]
    task: dict[str, Any] = field(default_factory=dict)  # the model's (Task.describe()); {}: legacy binary

    @property
    def metadata_path(self) -> str:
        return f"{self.output}/{METADATA_FILE}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_output(filesystem: Any, folder: str, overwrite: bool) -> None:
    from pyarrow import fs

    info = filesystem.get_file_info(folder)
    if info.type == fs.FileType.NotFound:
        return
    if info.type != fs.FileType.Directory:
        raise ConfigError("output", f"{folder!r} exists and is not a folder.")
    if filesystem.get_file_info(fs.FileSelector(folder)) and not overwrite:
        raise ConfigError(
            "output",
            f"{folder!r} is not empty: choose a new folder, or pass overwrite=true to replace its contents.",
        )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def batch_score(
    model: str,
    input_ref: str,
    output: str,
    cfg: Any,
    *,
    threshold: float = 0.5,
    keep_columns: Sequence[str] | None = None,
    overwrite: bool = False,
    use_gpu: bool = False,
    concurrency: int | tuple[int, int] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> BatchScoreResult:
    """Score the data ``input_ref`` names with the registered model ``model``; write parquet to ``output``.

    Everything that can be checked is checked before Ray is touched: the model reference, the output
    folder (must be new or empty, unless ``overwrite``), the data version, and the data's columns
    against the model's inputs. A failed run removes the parts it wrote.

    Args:
        model: ``<name>@<alias>``, ``<name>@<version>`` or ``<name>`` (= ``@champion``); an empty name
            (``@challenger``) means ``cfg.registry.model_name``.
        input_ref: A data reference (``delta:<path>[@v]``, ``lakefs://...``, ``files:...``, a parquet
            path); resolved once to an immutable version, which is what is read and recorded.
        output: A folder (local path or pyarrow filesystem URI) for the parquet parts and the metadata.
        cfg: The composed job config: ``registry``, ``data.lakefs`` and ``ray`` are used.
        threshold: ``label = probability >= threshold``.
        keep_columns: Input columns copied to the output beside the scores; None keeps them all.
        overwrite: Replace the contents of a non-empty ``output``.
        use_gpu: Score with onnxruntime's CUDA provider, one GPU per actor.
        concurrency: Actor pool size (see ``score_dataset``).
        batch_size: Rows per onnxruntime call.
    """
    from raymlops.data.refs import open_backend
    from raymlops.pipeline.ray_session import connect_ray
    from raymlops.registry.mlflow_registry import ModelRegistry

    started_at, started = _now(), time.monotonic()
    check_threshold(threshold)
    ref = parse_model_ref(model, cfg.registry.get("model_name"))
    filesystem, folder = output_filesystem(output)
    _check_output(filesystem, folder, overwrite)

    registry = ModelRegistry.from_config(cfg.registry)
    version = resolve_model(registry, ref)
    label = f"{version.name} version {version.version}"
    input_columns = parse_input_columns(version.tags.get(INPUT_COLUMNS_TAG), label)
    task = task_description(version.tags.get(TASK_TAG), label)
    onnx_file = registry.local_artifact(version, "model.onnx")
    if not onnx_file.exists():
        raise ModelNotFoundError(f"{label}: model.onnx at {onnx_file}")
    registered_artifact(registry, version, "model.onnx")  # IntegrityError (audited) when altered

    backend = open_backend(input_ref, cfg.data.get("lakefs"), key="input")
    data_version = backend.resolve()
    keep = check_input_schema(backend.schema(data_version), input_columns, keep_columns, label, task)
    expected_rows = backend.num_rows(data_version)
    logger.info(
        "batch_score started model=%s version=%s run_id=%s data_version=%s rows=%d output=%s",
        version.name,
        version.version,
        version.run_id,
        data_version,
        expected_rows,
        folder,
    )

    connect_ray(cfg.ray)
    if overwrite:
        filesystem.delete_dir_contents(folder, missing_dir_ok=True)
    try:
        rows, files = score_to_parquet(
            backend.read(data_version),
            onnx_file,
            input_columns,
            output if "://" in output else folder,
            expected_rows=expected_rows,
            threshold=threshold,
            keep_columns=keep,
            use_gpu=use_gpu,
            concurrency=concurrency,
            batch_size=batch_size,
            task=task,
        )
        if rows != expected_rows:
            raise DataVersionError(
                str(data_version), f"{rows} rows were scored but it holds {expected_rows}."
            )
        schema = pa.schema(
            [
                *(backend.schema(data_version).field(c) for c in keep),
                *output_columns(task),
            ]
        )
        if not files:  # an empty version still gives a readable, typed table
            import pyarrow.parquet as pq

            files = [f"{folder}/part-empty.parquet"]
            pq.write_table(schema.empty_table(), files[0], filesystem=filesystem)
        result = BatchScoreResult(
            model_name=version.name,
            model_version=version.version,
            model_run_id=version.run_id,
            model_ref=str(ref),
            model_data_version=version.tags.get(DATA_VERSION_TAG, ""),
            data_ref=input_ref,
            data_version=str(data_version),
            output=folder if "://" not in output else output.rstrip("/"),
            rows=rows,
            seconds=round(time.monotonic() - started, 3),
            started_at=started_at,
            finished_at=_now(),
            threshold=float(threshold),
            input_columns=input_columns,
            columns=list(schema.names),
            files=files,
            task=task,
        )
        with filesystem.open_output_stream(f"{folder}/{METADATA_FILE}") as stream:
            stream.write(json.dumps(result.as_dict(), indent=2).encode())
    except BaseException:
        logger.warning("batch_score failed: removing the parts written to %s", folder)
        filesystem.delete_dir_contents(folder, missing_dir_ok=True)
        raise
    logger.info(
        "batch_score finished rows=%d seconds=%.1f rows_per_s=%.0f files=%d",
        rows,
        result.seconds,
        rows / result.seconds if result.seconds else 0.0,
        len(files),
    )
    return result
