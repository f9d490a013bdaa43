"""SHAP explanations over the *raw* input columns: a global summary per model, and a per-request explainer.

Every value here is per raw input column (``carrier``, never the one-hot ``carrier=AA``), so a summary
reads in the data's own terms and the per-request answer matches what the client sent.

* :class:`OnnxExplainer` (model-agnostic, what serving's ``/explain`` uses): ``shap``'s Permutation
  explainer with an ``Independent`` masker over a bounded background sample, running the exported ONNX
  graph (preprocessing + model) in one reused onnxruntime session. Raw rows become a float matrix the
  masker can mix through :class:`RawFeatureCodec` (numerics as floats, categoricals as vocabulary codes).
  Output space: probability. Exactly additive: ``values.sum(1) + base_values == predictions``, where
  ``base_values`` is the mean probability over the background.
* :class:`TreeShap` (XGBoost): exact path-dependent Tree SHAP on the one-hot feature matrix, in log-odds
  (margin) space; a raw column's value is the sum over its one-hot features (numerics map one to one).
  Additive: ``values.sum(1) + base_values == margin``.

:func:`explain_model` is the pipeline stage's entry point. Under ``out_dir`` it writes::

    shap_summary.json      GlobalShap.to_dict(): method, output_space, rows, base_value, seconds,
                           mean_abs (raw column -> mean |SHAP|, largest first)
    shap_summary.png       beeswarm of the explained rows, coloured by feature value
    explainer/             the per-request explainer (OnnxExplainer.save), for every model family:
      explainer.json       {"format": 1, "kind": "permutation", "output_space": "probability",
                            "input_columns": {column: "float" | "string"}, "codec": RawFeatureCodec.to_dict(),
                            "settings": {"max_evals": int, "seed": int}, "background_rows": int,
                            "onnx_sha256": hex digest of the graph it was built with}
      background.parquet   the background rows, raw input columns only (the masker integrates over them)

The ONNX graph is not copied into ``explainer/``: :func:`load_explainer` takes its path, so loading costs
one small parquet read plus one onnxruntime session; the first explanation in a process then compiles
shap's numba kernels (~10 s on 2 cores), which :func:`warm_up` does ahead of time. ``shap``,
``onnxruntime``, ``xgboost`` and ``matplotlib`` are imported inside the functions that use them;
importing this module stays light.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raymlops.errors import ConfigError, RayMLOpsError, RequestError
from raymlops.features.preprocess import FittedPreprocessor, numeric_column

__all__ = [
    "EXPLAINER_DIR",
    "ExplainResult",
    "Explanation",
    "GlobalShap",
    "OnnxExplainer",
    "RawFeatureCodec",
    "TreeShap",
    "explain_model",
    "global_shap",
    "load_explainer",
    "summary_plot",
    "warm_up",
]

logger = logging.getLogger(__name__)

EXPLAINER_DIR = "explainer"
EXPLAINER_JSON = "explainer.json"
BACKGROUND_PARQUET = "background.parquet"
SUMMARY_JSON = "shap_summary.json"
SUMMARY_PNG = "shap_summary.png"
_FORMAT = 1
# Permutations per explained row when max_evals is not given: each costs 2 * columns + 1 masked
# evaluations of every background row. Antithetic permutations are exact for models with interactions
# of order <= 2; more of them only average out higher-order interactions.
DEFAULT_PERMUTATIONS = 4
_PROBABILITY_OUTPUT = "probability"  # = raymlops.models.export.PROBABILITY_OUTPUT (that imports onnx code)


# -- raw rows <-> masker matrix -----------------------------------------------------------------------


def require_columns(table: pa.Table, input_columns: Mapping[str, str], what: str = "table") -> None:
    """A :class:`RequestError` unless ``table`` has rows and every input column."""
    missing = [c for c in input_columns if c not in table.column_names]
    if missing:
        raise RequestError(f"{what}: missing input column(s): {', '.join(missing)}")
    if table.num_rows == 0:
        raise RequestError(f"{what} has no rows.")


def _strings(column: pa.ChunkedArray) -> list[str]:
    """A categorical column as the ONNX graph sees it (``onnx_feeds``): ``str(value)``, null -> ''."""
    return ["" if v is None else str(v) for v in column.to_pylist()]


def _floats(table: pa.Table, name: str) -> np.ndarray:
    try:
        return numeric_column(table[name])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise RequestError(
            f"column {name!r} must be numeric (or null), got {table[name].type}: {exc}"
        ) from exc


@dataclass(frozen=True)
class RawFeatureCodec:
    """Raw input columns <-> a float64 matrix [rows, columns] that a SHAP masker can mix row by row.

    Numeric columns are their float32 values (null -> NaN, imputed by the graph); categorical columns are
    integer codes into ``vocabularies[column]`` (null -> ''). :meth:`decode` turns a (masked) matrix back
    into ONNX feeds. Codes only ever get appended (:meth:`extend`), so a background encoded with a codec
    keeps its meaning under every extension of it.
    """

    input_columns: dict[str, str]  # raw column -> "float" | "string", in the graph's order
    vocabularies: dict[str, tuple[str, ...]] = field(default_factory=dict)  # categorical column -> values

    @classmethod
    def fit(cls, input_columns: Mapping[str, str], *tables: pa.Table) -> RawFeatureCodec:
        """A codec whose vocabularies hold every value of ``tables`` (sorted, so the codes are stable)."""
        empty: dict[str, tuple[str, ...]] = {c: () for c, kind in input_columns.items() if kind != "float"}
        return cls(dict(input_columns), empty).extend(*tables)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.input_columns)

    def extend(self, *tables: pa.Table) -> RawFeatureCodec:
        """This codec with the categorical values it has not seen appended (sorted) to its vocabularies."""
        vocabularies = dict(self.vocabularies)
        for name, known in self.vocabularies.items():
            seen = set(known)
            new: set[str] = set()
            for table in tables:
                require_columns(table, {name: "string"})
                new.update(v for v in _strings(table[name]) if v not in seen)
            if new:
                vocabularies[name] = (*known, *sorted(new))
        return (
            self if vocabularies == self.vocabularies else RawFeatureCodec(self.input_columns, vocabularies)
        )

    def encode(self, table: pa.Table) -> np.ndarray:
        """Raw rows -> float64 [rows, columns]; categorical values must be in the vocabulary (extend)."""
        require_columns(table, self.input_columns)
        codes = np.empty((table.num_rows, len(self.input_columns)), dtype=np.float64)
        for j, (name, kind) in enumerate(self.input_columns.items()):
            if kind == "float":
                codes[:, j] = _floats(table, name)
                continue
            index = {v: i for i, v in enumerate(self.vocabularies[name])}
            values = _strings(table[name])
            unknown = sorted({v for v in values if v not in index})
            if unknown:
                raise RequestError(
                    f"column {name!r}: value(s) {', '.join(map(repr, unknown[:5]))} are not in the codec's "
                    "vocabulary; extend() the codec with the table first."
                )
            codes[:, j] = [index[v] for v in values]
        return codes

    def decode(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """A matrix from :meth:`encode` (or a masker) -> the graph's feeds, as ``onnx_feeds`` makes them."""
        codes = np.asarray(codes, dtype=np.float64).reshape(-1, len(self.input_columns))
        feeds = {}
        for j, (name, kind) in enumerate(self.input_columns.items()):
            if kind == "float":
                feeds[name] = codes[:, j].astype(np.float32).reshape(-1, 1)
            else:
                vocabulary = np.asarray(self.vocabularies[name], dtype=object)
                feeds[name] = vocabulary[codes[:, j].astype(np.int64)].reshape(-1, 1)
        return feeds

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_columns": dict(self.input_columns),
            "vocabularies": {c: list(v) for c, v in self.vocabularies.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RawFeatureCodec:
        input_columns = dict(data["input_columns"])
        vocabularies = {c: tuple(str(v) for v in values) for c, values in data["vocabularies"].items()}
        expected = {c for c, kind in input_columns.items() if kind != "float"}
        if set(vocabularies) != expected:
            raise RayMLOpsError(
                f"codec: vocabularies for {sorted(vocabularies)} but categorical columns {sorted(expected)}."
            )
        return cls(input_columns, vocabularies)


# -- results --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Explanation:
    """SHAP values of some rows: ``values.sum(1) + base_values == predictions`` (in ``output_space``)."""

    values: np.ndarray  # float64 [rows, columns]
    base_values: np.ndarray  # float64 [rows]
    predictions: np.ndarray  # float64 [rows]: probability, or the margin for log_odds
    columns: tuple[str, ...]  # raw input columns, the order of values' columns
    method: str  # "permutation" | "tree"
    output_space: str  # "probability" | "log_odds"
    seconds: float  # wall time of the explanation

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    def records(self) -> list[dict[str, Any]]:
        """One JSON-able dict per row: prediction, base_value and ``shap`` (column -> value)."""
        return [
            {
                "prediction": float(self.predictions[i]),
                "base_value": float(self.base_values[i]),
                "shap": {c: float(v) for c, v in zip(self.columns, self.values[i], strict=True)},
            }
            for i in range(self.rows)
        ]


@dataclass(frozen=True)
class GlobalShap:
    """Mean |SHAP| per raw column over the explained rows, largest first."""

    mean_abs: dict[str, float]
    rows: int
    method: str  # "tree" | "permutation"
    output_space: str  # "log_odds" | "probability"
    base_value: float  # mean of the rows' base values
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "output_space": self.output_space,
            "rows": self.rows,
            "base_value": self.base_value,
            "seconds": self.seconds,
            "mean_abs": dict(self.mean_abs),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GlobalShap:
        return cls(
            mean_abs={str(k): float(v) for k, v in data["mean_abs"].items()},
            rows=int(data["rows"]),
            method=str(data["method"]),
            output_space=str(data["output_space"]),
            base_value=float(data["base_value"]),
            seconds=float(data["seconds"]),
        )


def global_shap(explanation: Explanation) -> GlobalShap:
    """The global summary of an :class:`Explanation`: mean |SHAP| per raw column, sorted descending."""
    means = np.abs(explanation.values).mean(axis=0)
    order = sorted(range(len(explanation.columns)), key=lambda j: (-means[j], explanation.columns[j]))
    return GlobalShap(
        mean_abs={explanation.columns[j]: float(means[j]) for j in order},
        rows=explanation.rows,
        method=explanation.method,
        output_space=explanation.output_space,
        base_value=float(np.mean(explanation.base_values)),
        seconds=explanation.seconds,
    )


# -- the per-request explainer ----------------------------------------------------------------------------


_SHAP_LOCK = threading.Lock()  # numpy's global RNG is process-wide: one seeded shap call at a time


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """shap's Permutation explainer draws from numpy's global RNG: seed it, then put the caller's back.

    Held under a process-wide lock, so concurrent explanations (threads of a replica) run one at a time
    and each stays reproducible.
    """
    with _SHAP_LOCK:
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


_WARMED: dict[str, float] = {}


def _row_sums(batch: np.ndarray) -> np.ndarray:
    return np.asarray(batch, dtype=np.float64).sum(axis=1)


def warm_up() -> float:
    """Import shap and have numba compile its permutation path now; returns the seconds it took.

    The first Permutation explanation in a process spends ~10 s (2 cores) compiling shap's masking
    kernels (numba, not cached on disk); later ones do not. Serving calls this when a replica starts so
    that no request pays it; :func:`explain_model` calls it so that ``seconds`` times the explanation.
    Once per process: later calls return 0.
    """
    if _WARMED:
        return 0.0
    import shap

    started = time.perf_counter()
    background = np.zeros((4, 2))
    background[:, 0] = np.arange(4)
    with _numpy_seed(0):
        explainer = shap.explainers.Permutation(_row_sums, shap.maskers.Independent(background), seed=0)
        explainer(np.ones((1, 2)), max_evals=5, silent=True)  # float64 in and out, as OnnxExplainer
    _WARMED["seconds"] = time.perf_counter() - started
    return _WARMED["seconds"]


def _sample(table: pa.Table, rows: int, rng: np.random.Generator) -> pa.Table:
    """At most ``rows`` rows of ``table``, drawn without replacement (kept in table order)."""
    if table.num_rows <= rows:
        return table
    return table.take(np.sort(rng.choice(table.num_rows, size=rows, replace=False)))


class OnnxExplainer:
    """Permutation SHAP (probability space) of an exported ONNX pipeline, over raw input columns.

    ``model``: the graph's bytes or path (raw columns in, ``probability`` [N] out). ``background``: raw rows
    the masker integrates over, sampled down to ``max_background`` with ``seed``; explaining costs
    ``rows * max_evals * background_rows`` graph rows. ``max_evals`` (per row, at least ``2 * columns + 1``)
    defaults to ``DEFAULT_PERMUTATIONS`` antithetic permutations. The session runs on the CPU with
    ``threads`` intra-op threads. :meth:`explain` reseeds numpy's global RNG around shap (and restores it)
    under a process-wide lock, so the same rows give the same values and threads take turns. The first
    explanation in a process also compiles shap's kernels (~10 s): call :func:`warm_up` ahead of it.
    """

    method = "permutation"
    output_space = "probability"

    def __init__(
        self,
        model: bytes | str | Path,
        input_columns: Mapping[str, str],
        background: pa.Table,
        *,
        max_background: int = 100,
        max_evals: int | None = None,
        seed: int = 0,
        threads: int = 1,
        codec: RawFeatureCodec | None = None,
    ) -> None:
        import onnxruntime as ort

        if max_background < 1:
            raise ConfigError("explain.background_rows", f"must be >= 1, got {max_background}.")
        self.input_columns = dict(input_columns)
        require_columns(background, self.input_columns, "background")
        self.background = _sample(
            background.select(list(self.input_columns)), max_background, np.random.default_rng(seed)
        )
        self.codec = (codec or RawFeatureCodec.fit(self.input_columns)).extend(self.background)
        self._background_codes = self.codec.encode(self.background)
        minimum = 2 * len(self.input_columns) + 1
        self.max_evals = DEFAULT_PERMUTATIONS * minimum if max_evals is None else int(max_evals)
        if self.max_evals < minimum:
            raise ConfigError(
                "explain.max_evals", f"must be >= 2 * columns + 1 = {minimum}, got {self.max_evals}."
            )
        self.seed = seed
        payload = model if isinstance(model, bytes) else Path(model).read_bytes()
        self.onnx_sha256 = hashlib.sha256(payload).hexdigest()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(payload, sess_options=options, providers=["CPUExecutionProvider"])
        inputs = sorted(i.name for i in self.session.get_inputs())
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != sorted(self.input_columns) or _PROBABILITY_OUTPUT not in outputs:
            raise RayMLOpsError(
                f"The ONNX graph takes {inputs} and returns {outputs}; the explainer expects the raw columns "
                f"{sorted(self.input_columns)} and a {_PROBABILITY_OUTPUT!r} output."
            )

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.input_columns)

    def _run(self, codec: RawFeatureCodec, codes: np.ndarray) -> np.ndarray:
        result = self.session.run([_PROBABILITY_OUTPUT], codec.decode(codes))[0]
        return np.asarray(result, dtype=np.float64).reshape(-1)

    def predict(self, table: pa.Table) -> np.ndarray:
        """The graph's probabilities (float64 [rows]) for raw rows."""
        require_columns(table, self.input_columns)
        table = table.select(list(self.input_columns))
        codec = self.codec.extend(table)
        return self._run(codec, codec.encode(table))

    def explain(self, table: pa.Table) -> Explanation:
        """SHAP values of every row of ``table`` (extra columns are ignored)."""
        import shap

        require_columns(table, self.input_columns)
        started = time.perf_counter()
        table = table.select(list(self.input_columns))
        codec = self.codec.extend(table)  # request values unseen in the background get new codes
        codes = codec.encode(table)

        def probability(batch: np.ndarray) -> np.ndarray:
            return self._run(codec, batch)

        masker = shap.maskers.Independent(self._background_codes, max_samples=len(self._background_codes))
        with _numpy_seed(self.seed):
            explainer = shap.explainers.Permutation(
                probability, masker, feature_names=list(self.columns), seed=self.seed
            )
            result = explainer(codes, max_evals=self.max_evals, silent=True)
        return Explanation(
            values=np.asarray(result.values, dtype=np.float64).reshape(table.num_rows, -1),
            base_values=np.asarray(result.base_values, dtype=np.float64).reshape(-1),
            predictions=probability(codes),
            columns=self.columns,
            method=self.method,
            output_space=self.output_space,
            seconds=time.perf_counter() - started,
        )

    def save(self, folder: Path) -> Path:
        """Write ``explainer.json`` and ``background.parquet`` into ``folder`` (see the module docstring)."""
        import pyarrow.parquet as pq

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(self.background, folder / BACKGROUND_PARQUET)
        manifest = {
            "format": _FORMAT,
            "kind": self.method,
            "output_space": self.output_space,
            "input_columns": dict(self.input_columns),
            "codec": self.codec.to_dict(),
            "settings": {"max_evals": self.max_evals, "seed": self.seed},
            "background_rows": self.background.num_rows,
            "onnx_sha256": self.onnx_sha256,
        }
        (folder / EXPLAINER_JSON).write_text(json.dumps(manifest, indent=2))
        return folder


