"""``write_report``: find, load, aggregate, and write the report's files."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from .. import metric_names
from .aggregate import _group_candidates, aggregate, check_numeric, drop_duplicate_seeds
from .figures import plot_comparison, write_group_matrices
from .runs import NO_SUMMARY, NoFinishedRuns, _display_path, find_runs, find_strays, load_runs
from .tables import _resolve_metrics, comparison_table, default_metrics, latex_table, missing_lines
from .wandb_runs import NO_WANDB_SUMMARY, _read_wandb


def _where(paths: Sequence[Path | str]) -> str:
    return ", ".join(str(p) for p in paths)


def write_report(
    paths: Sequence[Path | str],
    out_dir: Path | str,
    metrics: Sequence[str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict:
    """Find and aggregate the runs under ``paths``; write ``report.md``, ``runs.csv``,
    ``summary.csv``, ``summary.tex``, ``comparison.png`` and, per group whose run folders
    have accuracy matrices, ``matrix_<group>.png`` (mean over seeds) into ``out_dir``. Returns
    ``{"table": markdown, "missing": [...], "files": [...]}``. Raises NoFinishedRuns when
    there is nothing to report and KeyError for an unknown metric."""
    paths = [Path(p) for p in paths]
    _read_wandb.cache_clear()  # a W&B run may have grown since an earlier report in this process
    run_dirs = find_runs(paths)
    strays = find_strays(paths)
    if not run_dirs:
        raise NoFinishedRuns(f"no run folders under {_where(paths)}")
    runs, missing = load_runs(run_dirs)
    runs, duplicates = drop_duplicate_seeds(runs)
    for duplicate in duplicates:
        print(f"clipcl-report: warning: {duplicate['run']}: {duplicate['reason']}", file=sys.stderr)
    missing += duplicates
    summary_columns = [c for c in runs.columns if c not in ("run", "method", "seed", *_group_candidates(runs))]
    headline = runs.attrs.get(metric_names.HEADLINE)
    check_numeric(runs, list(metrics) if metrics is not None else default_metrics(summary_columns, headline))
    if runs.empty:
        if all(m["reason"] in (NO_SUMMARY, NO_WANDB_SUMMARY) for m in missing):
            raise NoFinishedRuns(f"no finished runs under {_where(paths)}: every run folder lacks summary.json")
        raise NoFinishedRuns(
            f"no finished runs under {_where(paths)}: every run folder lacks summary.json "
            "or is unreadable\n" + "\n".join(missing_lines(missing))
        )

    agg = aggregate(runs)
    table_metrics = _resolve_metrics(agg, metrics)
    table = comparison_table(agg, table_metrics, labels)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in ("report.md", "runs.csv", "summary.csv", "summary.tex", "comparison.png")}
    runs.to_csv(files["runs.csv"], index=False)
    agg.to_csv(files["summary.csv"], index=False)
    files["summary.tex"].write_text(latex_table(agg, table_metrics, labels), encoding="utf-8")
    plot_comparison(runs, files["comparison.png"])
    matrix_files, matrix_lines = write_group_matrices(runs, out)
    files.update((p.name, p) for p in matrix_files)

    n_values = sorted(set(agg["n"].astype(int)))
    lines = [
        "# Run report",
        "",
        f"{len(runs)} finished run(s) in {len(agg)} group(s), {len(missing)} missing or failed; "
        f"from {', '.join(f'`{_display_path(str(p))}`' for p in paths)}.",
        "",
        table,
        "",
        "Cells: mean ± std over seeds (std with ddof=1; a single seed shows the mean only); "
        "n: finished seeds. Δ: after the last stage minus zero-shot, in points.",
    ]
    if len(n_values) > 1:
        lines.append(f"**Groups differ in their number of seeds (n = {', '.join(map(str, n_values))}).**")
    lines += ["", "![trade-off and probes over stages](comparison.png)", ""]
    if matrix_lines:
        lines += ["## Accuracy matrices (mean over seeds)", "", *matrix_lines]
    lines += ["## Missing or failed runs", "", *missing_lines(missing), ""]
    if strays:
        lines += ["## Stray folders (no run in them: not counted)", "", *stray_lines(strays), ""]
    files["report.md"].write_text("\n".join(lines), encoding="utf-8")
    return {
        "table": table,
        "missing": missing,
        "strays": [str(p) for p in strays],
        "files": [str(p) for p in files.values()],
    }


def stray_lines(strays: Sequence[Path | str]) -> list[str]:
    """One line per folder a job left without a run (a refused start, a torchrun rank's folder)."""
    return [
        f"- `{_display_path(str(path))}`: no config or metrics (a start refused before it took the folder, "
        "or a torchrun rank's own folder)"
        for path in strays
    ]
