"""Grouping finished runs by the configuration that changes results and aggregating their summaries
over seeds (pandas ``groupby().agg``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metric_names
from .runs import GROUP_CANDIDATES_ATTR, SUMMARY_FILE, ReportError, _display_path

STAT_SUFFIXES = ("/mean", "/std", "/n")


def _group_candidates(runs: pd.DataFrame) -> list[str]:
    if GROUP_CANDIDATES_ATTR in runs.attrs:
        return [c for c in runs.attrs[GROUP_CANDIDATES_ATTR] if c in runs.columns]
    # e.g. a runs.csv read back: every text column except the identity ones
    return [
        c for c in runs.columns if c not in ("run", "method", "seed") and not pd.api.types.is_numeric_dtype(runs[c])
    ]


def group_columns(runs: pd.DataFrame) -> list[str]:
    """``method`` plus the config/override columns that vary between runs."""
    swept = [c for c in _group_candidates(runs) if runs[c].astype(str).nunique(dropna=False) > 1]
    return ["method", *swept]


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """Numeric summary columns of a runs table (everything except identity/group columns)."""
    skip = {"run", "method", "seed", *_group_candidates(runs)}
    return [
        c
        for c in runs.columns
        if c not in skip and pd.api.types.is_numeric_dtype(runs[c]) and not pd.api.types.is_bool_dtype(runs[c])
    ]


def aggregate(runs: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per group (``method`` + swept overrides, in order of first appearance):
    ``n`` (finished runs = seeds), ``seeds`` ("0,1,2") and, per metric, ``<m>/mean``,
    ``<m>/std`` (ddof=1; NaN for a single seed) and ``<m>/n`` (seeds with a value for m). The runs'
    headline metrics (``load_runs``) stay in ``.attrs``: the table's columns."""
    metrics = list(metrics) if metrics is not None else metric_columns(runs)
    unknown = [m for m in metrics if m not in runs.columns]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; available: {metric_columns(runs)}")
    keys = group_columns(runs)
    columns = [*keys, "n", "seeds", *(f"{m}{s}" for m in metrics for s in STAT_SUFFIXES)]
    headline = {metric_names.HEADLINE: runs.attrs[metric_names.HEADLINE]} if metric_names.HEADLINE in runs.attrs else {}
    if runs.empty:
        empty = pd.DataFrame(columns=columns)
        empty.attrs.update(headline)
        return empty
    values = runs[metrics].apply(pd.to_numeric, errors="coerce").astype(float)
    grouped = values.groupby([runs[k] for k in keys], sort=False, dropna=False)
    stats = grouped.agg(["mean", "std", "count"])  # std: ddof=1, NaN for one seed; count: seeds with a value
    stats.columns = [f"{m}/{'n' if stat == 'count' else stat}" for m, stat in stats.columns]
    by_group = runs.groupby(keys, sort=False, dropna=False)
    stats.insert(0, "n", by_group.size())
    stats.insert(1, "seeds", by_group["seed"].agg(_seed_list))
    out = stats.reset_index()
    for m in metrics:
        out[f"{m}/n"] = out[f"{m}/n"].astype(int)
    out = out[columns]
    out.attrs.update(headline)
    return out


def _seed_list(seeds: pd.Series) -> str:
    """'0,1,2': the group's seeds (sorted as text), unknown seeds left out."""
    known = sorted((s for s in seeds.tolist() if s is not None and s == s), key=str)
    return ",".join(str(int(s)) if isinstance(s, float) and s.is_integer() else str(s) for s in known)


def check_numeric(runs: pd.DataFrame, metrics: Sequence[str]) -> None:
    """Raise ReportError naming each run whose value of a table metric is not a number."""
    problems = []
    for metric in metrics:
        if metric not in runs.columns:
            continue
        for run, value in zip(runs["run"], runs[metric]):
            if value is None or isinstance(value, (bool, np.bool_)):
                bad = isinstance(value, (bool, np.bool_))
            else:
                bad = not isinstance(value, (int, float, np.integer, np.floating))
            if bad:
                problems.append(f"  {_display_path(str(run))}: {metric} = {value!r}")
    if problems:
        raise ReportError(
            "summary values that are not numbers (the table would silently leave them out):\n"
            + "\n".join(problems)
            + "\nFix: rerun those runs (resume=true) or remove them from the report."
        )


DUPLICATE = "duplicate seed"


def _finished_at(run: str) -> float:
    """When a run finished: its summary.json's time (a W&B run: its folder's)."""
    path = Path(run)
    summary = path / SUMMARY_FILE
    try:
        return (summary if summary.is_file() else path).stat().st_mtime
    except OSError:
        return 0.0


def drop_duplicate_seeds(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Keep one run per (group, seed): the newest finished one. A copied folder or a rerun of the
    same seed would otherwise count as another seed (n too large, std too small). The others are
    returned as missing runs whose reason names the run kept."""
    if runs.empty:
        return runs, []
    keys = [*group_columns(runs), "seed"]
    finished = runs["run"].map(_finished_at)
    order = finished.sort_values(ascending=False, kind="stable").index
    kept_rows, dropped = [], []
    seen: dict[tuple, str] = {}
    for index in order:
        row = runs.loc[index]
        if row["seed"] is None or row["seed"] != row["seed"]:  # no seed known: never a duplicate
            kept_rows.append(index)
            continue
        key = tuple(str(row[k]) for k in keys)
        if key in seen:
            dropped.append(
                {
                    "run": row["run"],
                    "method": row["method"],
                    "seed": row["seed"],
                    "reason": f"{DUPLICATE}: same configuration and seed as `{_display_path(seen[key])}` "
                    "(newer, counted instead)",
                }
            )
            continue
        seen[key] = row["run"]
        kept_rows.append(index)
    kept = runs.loc[sorted(kept_rows)]
    kept.attrs = dict(runs.attrs)
    return kept, dropped
