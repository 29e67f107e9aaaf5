"""Which scheduler job this is, and whether it is a requeued attempt of a job that already ran here.

``job_id`` is the id ``sacct`` shows: ``<array job>_<task>`` for an array task (SLURM_JOB_ID is the
task's own number there, which sacct does not list), else SLURM_JOB_ID, else submitit's local job id.
A requeued SLURM job has SLURM_RESTART_COUNT > 0. submitit's local executor sets no such variable: it
starts the job again with the same SUBMITIT_LOCAL_JOB_ID, so an attempt of that id already recorded in
the run folder's job.json is what marks a requeue there. Plain Python: ``clipcl`` may call it before torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

LOCAL_JOB = "SUBMITIT_LOCAL_JOB_ID"


def job_id() -> str | None:
    """The scheduler's id of this job as ``sacct`` (or submitit's local executor) shows it, or None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    if os.environ.get("SLURM_JOB_ID"):
        return os.environ["SLURM_JOB_ID"]
    return f"local-{os.environ[LOCAL_JOB]}" if os.environ.get(LOCAL_JOB) else None


def job_fields() -> dict:
    """What job.json records of the scheduler for an attempt."""
    return {
        "slurm_job_id": job_id() if not os.environ.get(LOCAL_JOB) else None,
        "submitit_local_job_id": os.environ.get(LOCAL_JOB),
    }


def requeued(run_dir: Path | str) -> bool:
    """True in a job the scheduler started again (timeout, preemption): it continues its run folder.
    Call before this attempt is recorded in job.json."""
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0:
        return True
    local = os.environ.get(LOCAL_JOB)
    if not local:
        return False
    try:
        attempts = json.loads((Path(run_dir) / "job.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(attempts, list) and any(
        isinstance(a, dict) and a.get("submitit_local_job_id") == local for a in attempts
    )
