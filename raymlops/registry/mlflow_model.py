"""Every registered version is also an MLflow model: its folder holds an ``MLmodel`` (the ``python_function``
flavor, loaded by this module), the raw-column signature and, when artifacts are not encrypted, an input
example of a few test rows. So ``mlflow.pyfunc.load_model("models:/NAME@ALIAS")`` and
``mlflow models serve -m models:/NAME@ALIAS --env-manager local`` work on any raymlops version.

``predict`` answers exactly what ``POST /v1/models/NAME/predict`` answers, by the same code: the request
records checked by the v1 protocol (``records_to_inputs``), the graph run by the serving ``LoadedModel``
(which reads the bytes through ``read_artifact``: decrypted, checked against the registered digest), the
rows answered by the version's task (``Task.answers``). Encrypted artifacts decrypt with the KEKs in
``$RAYMLOPS_KEK`` (or the connected Ray cluster's); without them the load is refused with a
``ConfigError`` naming ``security.encryption.kek_file``. The MLflow files themselves hold no data and are
never encrypted; an encrypting job writes no input example (its rows would be plaintext training data).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raymlops.errors import DeploymentError, RequestError

if TYPE_CHECKING:
    from raymlops.serving.onnx_model import LoadedModel

__all__ = ["LOADER_MODULE", "MLFLOW_FILES", "RaymlopsPyfunc", "example_rows", "write_mlflow_model"]

logger = logging.getLogger(__name__)

LOADER_MODULE = __name__  # what the MLmodel's python_function flavor names: _load_pyfunc below
ONNX_FILE = "model.onnx"
# The files ``write_mlflow_model`` may add to a version's model folder (the examples only without
# encryption); mlflow.pyfunc.save_model writes them, registry.log_artifact copies them in.
MLFLOW_FILES = (
    "MLmodel",
    "conda.yaml",
    "python_env.yaml",
    "requirements.txt",
    "input_example.json",
    "serving_input_example.json",
)
# A DataFrame of more rows than this is scored in several passes (the v1 limit is per request).
_MAX_ROWS = 100_000


def _signature(input_columns: Mapping[str, str]) -> Any:  # -> mlflow.models.ModelSignature
    """The raw columns as MLflow sees them: ``float`` -> double, ``string`` -> string (null allowed)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    kinds = {"float": "double", "string": "string"}
    return ModelSignature(inputs=Schema([ColSpec(kinds[kind], name) for name, kind in input_columns.items()]))


