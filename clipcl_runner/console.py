"""What a run prints on the console, set up through Hydra's ``hydra.job_logging`` (conf/hydra/default.yaml).

- Data-parallel ranks (torchrun, srun): rank 0 alone logs INFO; the other ranks print warnings and
  errors only and write no log file (rank 0's ``<run folder>/<job>.log`` is the run's log), so every
  line is printed once.
- The pack launcher (joblib processes of one sweep on one console): each line starts with its job's
  folder name, e.g. ``[3_lwf_s1]``, so interleaved jobs can be told apart. Single runs and launchers
  whose jobs have their own console or log (basic, submitit) get no prefix.

Light on purpose (no torch): it runs while Hydra sets up logging, before the config is checked.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path


def environment_world() -> tuple[int, int, int]:
    """(rank, local rank, world size) of this process from torchrun's or srun's environment; (0, 0, 1)
    for a single process. distributed.py builds its ``World`` from it."""
    env = os.environ
    if int(env.get("WORLD_SIZE", "1")) > 1:  # torchrun
        return int(env["RANK"]), int(env.get("LOCAL_RANK", "0")), int(env["WORLD_SIZE"])
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env and "MASTER_ADDR" in env:  # srun
        return int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", "0")), int(env["SLURM_NTASKS"])
    return 0, 0, 1


def environment_rank() -> int:
    return environment_world()[0]


class RankFilter(logging.Filter):
    """Console handler: every record on rank 0, warnings and errors only on the other ranks."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.main = environment_rank() == 0

    def filter(self, record: logging.LogRecord) -> bool:
        return self.main or record.levelno >= logging.WARNING


class MainRankOnly(logging.Filter):
    """File handler (opened lazily, ``delay: true``): rank 0 alone writes the run's log file, so the other
    ranks never create one (nor a folder of their own around it)."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.main = environment_rank() == 0

    def filter(self, record: logging.LogRecord) -> bool:
        return self.main


# Launchers whose parallel jobs print to the submitting console (submitit jobs log to their own files).
SHARED_CONSOLE_LAUNCHERS = ("hydra_plugins.hydra_joblib_launcher.",)


def job_prefix(launcher: str | None = None) -> str:
    """``[<job folder>] `` for a sweep job whose launcher shares the console between jobs, else ``""``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return ""
    hydra_cfg = HydraConfig.get()
    launcher = launcher or str(hydra_cfg.launcher.get("_target_", ""))
    if hydra_cfg.mode != RunMode.MULTIRUN or not launcher.startswith(SHARED_CONSOLE_LAUNCHERS):
        return ""
    output_dir = hydra_cfg.runtime.get("output_dir")
    return f"[{Path(str(output_dir)).name}] " if output_dir else f"[job {hydra_cfg.job.get('num', '?')}] "


class JobFormatter(logging.Formatter):
    """The log format, behind the job's prefix where several jobs share the console (``job_prefix``)."""

    # ``format``: the key of Hydra's formatter config, passed as is by logging.config's ``()`` factory
    def __init__(self, format: str | None = None, datefmt: str | None = None, launcher: str | None = None) -> None:  # noqa: A002
        super().__init__(format, datefmt)
        self.prefix = job_prefix(launcher)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.prefix:
            return text
        return "\n".join(self.prefix + line for line in text.split("\n"))


def drop_rank_folder(run_dir: Path) -> None:
    """A rank other than 0 composes its own run folder name (its clock may be a second past rank 0's) and
    Hydra creates that folder; rank 0's folder is the run's (the runner broadcasts it). An empty one left
    by such a rank is removed, so that no stray folder shows up in a report."""
    if environment_rank() == 0:
        return
    try:
        run_dir.rmdir()  # only ever removes an empty folder
    except OSError:
        pass
