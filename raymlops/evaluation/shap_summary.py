"""The explain stage's work: global SHAP per raw input column, its plot, and the per-request explainer.

:func:`explain_model` writes under ``out_dir``::

    shap_summary.json      GlobalShap.to_dict(): method, output_space, rows, base_value, seconds,
                           mean_abs (raw column -> mean |SHAP|, largest first); multiclass: summed over
                           the classes ("aggregation" says so), with per_class and base_values by class
    shap_summary.png       beeswarm of the explained rows, coloured by feature value
    explainer/             the per-request explainer (OnnxExplainer.save, raymlops.evaluation.explain),
                           for every model family: serving answers ``/explain`` with it

The global summary comes from the family's own ``global_explainer`` when it has one (exact Tree SHAP in
the task's margin space for XGBoost), else from permutation SHAP of the exported graph's output (the
task's: probability, each class's probability, or the value).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from raymlops.errors import ConfigError
from raymlops.evaluation.explain import EXPLAINER_DIR, OnnxExplainer, sample_rows, warm_up
from raymlops.evaluation.explanation import GlobalShap, global_shap, require_columns
from raymlops.evaluation.shap_plot import summary_plot
from raymlops.features.preprocess import FittedPreprocessor

if TYPE_CHECKING:
    from raymlops.tasks.base import Task

__all__ = ["SUMMARY_JSON", "SUMMARY_PNG", "ExplainResult", "explain_model"]

logger = logging.getLogger(__name__)

SUMMARY_JSON = "shap_summary.json"
SUMMARY_PNG = "shap_summary.png"


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
    task: Task | None = None,
) -> ExplainResult:
    """Explain ``model`` globally and save its per-request explainer (see the module docstring for files).

    ``model`` is a fitted model family. ``background`` (train rows) and ``rows`` (the rows to summarise,
    e.g. the test split) are sampled down to ``background_rows`` and ``explain_rows`` with ``seed``. The
    summary uses ``model.global_explainer(pre)`` when it gives one, else permutation SHAP of the ONNX graph's
    output. The saved per-request explainer is always the ONNX one: serving has only the graph. ``task``:
    the model's task (None: the flights binary task); it names the graph's output and its shape.
    """
    for key, value in (("background_rows", background_rows), ("rows", explain_rows)):
        if value < 1:
            raise ConfigError(f"explain.{key}", f"must be >= 1, got {value}.")
    columns = pre.input_columns
    require_columns(background, columns, "background")
    require_columns(rows, columns, "rows to explain")
    rng = np.random.default_rng(seed)
    background = sample_rows(background.select(list(columns)), background_rows, rng)
    rows = sample_rows(rows.select(list(columns)), explain_rows, rng)
    out_dir = Path(out_dir)
    per_request = OnnxExplainer(
        onnx_path, columns, background, max_background=background_rows, seed=seed, task=task
    )
    explainer_dir = per_request.save(out_dir / EXPLAINER_DIR)
    explainer = model.global_explainer(pre)
    if explainer is None:
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
        "shap method=%s rows=%d background=%d seconds=%.2f %s (%s): %s",
        summary.method,
        summary.rows,
        background.num_rows,
        summary.seconds,
        summary.aggregation,
        summary.output_space,
        top,
    )
    return ExplainResult(summary, summary_json, plot_png, explainer_dir)
