"""The end of a sweep: a Hydra callback (conf/hydra/default.yaml) that writes the report of the sweep
folder, prints its table, the runs that failed with their log files, and the command that rebuilds it.

It runs in the submitting process once every job has ended, with any launcher (basic, pack, local,
SLURM). A report that cannot be written (no finished run, pandas missing in a GPU image) is one line,
never an error of the sweep. Each failed job also gets one line as it ends (``on_job_end``)."""

from __future__ import annotations

import atexit
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig


def _logs(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("*.log"))


def _log_hint(run_dir: Path) -> str:
    logs = _logs(run_dir)
    return f" (log: {logs[0]})" if logs else ""


def report_command(sweep_dir: Path) -> str:
    return f"clipcl-report {shlex.quote(str(sweep_dir))}"


def summarize_sweep(sweep_dir: Path, out=None) -> dict | None:
    """Write ``<sweep_dir>/report/`` and print (to ``out``, default stdout) the table, failed runs (with
    their logs) and strays."""
    sweep_dir, out = Path(sweep_dir), out or sys.stdout
    print(f"\n== sweep {sweep_dir.name}: report", file=out)
    try:
        from .report import NoFinishedRuns, ReportError, write_report
    except ImportError as error:  # e.g. a GPU image without pandas/matplotlib
        print(f"no report here ({error}); build it where pandas is installed: {report_command(sweep_dir)}", file=out)
        return None
    try:
        result = write_report([sweep_dir], sweep_dir / "report")
    except (NoFinishedRuns, ReportError, FileNotFoundError, KeyError) as error:
        print(f"no report: {str(error).splitlines()[0]}", file=out)
        print(f"rebuild it once runs have finished: {report_command(sweep_dir)}", file=out)
        return None
    except Exception as error:  # noqa: BLE001 - the sweep's runs are done; a report bug must not fail it
        print(f"the report failed ({type(error).__name__}: {error}); retry with: {report_command(sweep_dir)}", file=out)
        return None
    print(result["table"], file=out)
    if result["missing"]:
        print(f"\n{len(result['missing'])} run(s) missing or failed:", file=out)
        for missing in result["missing"]:
            run = Path(missing["run"])
            print(f"  {run.name}: {missing['reason']}{_log_hint(run)}", file=out)
    if result.get("strays"):
        print(
            f"{len(result['strays'])} stray folder(s) without a run: "
            + ", ".join(Path(p).name for p in result["strays"]),
            file=out,
        )
    print(f"\nreport: {sweep_dir / 'report' / 'report.md'}\nrebuild: {report_command(sweep_dir)}", file=out)
    return result


class JobFailed(CompactHydraException):
    """What Hydra's sweeper raises for a failed job once its traceback is in the job's log: Hydra prints
    a compact exception's message alone."""


def single_run(config: DictConfig) -> bool:
    """A plain ``clipcl`` run (Hydra's RUN mode), not a job of a sweep."""
    return config.hydra.get("mode") == RunMode.RUN


def failure_line(config: DictConfig, error: Any, run_dir: Path | None) -> str:
    """``clipcl: job 3 (method=lwf seed=1) failed: ValueError: <first line> (log: <file>)``."""
    overrides = " ".join(str(o) for o in config.hydra.get("overrides", {}).get("task", []) or [])
    first = str(error).splitlines()[0] if str(error) else ""
    where = _log_hint(run_dir) if run_dir else ""
    label = f" ({overrides})" if overrides else ""
    job = "run" if single_run(config) else f"job {config.hydra.job.get('num', '?')}"
    return f"clipcl: {job}{label} failed: {type(error).__name__}: {first}{where}"


def _append_traceback(log_file: Path, error: BaseException, line: str) -> None:
    """The traceback, then the failure line (what sweep_status reads as "failed")."""
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a", encoding="utf-8") as out:
            out.write("".join(traceback.format_exception(type(error), error, error.__traceback__)) + line + "\n")
    except OSError:  # the console line still names the error
        pass


class SweepReport(Callback):
    """``hydra.callbacks.sweep_report``: the sweep's table when it ends; a failed job in one line."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.sweep_dir: Path | None = None
        self.reported = False
        self.status: Any = None  # sweep_status.SweepStatus under the submitit launchers

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A failed job makes Hydra's sweeper raise (once every job of the batch has ended) before
        ``on_multirun_end``: the table then comes at exit."""
        if self.enabled:
            self.sweep_dir = Path(str(config.hydra.sweep.dir))
            atexit.register(self.at_exit)
            try:  # now: at exit, after threading's shutdown, pandas can no longer be imported
                from . import report  # noqa: F401
            except ImportError:  # summarize_sweep says so in one line
                pass
            from . import sweep_status

            try:
                self.status = sweep_status.start_for(config)
            except Exception as error:  # noqa: BLE001 - status lines are a view; the sweep goes on without
                print(f"clipcl: no job status lines ({type(error).__name__}: {error})", file=sys.stderr)

    def __getstate__(self) -> dict:
        """submitit pickles Hydra's callbacks into every job: the watcher (a thread) stays here."""
        return {**self.__dict__, "status": None}

    def stop_status(self) -> None:
        if self.status is not None:
            status, self.status = self.status, None
            status.stop()

    def at_exit(self) -> None:
        if self.reported or self.sweep_dir is None or not self.sweep_dir.is_dir():
            return
        self.reported = True
        self.stop_status()
        print("\njobs of the sweep failed (each log is named below)", flush=True)
        summarize_sweep(self.sweep_dir)
        sys.stdout.flush()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """Runs where the job ran (this process, a joblib worker, a submitit job): the traceback goes to the
        job's log file, the console gets one line, and the error Hydra's sweeper raises at the end becomes a
        message (no traceback; ``clipcl -m`` still exits 1)."""
        status = getattr(getattr(job_return, "status", None), "name", "")
        if not self.enabled or status != "FAILED":
            return
        error = getattr(job_return, "_return_value", None)
        run_dir = Path(str(config.hydra.runtime.output_dir)) if "runtime" in config.hydra else None
        line = failure_line(config, error, run_dir)
        if run_dir is not None and isinstance(error, BaseException):
            _append_traceback(run_dir / f"{config.hydra.job.get('name', 'clipcl')}.log", error, line)
        print(line, file=sys.stderr, flush=True)
        if isinstance(error, Exception) and not isinstance(error, JobFailed):
            job_return._return_value = JobFailed(
                "the run failed (named above with its log file, which holds the traceback)"
                if single_run(config)
                else "the sweep has failed jobs (each named above with its log file); its report follows"
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.enabled and not self.reported:
            self.reported = True
            self.stop_status()
            summarize_sweep(Path(str(config.hydra.sweep.dir)))
            sys.stdout.flush()
