"""Aggregate run folders into a comparison report: tables over seeds and figures.

Everything is read back from the run folders (``.hydra/config.yaml``, ``.hydra/overrides.yaml``,
``metrics.jsonl``, ``summary.json``, ``accuracy_matrix.csv``), so a report needs neither W&B nor the
training code. A run folder without ``summary.json`` is unfinished or failed: it is listed as missing,
never silently dropped, and every aggregated value keeps the number of seeds ``n`` it was averaged over.
Runs group by the configuration that changes results (method, part, task sequence and swept overrides;
not threads, workers, paths, logger or progress: ``run_names``).

Offline W&B runs (``.../wandb/offline-run-*``) are accepted too, for runs whose run folder was lost.
A run folder always wins over its own W&B copy, so no run is counted twice.

    clipcl-report outputs/multirun/sweep_methods_2026-11-28_20-50-00_ab12cd   # -> <sweep>/report/
    clipcl-report outputs/runs/a outputs/runs/b --out report --metrics ut_acc bwt
    clipcl-report copied_from_cluster/wandb                                   # offline W&B runs only

Modules: ``runs`` (find and load), ``wandb_runs`` (the offline-W&B reader), ``aggregate`` (groups,
mean/std/n), ``tables`` (headline metrics, Markdown/LaTeX), ``figures``, ``build`` (``write_report``),
``cli`` (``clipcl-report``).
"""

from __future__ import annotations

from ..run_names import is_ignored_override, parse_overrides
from .aggregate import (
    DUPLICATE,
    STAT_SUFFIXES,
    aggregate,
    check_numeric,
    drop_duplicate_seeds,
    group_columns,
    metric_columns,
)
from .build import write_report
from .cli import main
from .figures import _file_safe, mean_matrices, plot_comparison, write_group_matrices
from .runs import (
    CONFIG_FILE,
    DEFAULT_VALUE,
    METRICS_FILE,
    NO_SUMMARY,
    SUMMARY_FILE,
    NoFinishedRuns,
    ReportError,
    find_runs,
    find_strays,
    load_runs,
    read_metrics_rows,
)
from .tables import (
    CIL_METRICS,
    MTIL_METRICS,
    SYNTHETIC_METRICS,
    comparison_table,
    default_metrics,
    latex_table,
    metric_label,
    missing_lines,
)
from .wandb_runs import NO_WANDB_SUMMARY

__all__ = [
    "CIL_METRICS",
    "CONFIG_FILE",
    "DEFAULT_VALUE",
    "DUPLICATE",
    "METRICS_FILE",
    "MTIL_METRICS",
    "NO_SUMMARY",
    "NO_WANDB_SUMMARY",
    "STAT_SUFFIXES",
    "SUMMARY_FILE",
    "SYNTHETIC_METRICS",
    "NoFinishedRuns",
    "ReportError",
    "aggregate",
    "check_numeric",
    "comparison_table",
    "default_metrics",
    "drop_duplicate_seeds",
    "find_runs",
    "find_strays",
    "group_columns",
    "is_ignored_override",
    "latex_table",
    "load_runs",
    "main",
    "mean_matrices",
    "metric_columns",
    "metric_label",
    "missing_lines",
    "parse_overrides",
    "plot_comparison",
    "read_metrics_rows",
    "write_group_matrices",
    "write_report",
    "_file_safe",
]