def load_explainer(folder: Path, onnx_path: Path | str | bytes, *, threads: int = 1) -> OnnxExplainer:
    """The explainer :meth:`OnnxExplainer.save` wrote to ``folder``, over the graph at ``onnx_path``."""
    import pyarrow.parquet as pq

    from raymlops.security.crypto import read_maybe_encrypted

    folder = Path(folder)
    try:
        manifest = json.loads(read_maybe_encrypted(folder / EXPLAINER_JSON))
        background = pq.read_table(pa.BufferReader(read_maybe_encrypted(folder / BACKGROUND_PARQUET)))
    except (OSError, ValueError) as exc:
        raise RayMLOpsError(f"Cannot read the explainer saved in {folder}: {exc}") from exc
    if manifest.get("format") != _FORMAT or manifest.get("kind") != OnnxExplainer.method:
        raise RayMLOpsError(
            f"{folder / EXPLAINER_JSON}: format {manifest.get('format')!r} kind {manifest.get('kind')!r}; "
            f"this version reads format {_FORMAT} kind {OnnxExplainer.method!r}."
        )
    settings = manifest["settings"]
    explainer = OnnxExplainer(
        onnx_path,
        manifest["input_columns"],
        background,
        max_background=max(background.num_rows, 1),
        max_evals=int(settings["max_evals"]),
        seed=int(settings["seed"]),
        threads=threads,
        codec=RawFeatureCodec.from_dict(manifest["codec"]),
    )
    if explainer.onnx_sha256 != manifest.get("onnx_sha256"):
        logger.warning(
            "explainer in %s was saved for another ONNX graph (sha256 %s, now %s): the background still "
            "applies if the input columns match, which they do.",
            folder,
            manifest.get("onnx_sha256"),
            explainer.onnx_sha256,
        )
    return explainer


