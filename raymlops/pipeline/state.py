"""Typed, frozen outputs that stages hand to each other, gathered in one ``PipelineState``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raymlops.errors import RayMLOpsError

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

    from raymlops.data.versioning import DataVersion
    from raymlops.evaluation.metrics import GateResult
    from raymlops.features.preprocess import FittedPreprocessor
    from raymlops.tasks.base import Task

__all__ = [
    "DeployOutput",
    "EvaluateOutput",
    "ExplainOutput",
    "ExportOutput",
    "FeaturesOutput",
    "IngestOutput",
    "PipelineState",
    "RegisterOutput",
    "TrainOutput",
    "ValidateOutput",
]


def _legacy_task() -> Task:
    from raymlops.tasks.codec import LEGACY_TASK

    return LEGACY_TASK


@dataclass(frozen=True)
class IngestOutput:
    dataset: ray.data.Dataset
    version: DataVersion  # typed within the process; reading it again returns the same rows
    schema: pa.Schema
    num_rows: int
    # The same rows as one Table in this process, when ingest read them locally (``execution.*``: data
    # that fits one process); validate and features then run their kernels on it. Not cached (the step
    # cache keeps ``dataset``; a restored ingest reads as distributed).
    table: pa.Table | None = dataclasses.field(default=None, metadata={"transient": True})

    @property
    def data_version(self) -> str:
        """The version as recorded in lineage and tags, e.g. ``delta:/abs/table@3``."""
        return str(self.version)


@dataclass(frozen=True)
class ValidateOutput:
    report_path: Path
    passed: bool
    failures: tuple[str, ...]
    warnings: tuple[str, ...]
    profile_path: Path  # reference profile of the training data version (monitoring compares to it)
    html_path: Path


@dataclass(frozen=True)
class FeaturesOutput:
    train: ray.data.Dataset  # columns x (float32 vector) and y (float32), materialized
    valid: ray.data.Dataset
    test: ray.data.Dataset
    preprocessor: FittedPreprocessor
    raw_sample: pa.Table  # raw rows of the test split: ONNX parity check and sample requests
    split_rows: dict[str, int]
    train_positive_rate: float
    # Raw valid/test rows with ``label``: evaluation re-scores the champion on them and slices them.
    heldout_raw: dict[str, ray.data.Dataset] = dataclasses.field(default_factory=dict)
    background: pa.Table | None = None  # a random sample of raw train rows: the SHAP background
    train_time_range: tuple[str, str] | None = None  # first and last instant of the train split (time)
    # The problem's shape (raymlops.tasks): every later stage asks it; task_reason says why auto chose it.
    task: Task = dataclasses.field(default_factory=_legacy_task)
    task_reason: str = ""
    split_kind: str = "time"
    # The constant prediction (one output row) a model must beat: train target mean, or class shares.
    baseline_prediction: tuple[float, ...] = ()


@dataclass(frozen=True)
class TrainOutput:
    model: Any  # a fitted model family object (TorchMLP, XGBoostModel)
    history: list[dict[str, float]]  # one dict of metrics per epoch / boosting report
    checkpoint_path: str


@dataclass(frozen=True)
class EvaluateOutput:
    metrics: dict[str, float]
    baseline: dict[str, float]  # the same metrics for a constant predictor of the train prevalence
    passed: bool
    failures: tuple[str, ...] = ()
    gates: tuple[GateResult, ...] = ()
    slices: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    champion: dict[str, Any] | None = None  # {"version", "metrics"}: re-scored on the same test rows
    report_path: Path | None = None  # evaluation.json
    prediction_profile_path: Path | None = None  # test predictions' distribution (drift reference)


@dataclass(frozen=True)
class ExplainOutput:
    summary: dict[str, Any]  # method, output_space, rows, base_value, mean_abs per raw column, seconds
    summary_json: Path
    plot_png: Path
    explainer_dir: Path  # the per-request explainer, packaged with the model for /explain


@dataclass(frozen=True)
class ExportOutput:
    onnx_path: Path
    input_columns: dict[str, str]  # raw column -> "float" | "string"
    parity_max_abs_diff: float


@dataclass(frozen=True)
class RegisterOutput:
    model_name: str
    version: str
    run_id: str
    model_uri: str
    onnx_path: Path
    lifecycle: str = "candidate"  # rejected when a gate failed (on_fail=reject)
    aliases: tuple[str, ...] = ()
    card_path: Path | None = None  # model_card.html


@dataclass(frozen=True)
class DeployOutput:
    url: str
    app_name: str
    sample_answers: list[dict[str, Any]]


@dataclass(frozen=True)
class PipelineState:
    """What the stages have produced so far; each stage returns ``state.with_(name=output)``."""

    ingest: IngestOutput | None = None
    validate: ValidateOutput | None = None
    features: FeaturesOutput | None = None
    train: TrainOutput | None = None
    evaluate: EvaluateOutput | None = None
    export: ExportOutput | None = None
    explain: ExplainOutput | None = None
    register: RegisterOutput | None = None
    deploy: DeployOutput | None = None

    def require(self, name: str) -> Any:
        value = getattr(self, name)
        if value is None:
            raise RayMLOpsError(
                f"This stage needs the output of stage {name!r}, which did not run. "
                f"Add {name!r} to the job's `stages` list before it."
            )
        return value

    def with_(self, **outputs: Any) -> PipelineState:
        return dataclasses.replace(self, **outputs)