def _requirements() -> list[str]:
    """The pip requirements MLflow records: this package (which brings onnxruntime and the rest) and
    MLflow itself, at the versions that wrote the model."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("raymlops", "mlflow"):
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            out.append(dist)
    return out


def write_mlflow_model(
    out: Path,
    *,
    name: str,
    version: str,
    input_columns: Mapping[str, str],
    task: Mapping[str, Any],
    digest: str,
    data_version: str = "",
    example_rows: Sequence[Mapping[str, Any]] = (),
    onnx_file: str = ONNX_FILE,
) -> list[Path]:
    """Write the MLflow files of a version (``MLFLOW_FILES``) into the new folder ``out``; their paths.

    Args:
        out: A folder that does not exist yet (``mlflow.pyfunc.save_model`` refuses an existing one).
        name, version: The registered model version (messages and the spec the loader builds).
        input_columns: The graph's raw inputs, column -> ``"float"`` | ``"string"``: the signature.
        task: The version's ``Task.describe()`` (its answers' shape).
        digest: SHA-256 of ``model.onnx``'s plaintext, checked at every load ("" : not checked).
        data_version: The training data's version, kept for the spec.
        example_rows: A few raw rows (input columns only are kept) for the input example; none: no example.
        onnx_file: The graph's file name in the version's folder.
    """
    import mlflow.pyfunc
    import pandas as pd

    example = None
    if example_rows:
        example = pd.DataFrame([{c: row.get(c) for c in input_columns} for row in example_rows])
        for column, kind in input_columns.items():  # the signature's types, nulls kept
            example[column] = example[column].astype("float64" if kind == "float" else "object")
    config = {
        "name": name,
        "version": str(version),
        "input_columns": dict(input_columns),
        "task": dict(task),
        "digest": digest,
        "data_version": data_version,
        "onnx": onnx_file,
    }
    with warnings.catch_warnings():
        # Without rows (an encrypting job) MLflow warns that an example helps: leaving it out is deliberate.
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        mlflow.pyfunc.save_model(
            path=str(out),
            loader_module=LOADER_MODULE,
            signature=_signature(input_columns),
            input_example=example,
            pip_requirements=_requirements(),
            model_config=config,
        )
    return sorted(p for p in out.iterdir() if p.is_file())


def example_rows(
    rows: Sequence[Mapping[str, Any]], input_columns: Mapping[str, str], n: int = 3
) -> list[dict]:
    """``n`` raw rows for the input example, complete ones first (a null is NaN in MLflow's example file,
    which strict JSON readers refuse), each value in its signature type (a column served as ``string``
    may hold ints in the table: the graph reads ``str(v)``)."""
    typed = [
        {
            c: None if row.get(c) is None else (float if k == "float" else str)(row[c])
            for c, k in input_columns.items()
        }
        for row in rows
    ]
    complete = [r for r in typed if all(v is not None for v in r.values())]
    return (complete + [r for r in typed if r not in complete])[:n]


class RaymlopsPyfunc:
    """What ``mlflow.pyfunc.load_model`` wraps: one version's graph and task, answering as ``/v1`` does."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One answer per row, as ``/v1/models/NAME/predict`` gives it (binary ``probability`` and
        ``label``; multiclass ``label`` and ``probabilities``; regression ``value``).

        ``model_input``: a DataFrame of the raw columns (missing values as NaN / None), or the v1
        records (a list of dicts). Raises ``RequestError`` naming the row and column of a bad value.
        """
        from raymlops.serving.protocols.v1 import records_to_inputs

        records = _records(model_input)
        spec = self.model.spec
        answers: list[dict[str, Any]] = []
        for start in range(0, max(len(records), 1), _MAX_ROWS):
            inputs = records_to_inputs(records[start : start + _MAX_ROWS], spec.input_columns, _MAX_ROWS)
            answers += spec.task_obj.answers(self.model.predict_inputs(inputs), spec.threshold)
        return answers


def _records(model_input: Any) -> list[Any]:
    """The v1 records of a pyfunc input: a DataFrame's rows with NaN / NA as null (JSON's missing value),
    a dict of columns, or records as they are."""
    import pandas as pd

    if isinstance(model_input, Mapping):
        model_input = pd.DataFrame(dict(model_input))
    if isinstance(model_input, pd.DataFrame):
        frame = model_input.astype(object).where(model_input.notna(), None)
        return [{str(k): _native(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
    if isinstance(model_input, list):
        return model_input
    raise RequestError(
        f"model input must be a pandas DataFrame of the raw columns or a list of records, "
        f"got {type(model_input).__name__}."
    )


def _native(value: Any) -> Any:
    """A numpy scalar as the Python value the v1 checks take (JSON never holds numpy types)."""
    item = getattr(value, "item", None)
    value = item() if callable(item) else value
    return None if isinstance(value, float) and math.isnan(value) else value


def _load_pyfunc(path: str, model_config: Mapping[str, Any] | None = None) -> RaymlopsPyfunc:
    """MLflow's entry point (the ``loader_module`` contract): the version in the model folder ``path``."""
    from raymlops.serving.onnx_model import LoadedModel
    from raymlops.serving.spec import ModelSpec

    if not model_config:
        raise DeploymentError(
            f"{path}/MLmodel has no model_config: it was not written by raymlops "
            "(raymlops.registry.mlflow_model.write_mlflow_model); register the model again."
        )
    spec = ModelSpec(
        name=str(model_config["name"]),
        version=str(model_config["version"]),
        onnx_path=str(Path(path) / str(model_config.get("onnx", ONNX_FILE))),
        data_version=str(model_config.get("data_version", "")),
        input_columns=dict(model_config["input_columns"]),
        digest=str(model_config.get("digest", "")),
        task=dict(model_config.get("task") or {}),
    )
    return RaymlopsPyfunc(LoadedModel(spec))
