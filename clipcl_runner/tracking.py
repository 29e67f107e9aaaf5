"""Run tracking: local run-folder files first, Weights & Biases second.

Every result is written to the run folder before it goes to W&B, so a W&B outage,
missing credentials or ``mode="disabled"`` never loses anything:

    run_dir/metrics.jsonl          one JSON object per evaluation (append + fsync)
    run_dir/<name>.csv, <name>.png accuracy matrix and its heatmap
    run_dir/summary.json           final summary (sorted keys, NaN -> null)
    run_dir/wandb_run_id.txt       W&B run id, reused when a run resumes
    run_dir/wandb_logged.json      which rows and last train step that W&B run holds (a resume re-logs
                                   the missing rows and skips the curve points it already has)
    run_dir/wandb/offline-run-*/   the W&B offline log (mode="offline", the default)

W&B plots the evaluation rows against ``stage`` (0 = before the first stage), and with them, at
each stage end, the run's continual-learning summary so far (``cl/ut_acc``, ``cl/bwt``,
``cl/forgetting``, ``cl/transfer``, ``cl/delta/<probe>``, ... from the caller's ``stage_series``,
the same function as the final summary, so the last point equals ``summary.json``). Training
curves (``log_train``: ``step/loss``, its terms, ``step/lr``) are plotted against ``train/step``;
they go to W&B only (they are a view of training, not a result). Offline runs are
uploaded later with ``wandb sync <run_dir>/wandb/offline-run-*``; ``read_offline_run``
reads one back without any network (``wandb leet inspect``).

``wandb`` is imported lazily, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import string
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import run_folder

if TYPE_CHECKING:  # pragma: no cover
    import pandas

log = logging.getLogger(__name__)

METRICS_FILE = run_folder.METRICS
SUMMARY_FILE = run_folder.SUMMARY
RUN_ID_FILE = run_folder.WANDB_RUN_ID
LEDGER_FILE = run_folder.WANDB_LEDGER

_NO_WANDB_MODES = {"disabled", "none", "off", "false"}
TRAIN_STEP = "train/step"  # x axis of the training curves
TRAIN_PREFIX = "step/"  # training curves: step/loss, step/<term>, step/lr (stage rows keep train/<term> means)
_WANDB_MODES = {"offline", "online", "shared"}

_FIX_HINT = (
    "To fix: log offline with WANDB_MODE=offline (or logger.mode=offline) and upload later "
    "with `wandb sync <run_dir>/wandb/offline-run-*`, or run `wandb login` / set "
    "WANDB_API_KEY for online logging, or use logger.mode=disabled to silence W&B."
)


# --------------------------------------------------------------------------- helpers


def to_jsonable(value: Any, *, nan_to_none: bool = True) -> Any:
    """Plain-Python version of ``value`` (numpy/torch scalars and arrays -> Python,
    Paths -> str); NaN/inf -> None unless ``nan_to_none=False``."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) or not nan_to_none else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, nan_to_none=nan_to_none) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, nan_to_none=nan_to_none) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars, 0-d arrays
        try:
            return to_jsonable(value.item(), nan_to_none=nan_to_none)
        except (ValueError, RuntimeError):  # more than one element
            pass
    if hasattr(value, "tolist") and callable(value.tolist):
        return to_jsonable(value.tolist(), nan_to_none=nan_to_none)
    return str(value)


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves either the old or the new file."""
    run_folder.atomic_write(path, text)


def read_metrics(run_dir: Path | str) -> list[dict]:
    """Rows of ``run_dir/metrics.jsonl``; a torn last line (crash mid-write) is skipped."""
    return run_folder.read_metrics(run_dir)


def _row_key(row: Mapping[str, Any]) -> list:
    """What identifies an evaluation row: its stage (fractional inside a stage) and name."""
    return [float(row["stage"]), str(row["stage_name"])]


def git_commit(directory: Path | str | None = None) -> str | None:
    """``git rev-parse HEAD`` of the repository holding ``directory`` (default: this
    package), or None when it is not a git checkout or has no commit yet."""
    directory = Path(directory) if directory is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def _new_run_id(n: int = 8) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _plain_config(config: Any) -> dict:
    if config is None:
        return {}
    if type(config).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(config, resolve=True)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    return to_jsonable(dict(config))


# --------------------------------------------------------------------------- tracker


class RunTracker:
    """Write evaluation rows, the accuracy matrix and the summary to the run folder and,
    unless ``mode`` is "disabled"/"none", to a W&B run (offline by default).

    Use as a context manager so the W&B run is always finished, also on exceptions::

        with RunTracker(run_dir, config=cfg, group="lwf", job_type="mst") as tracker:
            tracker.log_eval({"stage": 0, "stage_name": "zero-shot", "zs/heldout/acc": 61.2})
            ...

    An environment variable ``WANDB_MODE=offline`` (or ``disabled``) overrides
    ``mode="online"``, so compute nodes without internet can force offline logging.
    Offline mode also sets ``WANDB_ERROR_REPORTING=false`` unless it is already set, so
    nothing (not even wandb-core's own error telemetry) reaches for the network.
    """

    def __init__(
        self,
        run_dir: Path | str,
        *,
        config: Mapping | Any,
        mode: str | None = "offline",
        project: str = "clipcl",
        entity: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        wandb_dir: Path | str | None = None,
        resume: bool = False,
        stage_series: Callable[[list[dict]], Mapping[str, Any]] | None = None,
        system_stats: bool = False,
        console: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.summary_path = self.run_dir / SUMMARY_FILE
        self.config = _plain_config(config)
        if "git_commit" not in self.config:
            commit = git_commit()
            if commit is not None:
                self.config["git_commit"] = commit
        self.mode = self._resolve_mode(mode)
        self.resume = resume
        self.run = None  # the wandb Run, or None (disabled or failed)
        self.run_id: str | None = None
        self._summary: dict[str, Any] = {}
        self._finished = False
        self._warned: set[str] = set()
        self._stage_series = stage_series
        self._rows: list[dict] = []  # the evaluation rows so far (stage_series' input)
        self._defined: set[str] = set()  # W&B metrics given their x axis

        if not resume and self.metrics_path.exists() and self.metrics_path.stat().st_size > 0:
            old = self.metrics_path.with_name(f"metrics.{time.strftime('%Y%m%d_%H%M%S')}.jsonl.old")
            log.warning(
                "%s exists but resume=False: moving it to %s and starting fresh",
                self.metrics_path,
                old.name,
            )
            os.replace(self.metrics_path, old)

        self._wandb_settings = dict(
            project=project,
            entity=entity,
            group=group,
            job_type=job_type,
            name=name,
            tags=list(tags or ()),
            wandb_dir=Path(wandb_dir) if wandb_dir else self.run_dir,
            system_stats=bool(system_stats),
            console=bool(console),
        )
        self._wandb_pending = self.mode != "disabled"
        self._ledger: list[list] = []  # rows (stage, name) the W&B run holds
        self._train_step: int | None = None  # the last train/step the W&B run holds
        if self._wandb_pending and not resume:
            self._start_wandb()
        # A resuming tracker starts W&B in ``restore`` (once it knows the checkpoint's rows) or at the first log.

    def _start_wandb(self, new_run: bool = False) -> None:
        if not self._wandb_pending:
            return
        self._wandb_pending = False
        self._init_wandb(**self._wandb_settings, new_run=new_run)

    # ------------------------------------------------------------------ W&B setup

    @staticmethod
    def _resolve_mode(mode: str | None) -> str:
        m = "disabled" if mode is None or mode is False else str(mode).strip().lower()
        if m in _NO_WANDB_MODES:
            return "disabled"
        if m not in _WANDB_MODES:
            raise ValueError(f"unknown W&B mode {mode!r}: use 'offline', 'online' or 'disabled'/'none'")
        env = os.environ.get("WANDB_MODE", "").strip().lower()
        if m == "online" and env in {"offline", "dryrun", "disabled"}:
            log.info("WANDB_MODE=%s overrides mode='online'", env)
            m = "disabled" if env == "disabled" else "offline"
        return m

    def _run_id_for_init(self, new_run: bool = False) -> str:
        id_path = self.run_dir / RUN_ID_FILE
        if self.resume and id_path.exists() and not new_run:
            run_id = id_path.read_text(encoding="utf-8").strip()
            if run_id:
                return run_id
            log.warning("%s is empty; starting a new W&B run", id_path)
        elif self.resume:
            log.info("resume=True but %s is missing; starting a new W&B run", id_path)
        run_id = _new_run_id()
        _atomic_write_text(id_path, run_id + "\n")
        _atomic_write_text(self.run_dir / LEDGER_FILE, json.dumps({"run_id": run_id, "rows": []}) + "\n")
        return run_id

    def _read_ledger_file(self) -> dict:
        try:
            return run_folder.read_json(self.run_dir / LEDGER_FILE, default={}) or {}
        except run_folder.RunFolderError as error:
            log.warning("%s; treating the W&B run as empty", error)
            return {}

    def _read_ledger(self) -> tuple[str | None, list[list]]:
        """(W&B run id, rows it holds) as recorded in the run folder; an unreadable ledger holds nothing."""
        ledger = self._read_ledger_file()
        return ledger.get("run_id"), [list(key) for key in ledger.get("rows", [])]

    def _write_ledger(self) -> None:
        ledger = {"run_id": self.run_id, "rows": self._ledger}
        if self._train_step is not None:
            ledger["train_step"] = self._train_step
        self._wb("ledger", lambda: _atomic_write_text(self.run_dir / LEDGER_FILE, json.dumps(ledger) + "\n"))

    def _init_wandb(
        self,
        *,
        project,
        entity,
        group,
        job_type,
        name,
        tags,
        wandb_dir: Path,
        system_stats: bool = False,
        console: bool = False,
        new_run: bool = False,
    ) -> None:
        self.run_id = self._run_id_for_init(new_run)
        ledger = self._read_ledger_file()
        same_run = ledger.get("run_id") == self.run_id
        self._ledger = [list(key) for key in ledger.get("rows", [])] if same_run else []
        # The last training-curve step this W&B run holds: a resume from a mid-stage checkpoint
        # recomputes the steps after the checkpoint, and W&B must get each of them once.
        self._train_step = ledger.get("train_step") if same_run else None
        try:
            import wandb
        except Exception as exc:  # noqa: BLE001 - any import problem means "local files only"
            log.warning(
                "W&B unavailable (%s): continuing with local files only in %s. "
                "Install wandb, or use logger.mode=disabled.",
                exc,
                self.run_dir,
            )
            return
        if self.mode == "offline":
            # wandb-core otherwise starts with error reporting to the W&B server enabled
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        wandb_dir.mkdir(parents=True, exist_ok=True)
        kwargs = dict(
            project=project,
            entity=entity,
            group=group,
            job_type=job_type,
            name=name,
            tags=tags or None,
            config=self.config,
            dir=str(wandb_dir),
            mode=self.mode,
            id=self.run_id,
            resume="allow",
        )
        try:
            settings = _quiet_settings(wandb, system_stats=system_stats, console=console)
            self.run = wandb.init(**kwargs, reinit="finish_previous", settings=settings)
            self.run.define_metric("stage")
            self.run.define_metric(TRAIN_STEP)
            self.run.define_metric(TRAIN_PREFIX + "*", step_metric=TRAIN_STEP)
        except Exception as exc:  # noqa: BLE001 - never crash the training run over W&B
            self.run = None
            log.warning(
                "W&B init (mode=%s) failed: %s: %s. Continuing with local files only in %s. %s",
                self.mode,
                type(exc).__name__,
                exc,
                self.run_dir,
                _FIX_HINT,
            )
            try:  # leave no half-initialised global run behind
                wandb.finish(exit_code=1)
            except Exception:  # noqa: BLE001
                pass
            return
        if self.mode == "offline" and self.wandb_run_dir is not None:
            log.info("W&B offline run %s; upload later with `wandb sync %s`", self.run_id, self.wandb_run_dir)

    @property
    def wandb_run_dir(self) -> Path | None:
        """The W&B run folder (``.../wandb/offline-run-<time>-<id>``), or None."""
        if self.run is None:
            return None
        try:
            return Path(self.run.dir).parent
        except Exception:  # noqa: BLE001
            return None

    @property
    def wandb_active(self) -> bool:
        return self.run is not None and not self._finished

    def _wb(self, what: str, fn, *args, **kwargs) -> None:
        """Call a W&B function; a failure is a warning (once per kind), never an error."""
        if not self.wandb_active:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            if what not in self._warned:
                self._warned.add(what)
                log.warning(
                    "W&B %s failed (%s: %s); the local files in %s are complete",
                    what,
                    type(exc).__name__,
                    exc,
                    self.run_dir,
                )

    # ------------------------------------------------------------------ logging

    def restore(self, rows: list[dict]) -> None:
        """Resume: make metrics.jsonl hold exactly ``rows`` (the evaluations the checkpoint
        covers; rows written after the checkpoint are dropped), and the W&B run hold each of
        them exactly once.

        ``wandb_logged.json`` says which rows the W&B run got. When it holds a row the checkpoint
        does not (evaluated after the checkpoint, then redone now), that run cannot be rewound:
        the resumed job continues in a new W&B run. The rows the W&B run lacks are logged again.
        """
        text = "".join(json.dumps(to_jsonable(dict(r)), allow_nan=False) + "\n" for r in rows)
        _atomic_write_text(self.metrics_path, text)
        self._rows = [to_jsonable(dict(row)) for row in rows]
        if not self._wandb_pending:
            return
        keys = [_row_key(to_jsonable(dict(r))) for r in rows]
        ledger_id, ledger_rows = self._read_ledger()
        id_path = self.run_dir / RUN_ID_FILE
        current = id_path.read_text(encoding="utf-8").strip() if id_path.exists() else None
        stale = [key for key in ledger_rows if key not in keys] if ledger_id == current else []
        if stale:
            log.warning(
                "W&B run %s holds %d row(s) evaluated after the checkpoint (%s): continuing in a new "
                "W&B run, so that every row is logged once",
                current,
                len(stale),
                ", ".join(name for _, name in stale),
            )
        self._start_wandb(new_run=bool(stale))
        for index, row in enumerate(rows):
            if _row_key(to_jsonable(dict(row))) not in self._ledger:
                self._log_wandb_row(to_jsonable(dict(row), nan_to_none=False), self._rows[: index + 1])

    def _series(self, wb_row: dict, rows: list[dict]) -> dict:
        """The CL summary so far for a stage-end row (integer stage > 0), else nothing."""
        stage = float(wb_row["stage"])
        if self._stage_series is None or stage <= 0 or not stage.is_integer():
            return {}
        try:
            return to_jsonable(dict(self._stage_series(rows)), nan_to_none=False)
        except Exception as exc:  # noqa: BLE001 - a curve is a view; the rows are already on disk
            if "series" not in self._warned:
                self._warned.add("series")
                log.warning("per-stage W&B series not computed (%s: %s)", type(exc).__name__, exc)
            return {}

    def _define_stage_metrics(self, keys) -> None:
        """Every evaluation metric is plotted against ``stage`` (the training curves against ``train/step``)."""
        for key in keys:
            if key not in self._defined and key != "stage" and not key.startswith(TRAIN_PREFIX):
                self._defined.add(key)
                self._wb("define_metric", self.run.define_metric, key, step_metric="stage")

    def _at_last_stage(self) -> dict:
        """Tables and figures are shown at the last evaluated stage (W&B's media panels step by ``stage``)."""
        return {"stage": self._rows[-1]["stage"]} if self._rows else {}

    def _log_wandb_row(self, wb_row: dict, rows: list[dict] | None = None) -> None:
        if not self.wandb_active:
            return
        wb_row = {**wb_row, **self._series(wb_row, rows if rows is not None else self._rows)}
        self._define_stage_metrics(wb_row)
        # Recorded before logging: a kill in between makes the next resume start a new W&B run
        # rather than log this row twice.
        self._ledger.append(_row_key(wb_row))
        self._write_ledger()
        self._wb("log", lambda: self.run.log(wb_row))

    def log_eval(self, row: Mapping[str, Any]) -> None:
        """One evaluation: ``row`` has a numeric "stage" (0 = before the first stage; fractional
        inside a stage, e.g. per-epoch evaluations), str
        "stage_name", optional "epoch", and float metrics ("task/T1/acc", "zs/x/acc",
        "ret/x/i2t_r1", ...). Appended durably to metrics.jsonl, then logged to W&B."""
        if "stage" not in row or "stage_name" not in row:
            raise KeyError(f"an eval row needs 'stage' and 'stage_name', got keys {sorted(row)}")
        wb_row = to_jsonable(dict(row), nan_to_none=False)  # W&B keeps NaN as NaN
        row = to_jsonable(dict(row))
        if not isinstance(row["stage"], (int, float)) or isinstance(row["stage"], bool):
            raise TypeError(f"row['stage'] must be a number, got {row['stage']!r}")
        run_folder.append_line(self.metrics_path, json.dumps(row, allow_nan=False))
        self._rows.append(row)
        self._start_wandb()
        self._log_wandb_row(wb_row)

    def log_train(self, step: int, values: Mapping[str, Any]) -> None:
        """Training curves, W&B only: ``values`` (e.g. ``{"loss": 0.7, "lr": 1e-4}``) logged as
        ``step/<key>`` against ``train/step`` = ``step`` (optimiser steps since the run started).
        A step at or below the last one this W&B run holds (``wandb_logged.json``) is skipped: after a
        resume from a mid-stage checkpoint the curve goes on from where the W&B run stopped, each
        point once."""
        if self._wandb_pending:
            self._start_wandb()
        if not self.wandb_active or (self._train_step is not None and int(step) <= self._train_step):
            return
        # Recorded before logging, like the rows: a kill in between loses a point, never doubles one.
        self._train_step = int(step)
        self._write_ledger()
        payload = {TRAIN_STEP: int(step)}
        payload.update(
            {TRAIN_PREFIX + str(key): value for key, value in to_jsonable(dict(values), nan_to_none=False).items()}
        )
        self._wb("log_train", self.run.log, payload)

    def log_checkpoint(self, path: Path | str, stage: int) -> None:
        """Upload a checkpoint file as a W&B model artifact (``logger.log_checkpoints=true``; off by default:
        a ViT-B checkpoint is GBs). The run folder keeps the file either way."""
        path = Path(path)
        if not self.wandb_active or not path.is_file():
            return

        def _log():
            import wandb

            artifact = wandb.Artifact(f"checkpoint-{self.run_id}", type="model", metadata={"stage": int(stage)})
            artifact.add_file(str(path))
            self.run.log_artifact(artifact, aliases=["latest", f"stage-{int(stage)}"])

        self._wb("log_checkpoint", _log)

    def log_matrix(self, matrix: pandas.DataFrame, name: str = "accuracy_matrix", title: str | None = None) -> None:
        """Write ``run_dir/<name>.csv`` (rows "zero-shot", "after T1", ...; columns = the
        stages' test sets) and ``<name>.png`` (titled ``title``, e.g. the run's method and seed),
        and log a W&B table and heatmap image."""
        path = self.run_dir / f"{name}.csv"
        _atomic_write_text(path, matrix.to_csv(index=True))
        self._start_wandb()
        png = self.run_dir / f"{name}.png"
        try:
            from .plots import plot_matrix

            plot_matrix(matrix, png, title=title or name.replace("_", " "))
        except Exception as exc:  # noqa: BLE001 - the CSV is the record; a plot is a view
            log.warning("could not plot %s: %s: %s", name, type(exc).__name__, exc)
            png = None
        if not self.wandb_active:
            return

        def _log():
            import wandb

            label = matrix.index.name or "model"
            df = matrix.copy()
            df.columns = [str(c) for c in df.columns]
            df = df.reset_index(names=label)
            df[label] = df[label].astype(str)
            payload = {name: wandb.Table(dataframe=df)}
            if png is not None:
                payload[f"{name}_heatmap"] = wandb.Image(str(png))
            self.run.log({**payload, **self._at_last_stage()})

        self._wb("log_matrix", _log)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``run_dir/summary.json`` (sorted keys, NaN -> null; keys from earlier
        calls of this tracker are kept) and set ``run.summary[key]`` for each key."""
        self._summary.update(to_jsonable(dict(summary)))
        self._start_wandb()
        _atomic_write_text(
            self.summary_path, json.dumps(self._summary, indent=2, sort_keys=True, allow_nan=False) + "\n"
        )

        def _set():
            for k, v in to_jsonable(dict(summary), nan_to_none=False).items():
                self.run.summary[k] = v

        self._wb("summary", _set)

    def log_figure(self, path: Path | str, key: str) -> None:
        """Log an existing image file (PNG) to W&B under ``key``."""
        path = Path(path)
        if not path.exists():
            log.warning("log_figure: %s does not exist", path)
            return
        if not self.wandb_active:
            return

        def _log():
            import wandb

            self.run.log({key: wandb.Image(str(path)), **self._at_last_stage()})

        self._wb("log_figure", _log)

    def finish(self, exit_code: int = 0) -> None:
        """Finish the W&B run (idempotent). Local files are already complete."""
        if self._finished:
            return
        self._finished = True
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B finish failed (%s: %s)", type(exc).__name__, exc)

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        self.finish(exit_code=1 if exc_type is not None else 0)
        return False  # never swallow the exception


class SilentTracker:
    """The tracker of a distributed run's other ranks: rank 0 writes the run folder and the W&B run."""

    def restore(self, rows: list[dict]) -> None:
        pass

    def log_eval(self, row: Mapping[str, Any]) -> None:
        pass

    def log_matrix(self, matrix, name: str = "accuracy_matrix", title: str | None = None) -> None:
        pass

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        pass

    def log_figure(self, path: Path | str, key: str) -> None:
        pass

    def log_train(self, step: int, values: Mapping[str, Any]) -> None:
        pass

    def log_checkpoint(self, path: Path | str, stage: int) -> None:
        pass

    def __enter__(self) -> SilentTracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        return False


def _quiet_settings(wandb, *, system_stats: bool = False, console: bool = False):
    """wandb.Settings that keep a run quiet and fast: no code/requirements/job snapshots; console
    capture (``console="wrap"``) and the system metrics sampler (CPU/GPU/memory) only when asked
    (``logger.console``, ``logger.system_stats``). Unknown keys (older wandb) are dropped."""
    wanted = dict(
        console="wrap" if console else "off",
        silent=True,
        disable_code=True,
        save_code=False,
        disable_job_creation=True,
        x_disable_stats=not system_stats,
        x_save_requirements=False,
    )
    try:
        return wandb.Settings(**wanted)
    except Exception:  # noqa: BLE001
        return wandb.Settings(console="off", silent=True)


# --------------------------------------------------------------------------- offline reader


def find_offline_runs(path: Path | str) -> list[Path]:
    """W&B run folders under ``path`` (a run folder, a ``wandb`` folder, or a folder
    that contains ``wandb/``), oldest first by the time their log was last written."""
    path = Path(path)
    if path.is_file() or list(path.glob("run-*.wandb")):
        return [path]
    found = []
    for base in (path, path / "wandb"):
        found += [p for p in base.glob("offline-run-*") if p.is_dir() and not p.is_symlink()]
        found += [p for p in base.glob("run-*") if p.is_dir() and not p.is_symlink()]

    def _key(p: Path):
        logs = list(p.glob("run-*.wandb"))
        return (max((f.stat().st_mtime_ns for f in logs), default=0), p.name)

    return sorted(set(found), key=_key)


def _inspect(target: Path, *extra: str) -> str:
    if target.is_dir():
        logs = sorted(target.glob("run-*.wandb"))
        if len(logs) == 1:
            target = logs[0]
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *extra, str(target)]
    # Offline + no error reporting: otherwise wandb-core is handed the server URL to
    # upload its own telemetry to.
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_ERROR_REPORTING": "false", "WANDB_SILENT": "true"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    if out.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd[1:])}` failed ({out.returncode}): {out.stderr.strip()[-2000:]}"
            " (reading offline runs needs wandb>=0.31, which has `wandb leet inspect`)"
        )
    return out.stdout


