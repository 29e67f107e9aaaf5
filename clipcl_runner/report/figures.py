"""The report's figures: the comparison figure and each group's mean accuracy matrix."""
from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .aggregate import group_columns, metric_columns
from .runs import DEFAULT_VALUE, MATRIX_FILE, ReportError, _display_path, read_metrics_rows
from .tables import metric_label


def _group_label(keys: Sequence[str], values: Sequence) -> str:
    """'lwf (alpha=0.5)': the method plus the swept values it did not leave at the default."""
    label = str(values[0])
    extra = [f"{k.removeprefix('method.')}={v}" for k, v in zip(keys[1:], values[1:])
             if str(v) != DEFAULT_VALUE]
    return f"{label} ({', '.join(extra)})" if extra else label


def _stage_series(run_dir: Path, metric: str) -> dict[int, tuple[str, float]]:
    """stage -> (stage name, value) from the last evaluation of each stage."""
    series: dict[int, tuple[str, float]] = {}
    for row in read_metrics_rows(run_dir):
        value = row.get(metric)
        if "stage" in row and isinstance(value, (int, float)) and not isinstance(value, bool):
            series[int(row["stage"])] = (str(row.get("stage_name", row["stage"])), float(value))
    return series


def _probe_metric(run_dirs: Sequence[Path]) -> str | None:
    keys: dict[str, None] = {}
    for run_dir in run_dirs:
        for row in read_metrics_rows(run_dir):
            for k, v in row.items():
                if k.startswith(("ret/", "zs/")) and isinstance(v, (int, float)):
                    keys.setdefault(k, None)
        if keys:
            break
    if "ret/heldout/i2t_r1" in keys:
        return "ret/heldout/i2t_r1"
    return next((k for k in keys if k.startswith("ret/")), next(iter(keys), None))


