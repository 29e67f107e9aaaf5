"""Aggregate run folders into a comparison report: tables over seeds and a trade-off plot.

Everything is read back from the run folders (``.hydra/config.yaml``,
``.hydra/overrides.yaml``, ``metrics.jsonl``, ``summary.json``, ``accuracy_matrix.csv``), so
a report needs neither W&B nor the training code. A run folder without ``summary.json`` is
unfinished or failed: it is listed as missing, never silently dropped, and every
aggregated value keeps the number of seeds ``n`` it was averaged over.

Offline W&B runs (``.../wandb/offline-run-*``) are accepted too, for runs whose run folder
was lost (e.g. only ``wandb/`` was copied off a cluster). They are read with
``tracking.read_offline_run`` (still no network). A run folder always wins over its own
W&B copy, so no run is counted twice.

    clipcl-report outputs/multirun/2026-11-28_20-50-00            # -> <sweep>/report/
    clipcl-report outputs/runs/a outputs/runs/b --out report --metrics ut_acc bwt
    clipcl-report copied_from_cluster/wandb                         # offline W&B runs only
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

CONFIG_FILE = Path(".hydra") / "config.yaml"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
MATRIX_FILE = "accuracy_matrix.csv"
RUN_ID_FILE = "wandb_run_id.txt"  # written by RunTracker: links a run folder to its W&B run

NO_SUMMARY = "no summary.json (unfinished or failed)"
NO_WANDB_SUMMARY = "W&B run has no summary (unfinished or failed)"
# W&B folders of one run: "offline-run-<time>-<id>" (or "run-<time>-<id>" once synced),
# each holding a "run-<id>.wandb" transaction log.
WANDB_RUN_PREFIXES = ("offline-run-", "run-")
# The summary key every finished run has; W&B's summary also holds the last history row,
# so a crashed W&B run still has a non-empty summary and only this key tells them apart.
FINISHED_KEY = "ut_acc"
# W&B summary keys that are bookkeeping of the last logged row, not results.
WANDB_ROW_KEYS = ("stage", "stage_name")
DEFAULT_VALUE = "(default)"  # an override column's value in runs that did not set it

# Overrides that are never columns: seed and method have their own, the rest say where or
# how a run was executed, not what it computed. IGNORED_OVERRIDES match the key exactly;
# IGNORED_OVERRIDE_GROUPS also match "<group>.<key>" and "<group>/<key>".
IGNORED_OVERRIDES = ("seed", "method", "resume", "trainer.progress", "trainer.device",
                     "trainer.num_workers")
IGNORED_OVERRIDE_GROUPS = ("hydra", "logger", "paths")
# Config values that define what a run computed; columns of their own (grouped when they vary).
CONFIG_COLUMNS = {"part": "part", "tasks": "tasks._target_"}
GROUP_CANDIDATES_ATTR = "group_candidates"

SYNTHETIC_METRICS = {
    "ut_acc": "final mean task acc",
    "delta/ret/heldout/i2t_r1": "Δ i2t R@1",
    "delta/ret/heldout/t2i_r1": "Δ t2i R@1",
    "delta/zs/colour/acc": "Δ colour",
    "delta/zs/colour_shape/acc": "Δ colour+shape",
}
FALLBACK_METRICS = ("ut_acc", "bwt", "forgetting", "a_acc")
MTIL_METRICS = ("transfer", "avg", "last", "bwt", "forgetting")  # ZSCL's MTIL table (+ BWT, forgetting)
CIL_METRICS = ("cil_avg", "cil_last")
KNOWN_LABELS = {
    **SYNTHETIC_METRICS,
    "bwt": "BWT",
    "bwt_paper": "BWT (paper)",
    "forgetting": "forgetting",
    "transfer": "transfer",
    "avg": "avg acc",
    "last": "last",
    "a_acc": "A-Acc",
    "cil_avg": "CIL avg",
    "cil_last": "CIL last",
}
STAT_SUFFIXES = ("/mean", "/std", "/n")


# --------------------------------------------------------------------------- finding runs

def _is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() or (path / METRICS_FILE).is_file()


def _is_wandb_run(path: Path) -> bool:
    return (path.name.startswith(WANDB_RUN_PREFIXES) and path.is_dir()
            and any(path.glob("run-*.wandb")))


def _wandb_run_id(path: Path) -> str:
    """'offline-run-20261128_223538-1wnef248' -> '1wnef248'."""
    return path.name.rsplit("-", 1)[-1]


def _folder_run_id(run_dir: Path) -> str | None:
    try:
        return (run_dir / RUN_ID_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _natural_key(path: Path) -> list:
    """'2_lwf_s0' before '10_lwf_s0' (Hydra job numbers), otherwise alphabetical."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_runs(paths: Sequence[Path | str]) -> list[Path]:
    """Run folders (holding ``.hydra/config.yaml`` or ``metrics.jsonl``) and W&B run
    folders (``offline-run-*``) among ``paths``: each path is either, or a folder holding
    them at any depth (a sweep, a copied ``wandb/`` folder). Hidden folders and the inside
    of run folders are not searched. A W&B run that belongs to a found run folder (inside
    its ``wandb/``, or with the id in its ``wandb_run_id.txt``) is replaced by / dropped for
    that run folder. Sorted, deduplicated; a path that does not exist raises FileNotFoundError."""
    found: dict[Path, Path] = {}
    wandb_runs: dict[Path, Path] = {}
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise FileNotFoundError(f"no such file or folder: {root}")
        if not root.is_dir():
            continue
        for dirpath, dirnames, _ in os.walk(root):
            here = Path(dirpath)
            if _is_run_dir(here):
                found.setdefault(here.resolve(), here)
                dirnames[:] = []  # its own wandb/ copy is not a second run
                continue
            if _is_wandb_run(here):
                wandb_runs.setdefault(here.resolve(), here)
                dirnames[:] = []
                continue
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    _merge_wandb_runs(found, wandb_runs)
    return sorted(found.values(), key=_natural_key)


