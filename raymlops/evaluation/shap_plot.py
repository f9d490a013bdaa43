"""The SHAP summary plot: a beeswarm per raw input column (one output), or bars of each class's mean |SHAP|
stacked per column (one output per class); drawn without pyplot's global state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from raymlops.errors import RayMLOpsError
from raymlops.evaluation.explanation import Explanation, GlobalShap, global_shap, require_columns
from raymlops.features.preprocess import numeric_column

__all__ = ["summary_plot"]


def _swarm_offsets(values: np.ndarray, bins: int = 100) -> np.ndarray:
    """Vertical offsets in [-0.4, 0.4] that stack points with nearly equal values (shap's beeswarm layout)."""
    span = float(values.max() - values.min()) if len(values) else 0.0
    quantised = np.round(bins * (values - values.min()) / (span + 1e-12))
    offsets = np.zeros(len(values))
    layer, last = 0, None
    for i in np.argsort(quantised, kind="stable"):
        if quantised[i] != last:
            layer, last = 0, quantised[i]
        offsets[i] = np.ceil(layer / 2) * (1 if layer % 2 else -1)
        layer += 1
    peak = np.abs(offsets).max() if len(offsets) else 0.0
    return offsets * (0.4 / peak) if peak else offsets


def _is_number(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind))


def summary_plot(explanation: Explanation, table: pa.Table, path: Path, *, max_display: int = 20) -> Path:
    """A beeswarm PNG: one row per raw column (largest mean |SHAP| on top), one dot per explained row.

    Dots are coloured by the column's value in ``table`` (the explained rows, in order): numerics from
    low (blue) to high (red), clipped to their 5-95th percentiles; categorical values and nulls are grey.
    A multiclass explanation (values per class) is drawn as stacked bars of each class's mean |SHAP|.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    if table.num_rows != explanation.rows:
        raise RayMLOpsError(
            f"summary_plot: {table.num_rows} table rows for {explanation.rows} explained rows."
        )
    summary = global_shap(explanation)
    shown = list(summary.mean_abs)[:max_display]
    if summary.per_class:
        return _class_bars(summary, shown, Path(path))
    cmap = colormaps["coolwarm"]
    require_columns(table, dict.fromkeys(shown, "any"), "summary_plot table")
    numeric = {name for name in shown if _is_number(table[name].type)}
    figure = Figure(figsize=(8, 1.6 + 0.45 * len(shown)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.axvline(0.0, color="#999999", linewidth=0.8, zorder=0)
    labels = []
    for position, name in enumerate(reversed(shown)):
        j = explanation.columns.index(name)
        shap_values = explanation.values[:, j]
        y = position + _swarm_offsets(shap_values)
        colours = np.tile(np.array([[0.47, 0.47, 0.47, 0.8]]), (len(shap_values), 1))
        if name in numeric:
            raw = numeric_column(table[name]).astype(np.float64)
            known = ~np.isnan(raw)
            if known.any():
                low, high = np.percentile(raw[known], [5, 95])
                scaled = np.clip((raw[known] - low) / (high - low if high > low else 1.0), 0.0, 1.0)
                colours[known] = cmap(scaled)
                colours[known, 3] = 0.8
            labels.append(name)
        else:
            labels.append(f"{name} (categorical)")
        ax.scatter(shap_values, y, c=colours, s=12, linewidths=0, rasterized=len(shap_values) > 500)
    ax.set_yticks(range(len(shown)), labels)
    ax.set_ylim(-0.7, len(shown) - 0.3)
    space = explanation.output_space.replace("_", "-")
    ax.set_xlabel(f"SHAP value ({space} impact on the prediction)")
    ax.set_title(
        f"{explanation.method} SHAP over {explanation.rows} rows, base value {summary.base_value:.3g}"
    )
    bar = figure.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cmap), ax=ax, ticks=[0, 1], aspect=40)
    bar.set_ticklabels(["low", "high"])
    bar.set_label("feature value")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _class_bars(summary: GlobalShap, shown: list[str], path: Path) -> Path:
    """Horizontal bars per column (largest total on top), one stacked segment per class."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    per_class = summary.per_class or {}
    figure = Figure(figsize=(8, 1.6 + 0.45 * len(shown)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    names = list(reversed(shown))
    left = np.zeros(len(names))
    palette = colormaps["tab10"]
    for k, (cls, means) in enumerate(per_class.items()):
        widths = np.array([means[name] for name in names])
        ax.barh(range(len(names)), widths, left=left, color=palette(k % 10), label=cls)
        left += widths
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel(f"mean |SHAP| ({summary.output_space.replace('_', '-')}), stacked over the classes")
    ax.set_title(f"{summary.method} SHAP over {summary.rows} rows, {len(per_class)} classes")
    ax.legend(title="class", loc="lower right", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