def plot_comparison(runs: pd.DataFrame, path: Path | str, x_metric: str = "ut_acc",
                    y_metric: str | None = None, probe_metric: str | None = None) -> Path:
    """Left: the trade-off, x = final mean task accuracy, y = a Δ probe metric (default
    Δ i2t R@1, else the first delta metric); small translucent points per run, the group
    mean as a large labelled marker with ±std error bars. Right: a probe metric over
    stages (mean over seeds, band = min-max across seeds) per group."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import matplotlib

    keys = group_columns(runs)
    deltas = [c for c in metric_columns(runs) if c.startswith("delta/")]
    if y_metric is None:
        y_metric = "delta/ret/heldout/i2t_r1" if "delta/ret/heldout/i2t_r1" in deltas else (deltas[0] if deltas else None)
    run_dirs = [Path(r) for r in runs["run"]]
    if probe_metric is None:
        probe_metric = _probe_metric(run_dirs)
    groups = list(runs.groupby(keys, sort=False, dropna=False)) if not runs.empty else []
    cmap = matplotlib.colormaps["tab10" if len(groups) <= 10 else "tab20"]

    fig = Figure(figsize=(13.5, 5.4), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax_trade, ax_probe = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.15]})

    # trade-off panel
    if x_metric in runs.columns and y_metric in runs.columns and groups:
        ax_trade.axhline(0.0, color="#888888", linestyle="--", linewidth=1, zorder=0)
        for i, (values, group) in enumerate(groups):
            values = values if isinstance(values, tuple) else (values,)
            colour = cmap(i % cmap.N)
            xs = pd.to_numeric(group[x_metric], errors="coerce")
            ys = pd.to_numeric(group[y_metric], errors="coerce")
            ax_trade.scatter(xs, ys, s=22, color=colour, alpha=0.35, linewidths=0, zorder=2)
            if xs.notna().any() and ys.notna().any():
                mx, my = xs.mean(), ys.mean()
                sx, sy = (xs.std(ddof=1), ys.std(ddof=1)) if len(group) > 1 else (np.nan, np.nan)
                ax_trade.errorbar(mx, my, xerr=None if np.isnan(sx) else sx,
                                  yerr=None if np.isnan(sy) else sy, fmt="o", markersize=11,
                                  color=colour, markeredgecolor="white", markeredgewidth=1.3,
                                  elinewidth=1.6, capsize=4, zorder=3)
                ax_trade.annotate(_group_label(keys, values), (mx, my), xytext=(8, 8),
                                  textcoords="offset points", fontsize=9, color=colour,
                                  fontweight="bold", zorder=4,
                                  bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                        "alpha": 0.75})
        ax_trade.text(0.99, 0.99, "better ↗", transform=ax_trade.transAxes, ha="right", va="top",
                      fontsize=9, color="#777777")
        ax_trade.set_xlabel(f"{metric_label(x_metric)} (%)")
        ax_trade.set_ylabel(f"{metric_label(y_metric)} vs zero-shot (points)")
        ax_trade.set_title("trade-off: dots = runs, big markers = mean ± std over seeds", fontsize=11)
        ax_trade.margins(x=0.15, y=0.15)
    else:
        ax_trade.text(0.5, 0.5, f"no {x_metric} / delta metric in the summaries",
                      ha="center", va="center", transform=ax_trade.transAxes, color="#666666")
        ax_trade.set_xticks([])
        ax_trade.set_yticks([])

    # probes over stages
    stage_names: dict[int, str] = {}
    plotted = False
    if probe_metric is not None:
        for i, (values, group) in enumerate(groups):
            values = values if isinstance(values, tuple) else (values,)
            series = [_stage_series(Path(r), probe_metric) for r in group["run"]]
            stages = sorted({s for ser in series for s in ser})
            if not stages:
                continue
            for ser in series:
                for s, (name, _) in ser.items():
                    stage_names.setdefault(s, name)
            grid = np.array([[ser[s][1] if s in ser else np.nan for s in stages] for ser in series])
            with warnings.catch_warnings():  # a stage no seed reached: all-NaN column
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(grid, axis=0)
                low, high = np.nanmin(grid, axis=0), np.nanmax(grid, axis=0)
            colour = cmap(i % cmap.N)
            ax_probe.plot(stages, mean, "-o", color=colour, linewidth=2, markersize=5,
                          label=f"{_group_label(keys, values)} (n={len(series)})")
            if len(series) > 1:
                ax_probe.fill_between(stages, low, high, color=colour, alpha=0.15, linewidth=0)
            plotted = True
    if plotted:
        ticks = sorted(stage_names)
        ax_probe.set_xticks(ticks, [stage_names[s] for s in ticks])
        ax_probe.set_xlabel("evaluated after")
        ax_probe.set_ylabel(f"{metric_label(probe_metric)} (%)")
        ax_probe.set_title(f"{metric_label(probe_metric)} over stages (mean over seeds, band: min–max)",
                           fontsize=11)
        ax_probe.legend(frameon=False, fontsize=9, loc="best")
    else:
        ax_probe.text(0.5, 0.5, "no zs/ or ret/ probes in metrics.jsonl", ha="center", va="center",
                      transform=ax_probe.transAxes, color="#666666")
        ax_probe.set_xticks([])
        ax_probe.set_yticks([])
    for ax in (ax_trade, ax_probe):
        ax.grid(True, alpha=0.3)
        ax.spines["top"].set_visible(False)
        ax.spines["right"].set_visible(False)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, facecolor="white")
    return path


def _read_matrix(run_dir: Path) -> pd.DataFrame | None:
    path = run_dir / MATRIX_FILE
    if not path.is_file():  # unfinished run, or a W&B run without its run folder
        return None
    try:
        matrix = pd.read_csv(path, index_col=0)
        matrix = matrix.apply(pd.to_numeric)  # every cell a number (or empty = NaN)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path} is not an accuracy matrix ({str(exc).splitlines()[0][:200]}).\n"
                          "Fix: restore it from the run's metrics.jsonl (rerun with resume=true) or delete it.") from None
    if matrix.empty:
        raise ReportError(f"{path} is an empty accuracy matrix.\nFix: delete it or restore it.")
    matrix.index = matrix.index.astype(str)
    matrix.columns = matrix.columns.astype(str)
    return matrix


def _layout(matrix: pd.DataFrame) -> tuple:
    return tuple(matrix.index), tuple(matrix.columns)


def mean_matrices(run_dirs: Iterable[Path | str]) -> pd.DataFrame | None:
    """Element-wise mean of the runs' ``accuracy_matrix.csv`` (same index and columns as the
    runs'), or None when no run has one. Cells missing (NaN) in some seeds are averaged over
    the others. Runs whose matrix has another shape or other stage labels than the most
    common one cannot be averaged with it: they are left out and listed in
    ``.attrs["skipped"]``; ``.attrs["runs"]`` lists the runs averaged."""
    matrices = {str(r): m for r in run_dirs if (m := _read_matrix(Path(r))) is not None}
    if not matrices:
        return None
    layouts = [_layout(m) for m in matrices.values()]
    # the majority layout, ties to the first run: one odd seed should not decide
    common = max(dict.fromkeys(layouts), key=layouts.count)
    used = [run for run, m in matrices.items() if _layout(m) == common]
    stack = np.stack([matrices[run].to_numpy(dtype=float) for run in used])
    with warnings.catch_warnings():  # a cell no seed has: all-NaN, stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        values = np.nanmean(stack, axis=0)
    mean = pd.DataFrame(values, index=list(common[0]), columns=list(common[1]))
    mean.attrs["runs"] = used
    mean.attrs["skipped"] = [run for run in matrices if run not in used]
    return mean


def _file_safe(label: str) -> str:
    """'lwf (alpha=0.5)' -> 'lwf_alpha=0.5': a group label usable in a file name."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", label).strip("_") or "group"


def write_group_matrices(runs: pd.DataFrame, out: Path) -> tuple[list[Path], list[str]]:
    """``matrix_<group>.png`` per group with accuracy matrices: the mean over its seeds.
    Returns the files and report.md lines (image links, runs left out)."""
    from ..plots import plot_matrix

    keys = group_columns(runs)
    files: list[Path] = []
    lines: list[str] = []
    for values, group in runs.groupby(keys, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        mean = mean_matrices(group["run"])
        if mean is None:
            continue
        label = _group_label(keys, values)
        n = len(mean.attrs["runs"])
        path = plot_matrix(mean, out / f"matrix_{_file_safe(label)}.png",
                           title=f"{label}: mean over {n} seed{'s' if n != 1 else ''}")
        files.append(path)
        lines += [f"### {label} (n={n})", "", f"![{label} accuracy matrix]({path.name})", ""]
        lines += [f"- left out (matrix of another shape): `{_display_path(run)}`"
                  for run in mean.attrs["skipped"]]
        if mean.attrs["skipped"]:
            lines.append("")
    return files, lines