def _merge_wandb_runs(found: dict[Path, Path], wandb_runs: dict[Path, Path]) -> None:
    """Add to ``found`` the W&B runs that are the only record of their run: the run folder's
    files are authoritative (the W&B copy lacks the overrides and the accuracy matrix)."""
    folder_ids = {_folder_run_id(r) for r in found.values()} - {None}
    latest: dict[str, Path] = {}  # run id -> its newest W&B folder (a resume starts a new one)
    for resolved, wandb_run in sorted(wandb_runs.items(), key=lambda kv: kv[0].name):
        owner = wandb_run.parent.parent  # <run folder>/wandb/offline-run-*, given directly
        if wandb_run.parent.name == "wandb" and _is_run_dir(owner):
            found.setdefault(owner.resolve(), owner)
            folder_ids.add(_folder_run_id(owner))
            continue
        latest[_wandb_run_id(resolved)] = wandb_run
    for run_id, wandb_run in latest.items():
        if run_id not in folder_ids:
            found.setdefault(wandb_run.resolve(), wandb_run)


# --------------------------------------------------------------------------- loading runs

def _read_yaml(path: Path):
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _select(cfg, dotted: str):
    node = cfg
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def is_ignored_override(key: str) -> bool:
    """Overrides that say where or how a run executed (paths, logger, ...), not what it computed."""
    return key in IGNORED_OVERRIDES or any(
        key == k or key.startswith((k + ".", k + "/")) for k in IGNORED_OVERRIDE_GROUPS)


def parse_overrides(overrides: Iterable[str] | None) -> dict[str, str]:
    """``["method=lwf", "+method.alpha=0.5", "~x"]`` -> ``{"method": "lwf", "method.alpha": "0.5", "x": "~"}``
    (values stay strings, so grouping is exact)."""
    parsed: dict[str, str] = {}
    for item in overrides or []:
        item = str(item)
        key, sep, value = item.partition("=")
        deleted = key.startswith("~")
        key = key.lstrip("+~").strip()
        parsed[key] = value.strip() if sep else ("~" if deleted else "")
    return parsed


