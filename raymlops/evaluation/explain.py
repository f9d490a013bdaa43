"""The per-request explainer: permutation SHAP of an exported ONNX graph over the raw input columns.

:class:`OnnxExplainer` is model-agnostic and what serving's ``/explain`` uses: ``shap``'s Permutation
explainer with an ``Independent`` masker over a bounded background sample, running the exported graph
(preprocessing + model) in one reused onnxruntime session. Raw rows become a float matrix the masker can
mix through :class:`~raymlops.evaluation.raw_codec.RawFeatureCodec` (numerics as floats, categoricals as
vocabulary codes). The output explained is the task's (``raymlops.tasks``): binary ``probability``,
multiclass ``probabilities`` (one SHAP value per column and class), regression ``value``. Exactly
additive: ``values.sum(1) + base_values == predictions``, where ``base_values`` is the mean output over
the background.

:meth:`OnnxExplainer.save` writes a folder (``explainer/`` of a model version)::

    explainer.json       {"format": 1, "kind": "permutation", "output_space": "probability" | "value",
                          "input_columns": {column: "float" | "string"}, "codec": RawFeatureCodec.to_dict(),
                          "settings": {"max_evals": int, "seed": int}, "background_rows": int,
                          "onnx_sha256": hex digest of the graph it was built with,
                          "task": Task.describe() (absent: the flights binary task), "output": its name}
    background.parquet   the background rows, raw input columns only (the masker integrates over them)

The ONNX graph is not copied into it: :func:`load_explainer` takes its path, so loading costs one small
parquet read plus one onnxruntime session; the first explanation in a process then compiles shap's numba
kernels (~10 s on 2 cores), which :func:`warm_up` does ahead of time. ``shap`` and ``onnxruntime`` are
imported inside the functions that use them; importing this module stays light.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from raymlops.errors import ConfigError, RayMLOpsError
from raymlops.evaluation.explanation import Explanation, require_columns
from raymlops.evaluation.raw_codec import RawFeatureCodec

if TYPE_CHECKING:
    from raymlops.tasks.base import Task

__all__ = ["EXPLAINER_DIR", "OnnxExplainer", "load_explainer", "sample_rows", "warm_up"]

logger = logging.getLogger(__name__)

EXPLAINER_DIR = "explainer"
EXPLAINER_JSON = "explainer.json"
BACKGROUND_PARQUET = "background.parquet"
_FORMAT = 1
# Permutations per explained row when max_evals is not given: each costs 2 * columns + 1 masked
# evaluations of every background row. Antithetic permutations are exact for models with interactions
# of order <= 2; more of them only average out higher-order interactions.
DEFAULT_PERMUTATIONS = 4


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


def sample_rows(table: pa.Table, rows: int, rng: np.random.Generator) -> pa.Table:
    """At most ``rows`` rows of ``table``, drawn without replacement (kept in table order)."""
    if table.num_rows <= rows:
        return table
    return table.take(np.sort(rng.choice(table.num_rows, size=rows, replace=False)))


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


class OnnxExplainer:
    """Permutation SHAP of an exported ONNX pipeline's output (the task's), over raw input columns.

    ``model``: the graph's bytes or path (raw columns in, the task's output out: ``probability`` [N],
    ``probabilities`` [N, K] or ``value`` [N]); ``task``: None is the flights binary task (a version
    registered before tasks existed). ``background``: raw rows
    the masker integrates over, sampled down to ``max_background`` with ``seed``; explaining costs
    ``rows * max_evals * background_rows`` graph rows. ``max_evals`` (per row, at least ``2 * columns + 1``)
    defaults to ``DEFAULT_PERMUTATIONS`` antithetic permutations. The session runs on the CPU with
    ``threads`` intra-op threads. :meth:`explain` reseeds numpy's global RNG around shap (and restores it)
    under a process-wide lock, so the same rows give the same values and threads take turns. The first
    explanation in a process also compiles shap's kernels (~10 s): call :func:`warm_up` ahead of it.
    """

    method = "permutation"

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
        task: Task | None = None,
    ) -> None:
        import onnxruntime as ort

        from raymlops.tasks.codec import LEGACY_TASK

        self.task = task if task is not None else LEGACY_TASK
        spec = self.task.output()
        self.output, self.width = spec.name, spec.width
        self.output_space = self.task.shap_spaces["permutation"]
        # One SHAP value per class: the classes name the outputs (strings, as the answers' keys).
        self.classes = tuple(str(c) for c in getattr(self.task, "classes", ())) if self.width > 1 else ()

        if max_background < 1:
            raise ConfigError("explain.background_rows", f"must be >= 1, got {max_background}.")
        self.input_columns = dict(input_columns)
        require_columns(background, self.input_columns, "background")
        self.background = sample_rows(
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
        if inputs != sorted(self.input_columns) or self.output not in outputs:
            raise RayMLOpsError(
                f"The ONNX graph takes {inputs} and returns {outputs}; the explainer expects the raw columns "
                f"{sorted(self.input_columns)} and a {self.output!r} output (a {self.task.name} task)."
            )

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.input_columns)

    def _run(self, codec: RawFeatureCodec, codes: np.ndarray) -> np.ndarray:
        result = self.session.run([self.output], codec.decode(codes))[0]
        return np.asarray(result, dtype=np.float64).reshape((-1, self.width) if self.width > 1 else (-1,))

    def predict(self, table: pa.Table) -> np.ndarray:
        """The graph's output (float64 [rows], or [rows, classes]) for raw rows."""
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

        def model_output(batch: np.ndarray) -> np.ndarray:
            return self._run(codec, batch)

        masker = shap.maskers.Independent(self._background_codes, max_samples=len(self._background_codes))
        with _numpy_seed(self.seed):
            explainer = shap.explainers.Permutation(
                model_output, masker, feature_names=list(self.columns), seed=self.seed
            )
            result = explainer(codes, max_evals=self.max_evals, silent=True)
        rows, columns = table.num_rows, len(self.columns)
        shape, base_shape = (
            ((rows, columns, self.width), (rows, self.width))
            if self.width > 1
            else ((rows, columns), (rows,))
        )
        return Explanation(
            values=np.asarray(result.values, dtype=np.float64).reshape(shape),
            base_values=np.asarray(result.base_values, dtype=np.float64).reshape(base_shape),
            predictions=model_output(codes),
            columns=self.columns,
            method=self.method,
            output_space=self.output_space,
            seconds=time.perf_counter() - started,
            classes=self.classes,
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
            "task": self.task.describe(),
            "output": self.output,
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
    from raymlops.tasks.codec import task_from_dict

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
        task=task_from_dict(manifest.get("task") or {}),  # absent: saved before tasks, flights binary
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
