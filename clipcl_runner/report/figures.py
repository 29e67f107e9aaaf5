"""The report's figures: the comparison figure and each group's mean accuracy matrix."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metric_names as names
from .aggregate import group_columns, metric_columns
from .runs import DEFAULT_VALUE, MATRIX_FILE, ReportError, _display_path, read_metrics_rows


def _group_label(keys: Sequence[str], values: Sequence) -> str:
    """'lwf (alpha=0.5)': the method plus the swept values it did not leave at the default."""
    label = str(values[0])
    extra = [f"{k.removeprefix('method.')}={v}" for k, v in zip(keys[1:], values[1:]) if str(v) != DEFAULT_VALUE]
    return f"{label} ({', '.join(extra)})" if extra else label


STAGE_MEAN_TASK = names.TASK_MEAN_ACC  # derived per-row metric: the mean over the row's task/<stage>/acc
# The synthetic protocol's trade-off and probe, for run folders from before summary.json named them
HELDOUT_I2T_R1 = names.retrieval("heldout", "i2t", 1)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
LINESTYLES = ("-", "--", "-.", ":")


def _row_value(row: dict, metric: str) -> float | None:
    if metric == STAGE_MEAN_TASK:
        values = [
            v
            for k, v in row.items()
            if names.is_task_acc(k) and isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        return float(np.mean(values)) if values else None
    value = row.get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _stage_series(run_dir: Path, metric: str) -> dict[int, tuple[str, float]]:
    """stage -> (stage name, value) at each stage end (rows inside a stage, e.g. per epoch, are left out)."""
    series: dict[int, tuple[str, float]] = {}
    for row in read_metrics_rows(run_dir):
        value = _row_value(row, metric)
        if "stage" in row and value is not None and float(row["stage"]).is_integer():
            series[int(row["stage"])] = (str(row.get("stage_name", row["stage"])), value)
    return series


def _row_keys(run_dirs: Sequence[Path]) -> list[str]:
    keys: dict[str, None] = {}
    for run_dir in run_dirs:
        for row in read_metrics_rows(run_dir):
            keys.update((k, None) for k, v in row.items() if isinstance(v, (int, float)))
        if keys:
            break
    return list(keys)


def _probe_metric(run_dirs: Sequence[Path]) -> str | None:
    keys = [k for k in _row_keys(run_dirs) if names.is_probe(k)]
    if HELDOUT_I2T_R1 in keys:
        return HELDOUT_I2T_R1
    return next((k for k in keys if names.kind_of(k) == names.RETRIEVAL), next(iter(keys), None))


def comparison_metrics(runs: pd.DataFrame) -> tuple[str | None, str | None, str | None]:
    """(x, y, over-stages) metrics of the comparison figure for the runs' protocol: synthetic/paper
    (probes): final task accuracy vs a probe's change, the probe over stages; class-incremental: CIL
    Avg vs Last, the accuracy on all classes seen so far over stages; MTIL (a zero-shot row, no
    probes): Avg vs Transfer, the mean accuracy over every task's test set over stages. The metric
    over stages is the runs' eval protocol's ``plot_metric`` where their summary.json names one."""
    x, y, over_stages = _protocol_metrics(runs)
    return x, y, runs.attrs.get(names.PLOT_METRIC) or over_stages


def _protocol_metrics(runs: pd.DataFrame) -> tuple[str | None, str | None, str | None]:
    columns = set(metric_columns(runs))
    deltas = [c for c in metric_columns(runs) if names.is_delta(c)]
    if "cil_avg" in columns:
        return "cil_avg", "cil_last" if "cil_last" in columns else None, names.CIL_ACC
    if deltas:
        y = names.delta(HELDOUT_I2T_R1) if names.delta(HELDOUT_I2T_R1) in deltas else deltas[0]
        if runs.attrs.get(names.PLOT_METRIC):  # named by the runs: no need to read their rows
            return "ut_acc", y, None
        return "ut_acc", y, _probe_metric([Path(r) for r in runs["run"]] if "run" in runs else [])
    if "zero_shot_transfer" in columns or "transfer" in columns:
        return "avg" if "avg" in columns else "ut_acc", "transfer", STAGE_MEAN_TASK
    return "ut_acc", None, STAGE_MEAN_TASK


def _styles(groups: list[tuple], keys: Sequence[str]) -> tuple[dict, dict]:
    """Colour per method, marker + line style per swept option (the values of the other group keys)."""
    import matplotlib

    methods = list(dict.fromkeys(str(values[0]) for values in groups))
    options = list(dict.fromkeys(tuple(str(v) for v in values[1:]) for values in groups))
    cmap = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    colours = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}
    styles = {
        o: (MARKERS[i % len(MARKERS)], LINESTYLES[(i // len(MARKERS)) % len(LINESTYLES)]) for i, o in enumerate(options)
    }
    return colours, styles


def _option_label(keys: Sequence[str], option: tuple) -> str:
    parts = [f"{k.removeprefix('method.')}={v}" for k, v in zip(keys[1:], option) if v != DEFAULT_VALUE]
    return ", ".join(parts) or "defaults"


def plot_comparison(
    runs: pd.DataFrame,
    path: Path | str,
    x_metric: str | None = None,
    y_metric: str | None = None,
    probe_metric: str | None = None,
) -> Path:
    """Write ``comparison_figure`` to ``path`` (PNG)."""
    fig = comparison_figure(runs, x_metric, y_metric, probe_metric)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, facecolor="white")
    return path


def comparison_figure(
    runs: pd.DataFrame, x_metric: str | None = None, y_metric: str | None = None, probe_metric: str | None = None
):
    """Left: the trade-off (the protocol's two headline metrics, ``comparison_metrics``), one small
    translucent point per run and the group mean ±std as a large marker. Right: a metric over stages
    (mean over seeds, band = min-max across seeds). Colour = method, marker and line style = the swept
    option, both explained in legends outside the axes (never over the data), so 12+ groups stay readable."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    keys = group_columns(runs)
    auto_x, auto_y, auto_stage = comparison_metrics(runs) if not runs.empty else (None, None, None)
    x_metric, y_metric, probe_metric = x_metric or auto_x, y_metric or auto_y, probe_metric or auto_stage
    groups = list(runs.groupby(keys, sort=False, dropna=False)) if not runs.empty else []
    groups = [((values if isinstance(values, tuple) else (values,)), group) for values, group in groups]
    colours, styles = _styles([values for values, _ in groups], keys)

    fig = Figure(figsize=(14.0, 5.6), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax_trade, ax_probe = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.15]})

    def style(values):
        option = tuple(str(v) for v in values[1:])
        return colours[str(values[0])], *styles[option]

    # trade-off panel
    if x_metric in runs.columns and y_metric in runs.columns and groups:
        if names.is_delta(str(y_metric)):
            ax_trade.axhline(0.0, color="#888888", linestyle="--", linewidth=1, zorder=0)
        for values, group in groups:
            colour, marker, _ = style(values)
            xs = pd.to_numeric(group[x_metric], errors="coerce")
            ys = pd.to_numeric(group[y_metric], errors="coerce")
            ax_trade.scatter(xs, ys, s=18, color=colour, marker=marker, alpha=0.35, linewidths=0, zorder=2)
            if xs.notna().any() and ys.notna().any():
                sx, sy = (xs.std(ddof=1), ys.std(ddof=1)) if len(group) > 1 else (np.nan, np.nan)
                ax_trade.errorbar(
                    xs.mean(),
                    ys.mean(),
                    xerr=None if np.isnan(sx) else sx,
                    yerr=None if np.isnan(sy) else sy,
                    fmt=marker,
                    markersize=10,
                    color=colour,
                    markeredgecolor="white",
                    markeredgewidth=1.2,
                    elinewidth=1.4,
                    capsize=3,
                    zorder=3,
                )
        ax_trade.set_xlabel(f"{names.label(x_metric)} (%)")
        ax_trade.set_ylabel(f"{names.label(y_metric)} ({'points' if names.is_delta(str(y_metric)) else '%'})")
        ax_trade.set_title("small: one run; large: mean ± std over seeds", fontsize=10)
        ax_trade.margins(x=0.12, y=0.12)
    else:
        _empty_panel(ax_trade, f"no {x_metric} / {y_metric} in the summaries")

    # a metric over stages
    stage_names: dict[int, str] = {}
    plotted = False
    if probe_metric is not None:
        for values, group in groups:
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
            colour, marker, linestyle = style(values)
            ax_probe.plot(stages, mean, linestyle=linestyle, marker=marker, color=colour, linewidth=1.8, markersize=5)
            if len(series) > 1:
                ax_probe.fill_between(stages, low, high, color=colour, alpha=0.10, linewidth=0)
            plotted = True
    if plotted:
        ticks = sorted(stage_names)
        labels = [stage_names[s] for s in ticks]
        crowded = len(ticks) * max(map(len, labels)) > 60  # long stage names or many stages: slant them
        ax_probe.set_xticks(ticks, labels, rotation=30 if crowded else 0, ha="right" if crowded else "center")
        ax_probe.set_xlabel("evaluated after")
        ax_probe.set_ylabel(f"{names.label(probe_metric)} (%)")
        ax_probe.set_title(f"{names.label(probe_metric)} over stages (mean over seeds, band: min–max)", fontsize=10)
    else:
        _empty_panel(ax_probe, f"no {names.label(probe_metric) if probe_metric else 'probe'} in metrics.jsonl")
    for ax in (ax_trade, ax_probe):
        ax.grid(True, alpha=0.3)
        ax.spines["top"].set_visible(False)
        ax.spines["right"].set_visible(False)

    # legends outside the axes: methods by colour, swept options by marker / line style, with n
    if groups:
        methods = [Line2D([], [], color=c, marker="o", linestyle="-", label=m) for m, c in colours.items()]
        _outside_legend(fig, methods, "method (colour)", "outside right upper")
        if len(styles) > 1:
            options = [
                Line2D([], [], color="#444444", marker=mk, linestyle=ls, label=_option_label(keys, o))
                for o, (mk, ls) in styles.items()
            ]
            _outside_legend(fig, options, "swept option (marker)", "outside right lower")
        counts = sorted({len(group) for _, group in groups})
        fig.suptitle(
            f"{len(groups)} group(s), {len(runs)} run(s); seeds per group: {', '.join(map(str, counts))}", fontsize=11
        )
    return fig