@functools.lru_cache(maxsize=None)
def _read_wandb(path: str) -> dict:
    """``read_offline_run``, once per W&B run and report: each read starts two
    ``wandb leet inspect`` subprocesses, and the plot asks for the rows again."""
    from .tracking import read_offline_run

    return read_offline_run(path)


def _wandb_rows(run_dir: Path) -> list[dict]:
    """The W&B run's evaluation rows, shaped like ``metrics.jsonl`` rows: only rows with a
    ``stage`` (matrix tables and figures are logged without), W&B's own ``_step`` etc. dropped."""
    history = _read_wandb(str(run_dir.resolve()))["history"]
    return [{k: v for k, v in row.items() if not k.startswith("_")}
            for row in history if row.get("stage") is not None]


def read_metrics_rows(run_dir: Path | str) -> list[dict]:
    """Rows of ``metrics.jsonl`` (or of a W&B run's history); unreadable (torn) lines are skipped."""
    if _is_wandb_run(Path(run_dir)):
        return _wandb_rows(Path(run_dir))
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _identity(run_dir: Path) -> tuple[str, object, dict, dict]:
    """(method, seed, config columns, override columns) of a run folder, as far as readable."""
    cfg = _read_yaml(run_dir / CONFIG_FILE) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{CONFIG_FILE} is not a mapping")
    return _identity_from(cfg, parse_overrides(_read_yaml(run_dir / OVERRIDES_FILE)))


def _identity_from(cfg: dict, overrides: dict[str, str]) -> tuple[str, object, dict, dict]:
    method = _select(cfg, "method.name") or overrides.get("method")
    if method is None and _select(cfg, "method._target_"):
        method = str(_select(cfg, "method._target_")).rsplit(".", 1)[-1]
    seed = _select(cfg, "seed")
    if seed is None and "seed" in overrides:
        seed = overrides["seed"]
    try:
        seed = int(seed) if seed is not None else None
    except (TypeError, ValueError):
        pass
    config_cols = {}
    for column, key in CONFIG_COLUMNS.items():
        value = _select(cfg, key)
        if value is not None:
            config_cols[column] = str(value).rsplit(".", 1)[-1] if key.endswith("_target_") else str(value)
    override_cols = {k: v for k, v in overrides.items() if not is_ignored_override(k) and k not in config_cols}
    return str(method) if method is not None else "unknown", seed, config_cols, override_cols


def _folder_summary(run_dir: Path) -> dict | None:
    """``summary.json`` of a run folder, None when there is none (unfinished)."""
    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if not isinstance(summary, dict):
        raise ValueError(f"{SUMMARY_FILE} is not a JSON object")
    return summary


def _wandb_summary(summary: dict) -> dict:
    """The results in a W&B summary: without W&B's ``_step``/``_runtime``/..., the last
    row's stage bookkeeping and logged tables/images (dicts), which are not metrics."""
    return {k: v for k, v in summary.items()
            if not k.startswith("_") and k not in WANDB_ROW_KEYS and not isinstance(v, (dict, list))}


def _wandb_identity(run_dir: Path) -> tuple[str, object, dict, dict]:
    """As ``_identity`` for a W&B run. Its config is the resolved config, but there are no
    Hydra overrides, so it has no override columns (it groups as "(default)")."""
    return _identity_from(_read_wandb(str(run_dir.resolve())).get("config") or {}, {})


def _wandb_finished_summary(run_dir: Path) -> dict | None:
    """A W&B run's results, None when it did not finish (no ``ut_acc``)."""
    summary = _wandb_summary(_read_wandb(str(run_dir.resolve())).get("summary") or {})
    return summary if FINISHED_KEY in summary else None


