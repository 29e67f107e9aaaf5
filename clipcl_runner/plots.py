"""Plots of one run: the accuracy-matrix heatmap and the forgetting probes over stages.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no display, no global
state), so plotting is safe in headless jobs and in threads. Values that all lie in
[0, 1] are taken as fractions and shown in percent; larger values are taken as percent.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import metric_names

if TYPE_CHECKING:  # pragma: no cover
    import pandas

log = logging.getLogger(__name__)
# Line style of a probe kind's metrics over stages; any other kind (a new probe kind) is dotted.
LINE_STYLES = {metric_names.ZERO_SHOT: "-", metric_names.RETRIEVAL: "--"}


def _view(plot):
    """A figure is a view of numbers already written to files: where matplotlib is not installed
    (the GPU image) it is skipped with a warning and the run goes on; the path is returned unwritten."""

    @functools.wraps(plot)
    def draw(data, path: Path | str, *args, **kwargs) -> Path:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            log.warning("matplotlib is not installed: %s not drawn", path)
            return Path(path)
        return plot(data, path, *args, **kwargs)

    return draw


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _percent_scale(values) -> float:
    """100 when every finite value is a fraction in [0, 1], else 1."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return 100.0 if finite and max(abs(v) for v in finite) <= 1.0 else 1.0


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", facecolor="white")
    return path


@_view
def plot_matrix(matrix: pandas.DataFrame, path: Path | str, title: str = "") -> Path:
    """Heatmap of an accuracy matrix (rows: "zero-shot", "after T1", ...; columns: the
    stages' test sets) with the accuracy in % written in each cell; colours span 0-100.
    ``matrix``: a DataFrame or the runner's ``run_summary.AccuracyMatrix``."""
    import numpy as np

    values = matrix.to_numpy(dtype=float, na_value=np.nan)
    values = values * _percent_scale(values.ravel().tolist())
    n_rows, n_cols = values.shape
    col_labels = [str(c) for c in matrix.columns]
    row_labels = [str(r) for r in matrix.index]
    label_w = max([len(s) for s in row_labels] + [4])

    fig = _figure(
        width=min(2.0 + 0.085 * label_w + 0.85 * max(n_cols, 1) + 1.2, 24), height=min(1.3 + 0.55 * max(n_rows, 1), 18)
    )
    ax = fig.add_subplot()
    cmap = _cmap("viridis").with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    fontsize = 10 if max(n_rows, n_cols) <= 10 else 8 if max(n_rows, n_cols) <= 16 else 6
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            if math.isfinite(v):
                r, g, b, _ = cmap(min(max(v / 100.0, 0.0), 1.0))
                light = 0.299 * r + 0.587 * g + 0.114 * b > 0.55
                ax.text(
                    j, i, f"{v:.1f}", ha="center", va="center", fontsize=fontsize, color="black" if light else "white"
                )
            else:
                ax.text(j, i, "–", ha="center", va="center", fontsize=fontsize, color="#666666")
    ax.set_xticks(range(n_cols), col_labels)
    ax.set_yticks(range(n_rows), row_labels)
    if max((len(s) for s in col_labels), default=0) * n_cols > 40:
        for lab in ax.get_xticklabels():
            lab.set_rotation(30)
            lab.set_ha("right")
            lab.set_rotation_mode("anchor")
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("model")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cbar.set_label("accuracy (%)")
    if title:
        ax.set_title(title, fontsize=11, pad=10)
    return _save(fig, path)


def _cmap(name: str):
    import matplotlib

    return matplotlib.colormaps[name].copy()


@_view
def plot_probes(rows: list[dict], path: Path | str, metrics: Sequence[str] | None = None, title: str = "") -> Path:
    """Probe metrics over stages: x = evaluation (labelled by "stage_name", plus the
    epoch when a stage has several evaluations), one line per metric (default: every
    numeric probe metric, ``metric_names.is_probe``), legend below the axes."""
    rows = sorted(
        (dict(r) for r in rows),
        key=lambda r: (r.get("stage", 0), -1 if r.get("epoch") is None else r.get("epoch")),
    )
    metrics = probe_metrics(rows) if metrics is None else list(metrics)

    stage_counts: dict = {}
    for r in rows:
        stage_counts[r.get("stage")] = stage_counts.get(r.get("stage"), 0) + 1
    labels = []
    for r in rows:
        label = str(r.get("stage_name", r.get("stage", "")))
        if stage_counts[r.get("stage")] > 1 and r.get("epoch") is not None:
            label = f"{label} ep{r['epoch']}"
        labels.append(label)

    all_values = [r.get(m) for r in rows for m in metrics if _is_number(r.get(m))]
    scale = _percent_scale(all_values)
    n = max(len(rows), 1)
    fig = _figure(width=min(max(7.5, 1.0 + 0.75 * n), 20), height=4.8)
    ax = fig.add_subplot()
    x = list(range(len(rows)))
    colours = _cmap("tab10" if len(metrics) <= 10 else "tab20")
    markers = "osD^v<>pX*h"
    for i, m in enumerate(metrics):
        ys = [float(r[m]) * scale if _is_number(r.get(m)) else math.nan for r in rows]
        style = LINE_STYLES.get(metric_names.kind_of(m) or "", ":") if metric_names.is_probe(m) else ":"
        ax.plot(
            x,
            ys,
            style,
            marker=markers[i % len(markers)],
            markersize=5,
            linewidth=1.8,
            color=colours(i % colours.N),
            label=m,
        )
    ax.set_xticks(x, labels)
    rotate = n > 8 or sum(len(s) for s in labels) > 9 * n
    if rotate:
        for lab in ax.get_xticklabels():
            lab.set_rotation(30)
            lab.set_ha("right")
            lab.set_rotation_mode("anchor")
    ax.set_xlabel("stage")
    scaled = [float(v) * scale for v in all_values]
    percent = bool(scaled) and min(scaled) >= 0 and max(scaled) <= 100
    ax.set_ylabel("%" if percent else "value")
    if percent:
        ax.set_ylim(0, min(100.0, max(scaled) * 1.1 + 2))
    ax.grid(True, alpha=0.3)
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    if title:
        ax.set_title(title)
    if metrics:
        ncol = min(len(metrics), 3 if max(len(m) for m in metrics) > 18 else 4)
        ax.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.24 if rotate else -0.15), ncol=ncol, frameon=False, fontsize=8.5
        )
    return _save(fig, path)


def probe_metrics(rows: list[dict]) -> list[str]:
    """Every numeric probe metric of the rows (``metric_names.is_probe``), in order of first appearance."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.update((k, None) for k, v in r.items() if metric_names.is_probe(k) and _is_number(v))
    return list(seen)


def _is_number(v) -> bool:
    if isinstance(v, bool) or v is None:
        return False
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
