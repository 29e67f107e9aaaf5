"""Finding run folders (and offline W&B runs) and loading them into one table: one row per finished
run with its method, seed, the configuration columns that decide its results, and its summary.

Run folders whose files say nothing (no config: a start refused before the run folder was taken, a
torchrun rank's own folder) are strays, listed apart from the failed runs."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .. import metric_names
from ..run_names import is_ignored_override, parse_overrides
from .wandb_runs import (
    NO_WANDB_SUMMARY,
    _is_wandb_run,
    _wandb_config,
    _wandb_finished_summary,
    _wandb_rows,
    _wandb_run_id,
)

CONFIG_FILE = Path(".hydra") / "config.yaml"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
MATRIX_FILE = "accuracy_matrix.csv"
RUN_ID_FILE = "wandb_run_id.txt"  # written by RunTracker: links a run folder to its W&B run

NO_SUMMARY = "no summary.json (unfinished or failed)"
DEFAULT_VALUE = "(default)"  # an override column's value in runs that did not set it
# Config values that define what a run computed; columns of their own (grouped when they vary).
CONFIG_COLUMNS = {"part": "part", "tasks": "tasks._target_"}
GROUP_CANDIDATES_ATTR = "group_candidates"


class NoFinishedRuns(ValueError):
    """No finished run (with summary.json) under the given paths."""


class ReportError(ValueError):
    """A run's files cannot be reported as they are; the message names the run or file."""


def _is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() or (path / METRICS_FILE).is_file()


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


STRAY_MARKERS = ("job.json",)  # files a job leaves in its folder before it holds a run (besides its *.log)


def find_strays(paths: Sequence[Path | str]) -> list[Path]:
    """Folders under ``paths`` that a job created but that hold no run: no ``.hydra/config.yaml``, no
    ``metrics.jsonl``, but a job's log (``*.log``) or ``job.json``; e.g. a start refused before it took
    the folder (a typo in an override) or a torchrun rank's own folder (rank 0 writes the run). Listed
    apart from failed runs, which have a config."""
    strays: dict[Path, Path] = {}
    for raw in paths:
        root = Path(raw)
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            if _is_run_dir(here) or _is_wandb_run(here):
                dirnames[:] = []
                continue
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "wandb")
            if (
                here != root
                and not dirnames
                and any(name.endswith(".log") or name in STRAY_MARKERS for name in filenames)
            ):
                strays.setdefault(here.resolve(), here)
    return sorted(strays.values(), key=_natural_key)


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


def _wandb_identity(run_dir: Path) -> tuple[str, object, dict, dict]:
    """As ``_identity`` for a W&B run. Its config is the resolved config, but there are no
    Hydra overrides, so it has no override columns (it groups as "(default)")."""
    return _identity_from(_wandb_config(run_dir), {})


def load_runs(run_dirs: Iterable[Path | str]) -> tuple[pd.DataFrame, list[dict]]:
    """One row per finished run (columns ``run``, ``method``, ``seed``, the config columns
    ``part``/``tasks``, one column per override that says what was computed, e.g.
    ``method.alpha``, then every summary key) and the list of missing runs
    ``{"run", "method", "seed", "reason"}`` (no summary.json, or unreadable files).
    Override columns hold strings; runs that did not set an override hold "(default)".
    ``run_dirs`` may include W&B runs (see ``find_runs``); one without ``ut_acc`` in its
    summary is missing with reason NO_WANDB_SUMMARY. The runs' eval protocol's choice for the report
    (summary.json's ``headline`` and ``plot_metric``, runs from before it have none) goes to ``.attrs``,
    not to columns: the headline metrics of all runs in order of first appearance, the first plot metric."""
    records: list[dict] = []
    missing: list[dict] = []
    candidates: dict[str, None] = {}
    headline: dict[str, None] = {}
    plot_metrics: dict[str, None] = {}
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        method, seed = "unknown", None
        is_wandb = _is_wandb_run(run_dir)
        try:
            method, seed, config_cols, override_cols = _wandb_identity(run_dir) if is_wandb else _identity(run_dir)
            summary = _wandb_finished_summary(run_dir) if is_wandb else _folder_summary(run_dir)
            if summary is None:
                missing.append(
                    {
                        "run": str(run_dir),
                        "method": method,
                        "seed": seed,
                        "reason": NO_WANDB_SUMMARY if is_wandb else NO_SUMMARY,
                    }
                )
                continue
        except Exception as exc:  # noqa: BLE001 - any broken file makes the run "unreadable"
            missing.append(
                {
                    "run": str(run_dir),
                    "method": method,
                    "seed": seed,
                    "reason": f"unreadable: {type(exc).__name__}: {exc}",
                }
            )
            continue
        listed = summary.pop(metric_names.HEADLINE, None) or []
        headline.update((str(key), None) for key in ([listed] if isinstance(listed, str) else listed))
        if summary.get(metric_names.PLOT_METRIC):
            plot_metrics.setdefault(str(summary[metric_names.PLOT_METRIC]), None)
        summary.pop(metric_names.PLOT_METRIC, None)
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
    if headline:
        runs.attrs[metric_names.HEADLINE] = list(headline)
    if plot_metrics:
        runs.attrs[metric_names.PLOT_METRIC] = next(iter(plot_metrics))
    return runs, missing


def _display_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:  # other drive on Windows
        return path
    return path if rel.startswith("..") else rel
