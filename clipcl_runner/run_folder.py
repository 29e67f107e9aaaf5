"""The run folder: its file names, its one writer, and the only way anything is written to it.

A run folder belongs to one process at a time: ``RunLock`` holds an exclusive ``flock`` on
``run.lock`` for the whole run (the kernel releases it on any exit, kill -9 included, so a
stale lock cannot exist) and writes the holder's pid and host into it, so a second process is
refused with a message naming the first. Every file is written by ``atomic_write`` (temporary
file, fsync, rename): a crash or a full disk leaves the previous version or nothing, never a
torn file, and the error names the path. ``metrics.jsonl`` grows by ``append_line``.

Layout (see docs/run_folder.md)::

    run.lock                 the writer's pid/host while a run holds the folder
    .hydra/                  config.yaml, overrides.yaml, hydra.yaml of the latest attempt
    job.json                 one entry per attempt (host, pid, SLURM job id, start/end)
    metrics.jsonl            one JSON object per evaluation
    summary.json             the final summary (present = the run finished)
    accuracy_matrix.csv/.png, probes.png
    wandb_run_id.txt, wandb_logged.json, wandb/   the W&B run id, the rows it holds, its offline log
    checkpoints/last.pt      after every stage;  checkpoints/mid_stage.pt  inside a stage
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

LOCK = "run.lock"
HYDRA_DIR = ".hydra"
JOB = "job.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
MATRIX = "accuracy_matrix.csv"
MATRIX_PNG = "accuracy_matrix.png"
PROBES_PNG = "probes.png"
WANDB_RUN_ID = "wandb_run_id.txt"
WANDB_LEDGER = "wandb_logged.json"
CHECKPOINTS = "checkpoints"
STAGE_END = "last.pt"
MID_STAGE = "mid_stage.pt"
IDENTITY = "identity.json"  # in checkpoints/: the identity config of the newest checkpoint (a fast-path copy)
# What a run leaves behind; ``overwrite=true`` removes these before a new run starts in the folder.
RESULT_FILES = (METRICS, SUMMARY, MATRIX, MATRIX_PNG, PROBES_PNG, WANDB_RUN_ID, WANDB_LEDGER, JOB)


class RunFolderError(RuntimeError):
    """A problem the user fixes (busy folder, unwritable path, corrupt file): printed without a traceback."""


class RunFolderBusy(RunFolderError):
    pass


def checkpoint_path(run_dir: Path | str, name: str = STAGE_END) -> Path:
    return Path(run_dir) / CHECKPOINTS / name


# -- writing --------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_error(path: Path, exc: OSError) -> RunFolderError:
    """A write failure as a message naming the path and the likely fix."""
    reason = exc.strerror or str(exc)
    hint = {
        errno.ENOSPC: "the disk is full: free space there or move the folder (paths.output_dir / paths.cache_dir)",
        errno.EDQUOT: "the disk quota is exhausted: free space or move the folder",
        errno.EACCES: "no permission to write there: choose a folder you own",
        errno.EPERM: "no permission to write there: choose a folder you own",
        errno.EROFS: "the file system is read-only: choose another folder",
    }.get(exc.errno, "check that the folder exists and is writable")
    return RunFolderError(f"cannot write {path}: {reason}.\nFix: {hint}.")


def atomic_write(path: Path | str, data: str | bytes | Callable[[IO[bytes]], None]) -> Path:
    """Write ``data`` (text, bytes, or a function writing to a binary file) to ``path`` atomically.

    The bytes go to a hidden temporary file in the same folder, are fsynced, then renamed over
    ``path``: readers and crashes see the old file or the new one. On any failure (disk full,
    permissions) the temporary file is removed and the error names ``path``.
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException as exc:  # a signal or a full disk mid-write: leave no partial file behind
        try:
            partial.unlink(missing_ok=True)
        except OSError:  # the folder itself is unusable: there is no partial file either
            pass
        if isinstance(exc, OSError):
            raise write_error(path, exc) from exc
        raise
    _fsync_dir(path.parent)
    return path


def append_line(path: Path | str, line: str) -> None:
    """Append one line durably (one ``write`` of a whole line: a crash tears at most the last line)."""
    path = Path(path)
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line if line.endswith("\n") else line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise write_error(path, exc) from exc


def write_json(path: Path | str, value: Any, **dump) -> Path:
    return atomic_write(path, json.dumps(value, **dump) + "\n")


# -- reading --------------------------------------------------------------------------------
def read_json(path: Path | str, default: Any = None) -> Any:
    """The JSON in ``path`` (``default`` when missing); a malformed file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path} is not valid JSON ({exc}).\nFix: restore or delete the file.") from exc


def read_metrics(run_dir: Path | str) -> list[dict]:
    """Rows of ``run_dir/metrics.jsonl``; a torn last line (crash mid-write) is skipped."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: skipping unreadable line %d", path, number)
    return rows


def previous_run(run_dir: Path | str) -> list[str]:
    """The files that show ``run_dir`` already holds a run (a checkpoint or a summary)."""
    run_dir = Path(run_dir)
    marks = [run_dir / SUMMARY, checkpoint_path(run_dir, STAGE_END), checkpoint_path(run_dir, MID_STAGE)]
    return [str(path) for path in marks if path.exists()]


def clear_results(run_dir: Path | str) -> None:
    """Remove a previous run's results and checkpoints (``overwrite=true``); its W&B logs stay."""
    run_dir = Path(run_dir)
    for name in RESULT_FILES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)


# -- one writer -----------------------------------------------------------------------------
def holder_record() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def describe_holder(record: dict) -> str:
    if not record:
        return "another process (no details recorded)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("started", 0)))
    text = f"pid {record.get('pid')} on host {record.get('host')}, started {started}"
    return text + (f", SLURM job {record['slurm_job_id']}" if record.get("slurm_job_id") else "")


class RunLock:
    """Exclusive ownership of a run folder for as long as this object is held (a context manager).

    ``flock`` on an open descriptor: released by the kernel when the process ends in any way, so
    a crashed run never blocks the next one. The file itself is never deleted (deleting it would
    let two processes lock two different files of the same name).
    """

    def __init__(self, run_dir: Path | str):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(self.path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                record = json.loads(os.read(fd, 4096) or b"{}")
            except ValueError:  # the holder is writing its record right now
                record = {}
            os.close(fd)
            raise RunFolderBusy(
                f"run folder {self.path.parent} is in use by {describe_holder(record)}.\n"
                "Only one process may write a run folder. Wait for that run to end (or stop it), "
                "or give this run its own folder (hydra.run.dir=...)."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_record()).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # no stale holder record for the next reader
        except OSError:
            pass
        os.close(self.fd)  # closing the descriptor releases the flock
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


# -- refusals (shared by clipcl's fast pre-check and the runner's check under the lock) ---------
def existing_run_error(run_dir: Path | str, existing: list[str]) -> RunFolderError:
    return RunFolderError(
        f"run folder {run_dir} already holds a run ({', '.join(Path(p).name for p in existing)}).\n"
        "Continue it with resume=true, replace it with overwrite=true, or choose another folder."
    )


def changed_config_error(run_dir: Path | str, differences: list[str]) -> RunFolderError:
    return RunFolderError(
        f"resume=true in {run_dir}, but this config differs from the one its checkpoint was trained with:\n"
        + "\n".join(f"  {line}" for line in differences)
        + "\nResume with the run's own settings (see its .hydra/overrides.yaml), start the new config in another "
        "folder, or pass resume_allow_config_change=true if the change cannot affect the results."
    )