# -- XGBoost ----------------------------------------------------------------------------------------------


def _booster(model: Any) -> Any:
    """The fitted xgboost Booster of ``model`` (an XGBoostModel's ``booster_``, or a Booster), else None."""
    booster = getattr(model, "booster_", None)
    if booster is not None:
        return booster
    if type(model).__name__ == "Booster" and hasattr(model, "get_dump"):
        return model
    return None


class TreeShap:
    """Exact Tree SHAP of an XGBoost model in log-odds space, summed from one-hot features to raw columns."""

    method = "tree"
    output_space = "log_odds"

    def __init__(self, model: Any, pre: FittedPreprocessor) -> None:
        import shap

        booster = _booster(model)
        if booster is None:
            raise RayMLOpsError(f"TreeShap needs a fitted XGBoost model, got {type(model).__name__}.")
        self.booster, self.pre = booster, pre
        # No background: path-dependent Tree SHAP, whose base value is the training data's mean margin.
        self._explainer = shap.TreeExplainer(booster)
        index = {name: j for j, name in enumerate(pre.feature_names)}
        self._groups: dict[str, list[int]] = {name: [index[name]] for name in pre.numeric}
        for column, values in zip(pre.categorical, pre.categories, strict=True):
            self._groups[column] = [index[f"{column}={v}"] for v in values]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.pre.input_columns)

    def explain(self, table: pa.Table) -> Explanation:
        import xgboost

        require_columns(table, self.pre.input_columns)
        started = time.perf_counter()
        features = self.pre.transform(table)
        contributions = np.asarray(self._explainer.shap_values(features), dtype=np.float64)
        contributions = contributions.reshape(table.num_rows, -1)
        values = np.zeros((table.num_rows, len(self._groups)), dtype=np.float64)
        for j, positions in enumerate(self._groups.values()):
            if positions:
                values[:, j] = contributions[:, positions].sum(axis=1)
        base = float(np.ravel(self._explainer.expected_value)[0])
        margin = self.booster.predict(xgboost.DMatrix(features), output_margin=True)
        return Explanation(
            values=values,
            base_values=np.full(table.num_rows, base),
            predictions=np.asarray(margin, dtype=np.float64).reshape(-1),
            columns=self.columns,
            method=self.method,
            output_space=self.output_space,
            seconds=time.perf_counter() - started,
        )


