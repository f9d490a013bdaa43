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

    from raymlops.features.preprocess import FittedPreprocessor

__all__ = [
    "DeployOutput",
    "EvaluateOutput",
    "ExportOutput",
    "FeaturesOutput",
    "IngestOutput",
    "PipelineState",
    "RegisterOutput",
    "TrainOutput",
    "ValidateOutput",
]


@dataclass(frozen=True)
class IngestOutput:
    dataset: ray.data.Dataset
    data_version: str  # e.g. "delta:/abs/table@3": reading it again returns the same rows
    schema: pa.Schema
    num_rows: int


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
