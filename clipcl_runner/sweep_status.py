"""One console line per job and state change while a submitit sweep (hydra/launcher=local|slurm) waits:

    job 2/8 (method=lwf seed=1): running — log: <sweep>/2_lwf_s1/cli.log

(job numbers as Hydra's ``#2`` and the folder's prefix, from 0).

The submitit launchers print nothing between submitting and the end; this watcher (a daemon thread
started by sweep_report's ``on_multirun_start``) reads the sweep folder instead: submitit's
``.submitit/`` folder = submitted, the job's folder (``<num>_...``, conf/hydra/default.yaml's subdir) =
running, its ``summary.json`` = done, the failure line sweep_report writes to its log = failed.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, TextIO

# The last line of a failed job's log (sweep_report.on_job_end writes it after the traceback).
FAILED_MARK = "clipcl: job "
SUBMITIT_LAUNCHERS = ("hydra_plugins.hydra_submitit_launcher.",)


def sweep_jobs(config: Any) -> list[list[str]]:
    """The jobs' overrides in the order Hydra's basic sweeper numbers them (hydra.sweeper.params first,
    then the command line)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    arguments = [*params, *config.hydra.overrides.task]
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def job_labels(jobs: list[list[str]]) -> list[str]:
    """Each job's swept overrides (those that differ between jobs), e.g. ``method=lwf seed=1``."""
    values: dict[str, set[str]] = {}
    for job in jobs:
        for override in job:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    return [" ".join(o for o in job if len(values[o.partition("=")[0]]) > 1) for job in jobs]


class SweepStatus:
    """Polls ``sweep_dir`` every ``interval`` seconds and prints each job's state once it changes."""

    def __init__(self, sweep_dir: Path, labels: list[str], interval: float = 2.0, out: TextIO | None = None):
        self.sweep_dir, self.labels, self.interval = Path(sweep_dir), labels, interval
        self.out = out or sys.stdout
        self.states: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def job_state(self, num: int) -> tuple[str, Path | None]:
        folders = sorted(self.sweep_dir.glob(f"{num}_*"))
        folder = next((f for f in folders if f.is_dir()), None)
        if folder is None:
            submitted = (self.sweep_dir / ".submitit").is_dir()
            return ("submitted" if submitted else "waiting"), None
        logs = sorted(folder.glob("*.log"))
        log = logs[0] if logs else None
        if (folder / "summary.json").is_file():
            return "done", log
        if log is not None:
            try:
                tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
            except OSError:
                tail = ""
            if any(line.startswith(FAILED_MARK) and " failed: " in line for line in tail.splitlines()):
                return "failed", log
        return "running", log

    def poll(self) -> None:
        for num, label in enumerate(self.labels):
            state, log = self.job_state(num)
            if state == "waiting" or self.states.get(num) == state:
                continue
            self.states[num] = state
            named = f" ({label})" if label else ""
            where = f" — log: {log}" if log is not None else ""
            print(f"job {num}/{len(self.labels)}{named}: {state}{where}", file=self.out, flush=True)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except OSError:  # a folder being written; the next poll sees it
                pass

    def start(self) -> SweepStatus:
        self._thread = threading.Thread(target=self._watch, name="clipcl-sweep-status", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """The sweep has ended: the last changes, then no more lines."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.poll()


def start_for(config: Any) -> SweepStatus | None:
    """A watcher for a submitit sweep (other launchers print their jobs' lines themselves), else None."""
    launcher = str(config.hydra.launcher.get("_target_", ""))
    if not launcher.startswith(SUBMITIT_LAUNCHERS):
        return None
    labels = job_labels(sweep_jobs(config))
    return SweepStatus(Path(str(config.hydra.sweep.dir)), labels).start()