def _read_matrix(run_dir: Path) -> pd.DataFrame | None:
    path = run_dir / MATRIX_FILE
    if not path.is_file():  # unfinished run, or a W&B run without its run folder
        return None
    try:
        matrix = pd.read_csv(path, index_col=0)
        matrix = matrix.apply(pd.to_numeric)  # every cell a number (or empty = NaN)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReportError(
            f"{path} is not an accuracy matrix ({str(exc).splitlines()[0][:200]}).\n"
            "Fix: restore it from the run's metrics.jsonl (rerun with resume=true) or delete it."
        ) from None
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


def _outside_legend(fig, handles: list, title: str, loc: str) -> None:
    """A legend outside the axes (``loc``: "outside right upper" / "lower"), two columns past 14 entries."""
    fig.legend(
        handles=handles,
        title=title,
        loc=loc,
        frameon=False,
        fontsize=8.5,
        title_fontsize=9,
        ncols=1 if len(handles) <= 14 else 2,
    )


def _file_safe(label: str) -> str:
    """'lwf (alpha=0.5)' -> 'lwf_alpha-0_5': a group label as a plain file name (letters, digits, ``_``
    and ``-`` only: no quoting in shells, Markdown links or URLs)."""
    plain = label.replace("=", "-").replace(".", "_")
    return re.sub(r"[^A-Za-z0-9_-]+", "_", plain).strip("_-") or "group"


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``, ... when taken (compared without case: macOS and Windows)."""
    candidate, number = name, 1
    while candidate.lower() in taken:
        number += 1
        candidate = f"{name}-{number}"
    taken.add(candidate.lower())
    return candidate


def write_group_matrices(runs: pd.DataFrame, out: Path) -> tuple[list[Path], list[str]]:
    """``matrix_<group>.png`` per group with accuracy matrices: the mean over its seeds.
    Returns the files and report.md lines (image links, runs left out)."""
    from ..plots import plot_matrix

    keys = group_columns(runs)
    files: list[Path] = []
    lines: list[str] = []
    taken: set[str] = set()  # two labels may map to one file name ('a=0.5' and 'a=0_5')
    for values, group in runs.groupby(keys, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        mean = mean_matrices(group["run"])
        if mean is None:
            continue
        label = _group_label(keys, values)
        n = len(mean.attrs["runs"])
        path = plot_matrix(
            mean,
            out / f"matrix_{_unique(_file_safe(label), taken)}.png",
            title=f"{label}: mean over {n} seed{'s' if n != 1 else ''}",
        )
        files.append(path)
        lines += [f"### {label} (n={n})", "", f"![{label} accuracy matrix]({path.name})", ""]
        lines += [f"- left out (matrix of another shape): `{_display_path(run)}`" for run in mean.attrs["skipped"]]
        if mean.attrs["skipped"]:
            lines.append("")
    return files, lines


def _empty_panel(ax, message: str) -> None:
    """A panel with nothing to plot says so in its middle, without axes ticks."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])