def load_runs(run_dirs: Iterable[Path | str]) -> tuple[pd.DataFrame, list[dict]]:
    """One row per finished run (columns ``run``, ``method``, ``seed``, the config columns
    ``part``/``tasks``, one column per override that says what was computed, e.g.
    ``method.alpha``, then every summary key) and the list of missing runs
    ``{"run", "method", "seed", "reason"}`` (no summary.json, or unreadable files).
    Override columns hold strings; runs that did not set an override hold "(default)".
    ``run_dirs`` may include W&B runs (see ``find_runs``); one without ``ut_acc`` in its
    summary is missing with reason NO_WANDB_SUMMARY."""
    records: list[dict] = []
    missing: list[dict] = []
    candidates: dict[str, None] = {}
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        method, seed = "unknown", None
        is_wandb = _is_wandb_run(run_dir)
        try:
            method, seed, config_cols, override_cols = (
                _wandb_identity(run_dir) if is_wandb else _identity(run_dir))
            summary = _wandb_finished_summary(run_dir) if is_wandb else _folder_summary(run_dir)
            if summary is None:
                missing.append({"run": str(run_dir), "method": method, "seed": seed,
                                "reason": NO_WANDB_SUMMARY if is_wandb else NO_SUMMARY})
                continue
        except Exception as exc:  # noqa: BLE001 - any broken file makes the run "unreadable"
            missing.append({"run": str(run_dir), "method": method, "seed": seed,
                            "reason": f"unreadable: {type(exc).__name__}: {exc}"})
            continue
        record = {"run": str(run_dir), "method": method, "seed": seed, **config_cols, **override_cols}
        for key in (*config_cols, *override_cols):
            candidates.setdefault(key, None)
        for key, value in summary.items():
            record.setdefault(key, np.nan if value is None else value)
        records.append(record)

    runs = pd.DataFrame.from_records(records)
    if runs.empty:
        runs = pd.DataFrame(columns=["run", "method", "seed"])
    for key in candidates:  # runs that did not set a swept override ran with the default
        runs[key] = runs[key].fillna(DEFAULT_VALUE).astype(str)
    front = ["run", "method", "seed", *candidates]
    runs = runs[front + [c for c in runs.columns if c not in front]]
    runs.attrs[GROUP_CANDIDATES_ATTR] = list(candidates)
    return runs, missing


# --------------------------------------------------------------------------- aggregating

def _group_candidates(runs: pd.DataFrame) -> list[str]:
    if GROUP_CANDIDATES_ATTR in runs.attrs:
        return [c for c in runs.attrs[GROUP_CANDIDATES_ATTR] if c in runs.columns]
    # e.g. a runs.csv read back: every text column except the identity ones
    return [c for c in runs.columns
            if c not in ("run", "method", "seed") and not pd.api.types.is_numeric_dtype(runs[c])]


def group_columns(runs: pd.DataFrame) -> list[str]:
    """``method`` plus the config/override columns that vary between runs."""
    swept = [c for c in _group_candidates(runs) if runs[c].astype(str).nunique(dropna=False) > 1]
    return ["method", *swept]


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """Numeric summary columns of a runs table (everything except identity/group columns)."""
    skip = {"run", "method", "seed", *_group_candidates(runs)}
    return [c for c in runs.columns if c not in skip and pd.api.types.is_numeric_dtype(runs[c])
            and not pd.api.types.is_bool_dtype(runs[c])]