def read_offline_run(run_dir: Path | str) -> dict:
    """Read a W&B offline run back without any network.

    ``run_dir`` may be a ``.wandb`` file, an ``offline-run-*`` folder, a ``wandb`` folder
    or a tracker run folder holding ``wandb/``; with several runs the latest is read.
    Uses ``wandb leet inspect --json`` (history records) and ``... --summary --json``.

    Returns ``dict(history=[row, ...], summary={...}, config={...}, tags, group, job_type,
    name, project, run_id, state, exit_code, path)``; history rows are the logged dicts
    (plus W&B's ``_step``/``_runtime``/``_timestamp``); NaN values read back as None.
    """
    runs = find_offline_runs(run_dir)
    if not runs:
        raise FileNotFoundError(f"no W&B offline run under {run_dir}")
    target = runs[-1]

    summary_obj = json.loads(_inspect(target, "--summary"))
    history: list[dict] = []
    meta: dict[str, Any] = {}
    config: dict[str, Any] = {}
    nulls: dict[str, bool] = {}  # summary keys whose latest value is null (NaN)
    for line in _inspect(target).splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        kind = rec.get("type")
        if kind == "history":
            history.append(rec["history"].get("item", {}))
        elif kind == "summary":
            for k, v in ((rec["summary"] or {}).get("update") or {}).items():
                nulls[k] = v is None
        elif kind == "run" and not meta:
            meta = rec["run"]
            config.update((meta.get("config") or {}).get("update") or {})
        elif kind == "config":
            config.update((rec["config"] or {}).get("update") or {})
            for k in (rec["config"] or {}).get("remove") or []:
                config.pop(k, None)
    config.pop("_wandb", None)
    summary = dict(summary_obj.get("summary") or {})
    # `--summary` leaves out keys whose value is null (a NaN metric): put them back as None
    summary.update({k: None for k, null in nulls.items() if null and "." not in k and k not in summary})
    if summary_obj.get("config"):
        config = {**config, **summary_obj["config"]}
        config.pop("_wandb", None)
    return dict(
        history=history,
        summary=summary,
        config=config,
        tags=summary_obj.get("tags") or meta.get("tags") or [],
        group=meta.get("run_group"),
        job_type=meta.get("job_type"),
        name=summary_obj.get("name") or meta.get("display_name"),
        project=summary_obj.get("project") or meta.get("project"),
        run_id=summary_obj.get("run_id") or meta.get("run_id"),
        state=summary_obj.get("state"),
        exit_code=summary_obj.get("exit_code"),
        path=str(target),
    )


def read_offline_history(run_dir: Path | str, run_id: str | None = None) -> list[dict]:
    """Every history row of one W&B run across its offline logs, oldest first: a resumed job writes
    one ``offline-run-*-<id>`` folder per attempt and ``wandb sync`` uploads them all into run ``id``.
    ``run_id`` defaults to the run folder's ``wandb_run_id.txt``."""
    run_dir = Path(run_dir)
    if run_id is None:
        run_id = (run_dir / RUN_ID_FILE).read_text(encoding="utf-8").strip()
    history: list[dict] = []
    for folder in find_offline_runs(run_dir):
        # offline-run-<time>-<id>, or ...-<id>-<n> when an attempt of the same run started in the same second
        if re.search(rf"-{re.escape(run_id)}(-\d+)?$", folder.name):
            history += read_offline_run(folder)["history"]
    return history
