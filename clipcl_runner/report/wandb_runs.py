"""Offline W&B runs as report input, for runs whose run folder was lost (only ``wandb/`` was copied
off a cluster): recognised by their folder, read with ``tracking.read_offline_run`` (no network),
once per run and report."""

from __future__ import annotations

import functools
from pathlib import Path

from .. import metric_names

# W&B folders of one run: "offline-run-<time>-<id>" (or "run-<time>-<id>" once synced),
# each holding a "run-<id>.wandb" transaction log.
WANDB_RUN_PREFIXES = ("offline-run-", "run-")
# The summary key every finished run has; W&B's summary also holds the last history row,
# so a crashed W&B run still has a non-empty summary and only this key tells them apart.
FINISHED_KEY = "ut_acc"
# W&B summary keys that are bookkeeping of the last logged row, not results.
WANDB_ROW_KEYS = ("stage", "stage_name")
NO_WANDB_SUMMARY = "W&B run has no summary (unfinished or failed)"


def _is_wandb_run(path: Path) -> bool:
    return path.name.startswith(WANDB_RUN_PREFIXES) and path.is_dir() and any(path.glob("run-*.wandb"))


def _wandb_run_id(path: Path) -> str:
    """'offline-run-20261128_223538-1wnef248' -> '1wnef248'; W&B appends '-1', '-2', ... when a resumed
    attempt of the same run starts within the same second: 'offline-run-20261128_223538-1wnef248-1'."""
    parts = path.name.split("-")
    plain = 4 if parts[0] == "offline" else 3  # [offline-]run-<time>-<id>
    return parts[-2] if len(parts) > plain and parts[-1].isdigit() else parts[-1]


@functools.cache
def _read_wandb(path: str) -> dict:
    """``read_offline_run``, once per W&B run and report: each read starts two
    ``wandb leet inspect`` subprocesses, and the plot asks for the rows again."""
    from ..tracking import read_offline_run

    return read_offline_run(path)


def _wandb_rows(run_dir: Path) -> list[dict]:
    """The W&B run's evaluation rows, shaped like ``metrics.jsonl`` rows: only rows with a
    ``stage`` (matrix tables and figures are logged without), W&B's own ``_step`` etc. dropped."""
    history = _read_wandb(str(run_dir.resolve()))["history"]
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in history if row.get("stage") is not None]


def _wandb_summary(summary: dict) -> dict:
    """The results in a W&B summary: without W&B's ``_step``/``_runtime``/..., the last
    row's stage bookkeeping and logged tables/images (dicts), which are not metrics; the eval
    protocol's ``headline`` list stays (``load_runs`` takes it out of the metrics)."""
    return {
        k: v
        for k, v in summary.items()
        if not k.startswith("_")
        and k not in WANDB_ROW_KEYS
        and (k == metric_names.HEADLINE or not isinstance(v, (dict, list)))
    }


def _wandb_config(run_dir: Path) -> dict:
    """The resolved config a W&B run was logged with."""
    return _read_wandb(str(run_dir.resolve())).get("config") or {}


def _wandb_finished_summary(run_dir: Path) -> dict | None:
    """A W&B run's results, None when it did not finish (no ``ut_acc``)."""
    summary = _wandb_summary(_read_wandb(str(run_dir.resolve())).get("summary") or {})
    return summary if FINISHED_KEY in summary else None