from raymlops.evaluation.shap_plot import summary_plot  # noqa: E402  (re-exported)

# -- the pipeline stage's entry point ---------------------------------------------------------------------


@dataclass(frozen=True)
class ExplainResult:
    summary: GlobalShap
    summary_json: Path  # out_dir/shap_summary.json
    plot_png: Path  # out_dir/shap_summary.png
    explainer_dir: Path  # out_dir/explainer: the per-request explainer, for load_explainer


def explain_model(
    model: Any,
    pre: FittedPreprocessor,
    onnx_path: Path,
    background: pa.Table,
    rows: pa.Table,
    out_dir: Path,
    *,
    background_rows: int = 100,
    explain_rows: int = 100,
    seed: int = 0,
) -> ExplainResult:
    """Explain ``model`` globally and save its per-request explainer (see the module docstring for files).

    ``background`` (train rows) and ``rows`` (the rows to summarise, e.g. the test split) are sampled down
    to ``background_rows`` and ``explain_rows`` with ``seed``. XGBoost models (anything with a fitted
    ``booster_``) get exact Tree SHAP in log-odds; every other model permutation SHAP of its ONNX graph
    in probability. The saved per-request explainer is always the ONNX one: serving has only the graph.
    """
    for key, value in (("background_rows", background_rows), ("rows", explain_rows)):
        if value < 1:
            raise ConfigError(f"explain.{key}", f"must be >= 1, got {value}.")
    columns = pre.input_columns
    require_columns(background, columns, "background")
    require_columns(rows, columns, "rows to explain")
    rng = np.random.default_rng(seed)
    background = _sample(background.select(list(columns)), background_rows, rng)
    rows = _sample(rows.select(list(columns)), explain_rows, rng)
    out_dir = Path(out_dir)
    per_request = OnnxExplainer(onnx_path, columns, background, max_background=background_rows, seed=seed)
    explainer_dir = per_request.save(out_dir / EXPLAINER_DIR)
    explainer: TreeShap | OnnxExplainer
    if _booster(model) is not None:
        explainer = TreeShap(model, pre)
    else:
        explainer = per_request
        compile_seconds = warm_up()
        if compile_seconds:
            logger.info("shap permutation kernels compiled in %.1f s (once per process)", compile_seconds)
    explanation = explainer.explain(rows)
    summary = global_shap(explanation)
    summary_json = out_dir / SUMMARY_JSON
    summary_json.write_text(summary.to_json())
    plot_png = summary_plot(explanation, rows, out_dir / SUMMARY_PNG)
    top = ", ".join(f"{c}={v:.3g}" for c, v in list(summary.mean_abs.items())[:5])
    logger.info(
        "shap method=%s rows=%d background=%d seconds=%.2f mean_abs(%s): %s",
        summary.method,
        summary.rows,
        background.num_rows,
        summary.seconds,
        summary.output_space,
        top,
    )
    return ExplainResult(summary, summary_json, plot_png, explainer_dir)