def aggregate(runs: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per group (``method`` + swept overrides, in order of first appearance):
    ``n`` (finished runs = seeds), ``seeds`` ("0,1,2") and, per metric, ``<m>/mean``,
    ``<m>/std`` (ddof=1; NaN for a single seed) and ``<m>/n`` (seeds with a value for m)."""
    metrics = list(metrics) if metrics is not None else metric_columns(runs)
    unknown = [m for m in metrics if m not in runs.columns]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; available: {metric_columns(runs)}")
    keys = group_columns(runs)
    out_rows = []
    if not runs.empty:
        for values, group in runs.groupby(keys, sort=False, dropna=False):
            values = values if isinstance(values, tuple) else (values,)
            row: dict = dict(zip(keys, values))
            row["n"] = len(group)
            seeds = sorted((s for s in group["seed"].tolist() if s is not None and s == s), key=str)
            row["seeds"] = ",".join(str(int(s)) if isinstance(s, float) and s.is_integer() else str(s)
                                    for s in seeds)
            for m in metrics:
                col = pd.to_numeric(group[m], errors="coerce")
                row[f"{m}/mean"] = col.mean()
                row[f"{m}/std"] = col.std(ddof=1)
                row[f"{m}/n"] = int(col.notna().sum())
            out_rows.append(row)
    columns = [*keys, "n", "seeds", *(f"{m}{s}" for m in metrics for s in STAT_SUFFIXES)]
    return pd.DataFrame(out_rows, columns=columns)


# --------------------------------------------------------------------------- tables

def _strip_stat(column: str) -> str:
    """'ut_acc/mean' -> 'ut_acc' (aggregated columns), other names unchanged."""
    for suffix in STAT_SUFFIXES:
        if column.endswith(suffix):
            return column[: -len(suffix)]
    return column


def default_metrics(columns: Iterable[str]) -> list[str]:
    """The synthetic protocol's headline metrics when present; CIL's Avg / Last for class-incremental
    runs; MTIL's Transfer / Avg / Last (+ BWT, forgetting) for runs with a zero-shot row and no
    probes; else ``ut_acc``, ``bwt``, ``forgetting``, ``a_acc`` and every ``delta/*`` metric that exists."""
    names = list(dict.fromkeys(_strip_stat(c) for c in columns))
    present = set(names)
    if any(m in present for m in SYNTHETIC_METRICS if m.startswith("delta/")):
        return [m for m in SYNTHETIC_METRICS if m in present]
    if "cil_avg" in present:
        return [m for m in CIL_METRICS if m in present]
    if "zero_shot_transfer" in present and not any(m.startswith("delta/") for m in names):
        return [m for m in MTIL_METRICS if m in present]
    return [m for m in FALLBACK_METRICS if m in present] + [m for m in names if m.startswith("delta/")]


def metric_label(metric: str) -> str:
    """Short column label: known names, else 'delta/zs/cifar100/acc' -> 'Δ cifar100',
    'delta/ret/coco/i2t_r1' -> 'Δ coco i2t R@1'."""
    if metric in KNOWN_LABELS:
        return KNOWN_LABELS[metric]
    prefix, name = ("Δ ", metric[len("delta/"):]) if metric.startswith("delta/") else ("", metric)
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "zs" and parts[2] == "acc":
        return f"{prefix}{parts[1]}"
    if len(parts) == 3 and parts[0] == "ret":
        rank = re.sub(r"^(i2t|t2i)_r(\d+)$", r"\1 R@\2", parts[2])
        return f"{prefix}{parts[1]} {rank}"
    return prefix + name


def _agg_group_columns(agg: pd.DataFrame) -> list[str]:
    return [c for c in agg.columns if c not in ("n", "seeds") and not c.endswith(STAT_SUFFIXES)]


def _number(x: float) -> str:
    return f"{x + 0.0:.1f}"  # +0.0: no "-0.0"


def _cell(agg_row: pd.Series, metric: str, pm: str = "±") -> str:
    mean, std = agg_row.get(f"{metric}/mean"), agg_row.get(f"{metric}/std")
    n_metric, n = agg_row.get(f"{metric}/n"), agg_row.get("n")
    if mean is None or not math.isfinite(float(mean)):
        return "–"
    text = _number(float(mean))
    if n > 1 and std is not None and math.isfinite(float(std)):
        text += f" {pm} {_number(float(std))}"
    if n_metric is not None and n_metric < n:  # a seed has no value for this metric
        text += f" (n={int(n_metric)})"
    return text


def _display_table(agg: pd.DataFrame, metrics: Sequence[str], labels: dict | None,
                   pm: str = "±") -> pd.DataFrame:
    labels = {**{m: metric_label(m) for m in metrics}, **(labels or {})}
    groups = _agg_group_columns(agg)
    table = pd.DataFrame({g: agg[g].astype(str) for g in groups})
    for m in metrics:
        table[labels[m]] = [_cell(row, m, pm) for _, row in agg.iterrows()]
    table["n"] = agg["n"].astype(int).astype(str)
    return table


def _resolve_metrics(agg: pd.DataFrame, metrics: Sequence[str] | None) -> list[str]:
    available = [c[: -len("/mean")] for c in agg.columns if c.endswith("/mean")]
    if metrics is None:
        return default_metrics(available)
    unknown = [m for m in metrics if m not in available]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; available: {available}")
    return list(metrics)


def comparison_table(agg: pd.DataFrame, metrics: Sequence[str] | None = None,
                     labels: dict[str, str] | None = None) -> str:
    """Markdown table: one row per group, each cell ``mean ± std`` over seeds with one
    decimal (just the mean when n=1; "(n=k)" when only k seeds have that metric), then ``n``."""
    metrics = _resolve_metrics(agg, metrics)
    table = _display_table(agg, metrics, labels)
    header = list(table.columns)
    right = [False] * len(_agg_group_columns(agg)) + [True] * (len(header) - len(_agg_group_columns(agg)))
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if r else ":---" for r in right) + "|"]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _latex_escape(text: str) -> str:
    text = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return (text.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("–", "--"))


def latex_table(agg: pd.DataFrame, metrics: Sequence[str] | None = None,
                labels: dict[str, str] | None = None) -> str:
    """The comparison table as a LaTeX tabular (booktabs), pdflatex-safe (``$\\pm$``,
    ``$\\Delta$``). Uses pandas ``to_latex`` when jinja2 is there, else builds it by hand."""
    metrics = _resolve_metrics(agg, metrics)
    table = _display_table(agg, metrics, labels)
    table = table.apply(lambda column: column.map(_latex_escape))
    table.columns = [_latex_escape(c) for c in table.columns]
    n_groups = len(_agg_group_columns(agg))
    column_format = "l" * n_groups + "r" * (table.shape[1] - n_groups)
    try:
        return table.to_latex(index=False, escape=False, column_format=column_format)
    except ImportError:  # pandas' Styler needs jinja2
        lines = [rf"\begin{{tabular}}{{{column_format}}}", r"\toprule",
                 " & ".join(table.columns) + r" \\", r"\midrule"]
        lines += [" & ".join(row) + r" \\" for row in table.astype(str).itertuples(index=False)]
        lines += [r"\bottomrule", r"\end{tabular}", ""]
        return "\n".join(lines)


# --------------------------------------------------------------------------- plot

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


# --------------------------------------------------------------------------- accuracy matrices

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
    from .plots import plot_matrix

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


# --------------------------------------------------------------------------- report

class NoFinishedRuns(ValueError):
    """No finished run (with summary.json) under the given paths."""


class ReportError(ValueError):
    """A run's files cannot be reported as they are; the message names the run or file."""


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
            dropped.append({"run": row["run"], "method": row["method"], "seed": row["seed"],
                            "reason": f"{DUPLICATE}: same configuration and seed as `{_display_path(seen[key])}` "
                                      "(newer, counted instead)"})
            continue
        seen[key] = row["run"]
        kept_rows.append(index)
    kept = runs.loc[sorted(kept_rows)]
    kept.attrs = dict(runs.attrs)
    return kept, dropped


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
        raise ReportError("summary values that are not numbers (the table would silently leave them out):\n"
                          + "\n".join(problems) + "\nFix: rerun those runs (resume=true) or remove them from the report.")


def _where(paths: Sequence[Path | str]) -> str:
    return ", ".join(str(p) for p in paths)


def _display_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:  # other drive on Windows
        return path
    return path if rel.startswith("..") else rel


def missing_lines(missing: Sequence[dict]) -> list[str]:
    if not missing:
        return ["none"]
    return [f"- `{_display_path(m['run'])}` (method {m['method']}, seed {m['seed']}): {m['reason']}"
            for m in missing]


def write_report(paths: Sequence[Path | str], out_dir: Path | str,
                 metrics: Sequence[str] | None = None, labels: dict[str, str] | None = None) -> dict:
    """Find and aggregate the runs under ``paths``; write ``report.md``, ``runs.csv``,
    ``summary.csv``, ``summary.tex``, ``comparison.png`` and, per group whose run folders
    have accuracy matrices, ``matrix_<group>.png`` (mean over seeds) into ``out_dir``. Returns
    ``{"table": markdown, "missing": [...], "files": [...]}``. Raises NoFinishedRuns when
    there is nothing to report and KeyError for an unknown metric."""
    paths = [Path(p) for p in paths]
    _read_wandb.cache_clear()  # a W&B run may have grown since an earlier report in this process
    run_dirs = find_runs(paths)
    if not run_dirs:
        raise NoFinishedRuns(f"no run folders under {_where(paths)}")
    runs, missing = load_runs(run_dirs)
    runs, duplicates = drop_duplicate_seeds(runs)
    for duplicate in duplicates:
        print(f"clipcl-report: warning: {duplicate['run']}: {duplicate['reason']}", file=sys.stderr)
    missing += duplicates
    summary_columns = [c for c in runs.columns if c not in ("run", "method", "seed", *_group_candidates(runs))]
    check_numeric(runs, list(metrics) if metrics is not None else default_metrics(summary_columns))
    if runs.empty:
        if all(m["reason"] in (NO_SUMMARY, NO_WANDB_SUMMARY) for m in missing):
            raise NoFinishedRuns(f"no finished runs under {_where(paths)}: every run folder lacks summary.json")
        raise NoFinishedRuns(f"no finished runs under {_where(paths)}: every run folder lacks summary.json "
                             "or is unreadable\n" + "\n".join(missing_lines(missing)))

    agg = aggregate(runs)
    table_metrics = _resolve_metrics(agg, metrics)
    table = comparison_table(agg, table_metrics, labels)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in
             ("report.md", "runs.csv", "summary.csv", "summary.tex", "comparison.png")}
    runs.to_csv(files["runs.csv"], index=False)
    agg.to_csv(files["summary.csv"], index=False)
    files["summary.tex"].write_text(latex_table(agg, table_metrics, labels), encoding="utf-8")
    plot_comparison(runs, files["comparison.png"])
    matrix_files, matrix_lines = write_group_matrices(runs, out)
    files.update((p.name, p) for p in matrix_files)

    n_values = sorted(set(agg["n"].astype(int)))
    lines = ["# Run report", "",
             f"{len(runs)} finished run(s) in {len(agg)} group(s), {len(missing)} missing or failed; "
             f"from {', '.join(f'`{_display_path(str(p))}`' for p in paths)}.", "",
             table, "",
             "Cells: mean ± std over seeds (std with ddof=1; a single seed shows the mean only); "
             "n: finished seeds. Δ: after the last stage minus zero-shot, in points.",
             ]
    if len(n_values) > 1:
        lines.append(f"**Groups differ in their number of seeds (n = {', '.join(map(str, n_values))}).**")
    lines += ["", "![trade-off and probes over stages](comparison.png)", ""]
    if matrix_lines:
        lines += ["## Accuracy matrices (mean over seeds)", "", *matrix_lines]
    lines += ["## Missing or failed runs", "", *missing_lines(missing), ""]
    files["report.md"].write_text("\n".join(lines), encoding="utf-8")
    return {"table": table, "missing": missing, "files": [str(p) for p in files.values()]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="clipcl-report",
        description="Aggregate finished run folders (or sweep folders holding them) into a "
                    "comparison table over seeds, CSV/LaTeX summaries and a trade-off plot.")
    parser.add_argument("paths", nargs="+", type=Path,
                        help="run folders, offline W&B runs (wandb/offline-run-*) or folders holding them")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: PATH/report for a single PATH, else ./report)")
    parser.add_argument("--metrics", nargs="+", default=None,
                        help="summary metrics for the table (default: the protocol's headline metrics)")
    args = parser.parse_args(argv)

    out = args.out
    if out is None:
        out = args.paths[0] / "report" if len(args.paths) == 1 and args.paths[0].is_dir() else Path("report")
    try:
        result = write_report(args.paths, out, metrics=args.metrics)
    except (NoFinishedRuns, ReportError, FileNotFoundError) as exc:
        print(f"clipcl-report: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"clipcl-report: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    print(result["table"])
    print("\nMissing or failed runs:")
    print("\n".join(missing_lines(result["missing"])))
    print("\nWrote:")
    print("\n".join(f"  {_display_path(f)}" for f in result["files"]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
