"""Sweeps through a real SLURM with `hydra/launcher=slurm` (hydra-submitit-launcher).

Needs a running cluster with accounting (sacct): `scripts/slurm_local.sh start` makes a one-node
one on this machine; `.ci/run` does that. Without one every test here is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from clipcl_runner.tracking import read_offline_run

REPO = Path(__file__).resolve().parent.parent
# Minutes of real SLURM jobs: outside the default suite; `make test-slow` (and CI) runs them.
pytestmark = pytest.mark.slow
SWEEP_TIMEOUT_S = 900  # three 2-stage jobs of the test preset share 2 cores: ~3-5 min
CANCEL_EXIT_TIMEOUT_S = 240  # submitit polls sacct every few seconds to a minute
USABLE_NODE_STATES = ("idle", "mix", "alloc", "completing")


def _slurm_unavailable() -> str | None:
    """Why these tests cannot run here, or None."""
    if shutil.which("sinfo") is None:
        return "sinfo is not on PATH (start a local cluster with scripts/slurm_local.sh start)"
    try:
        sinfo = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 5 s (is slurmctld running?)"
    if sinfo.returncode != 0:
        last_line = ((sinfo.stderr or sinfo.stdout).strip().splitlines() or ["?"])[-1]
        return f"sinfo failed, no SLURM running? ({last_line[:200]})"
    states = sinfo.stdout.split()
    if not any(state.startswith(USABLE_NODE_STATES) for state in states):
        return f"no usable SLURM node (node states: {states})"
    try:
        sacct = subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, text=True, timeout=5)
    except (subprocess.TimeoutExpired, FileNotFoundError):
        sacct = None
    if sacct is None or sacct.returncode != 0:
        return "SLURM has no working accounting (sacct); submitit cannot see cancelled jobs without it"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Skip (with the reason) unless a SLURM cluster answers. Request it before other fixtures."""
    reason = _slurm_unavailable()
    if reason is not None:
        pytest.skip(reason)


def _sweep_command(sweep_dir: Path, job_name: str, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "clipcl_runner.cli",
        "-m",
        "experiment=synthetic_test",
        "trainer.progress=false",
        "logger=wandb",
        "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1",
        f"hydra.launcher.name={job_name}",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.output_dir={sweep_dir}",
        *overrides,
    ]


def _cancel_all(job_name: str) -> None:
    subprocess.run(["scancel", "--name", job_name], capture_output=True, timeout=30)


def _job_logs(sweep_dir: Path) -> str:
    """The tail of every job's submitit log, for failure messages."""
    parts = []
    for log in sorted((sweep_dir / ".submitit").glob("*/*_log.*")):
        lines = log.read_text(errors="replace").splitlines()[-15:]
        parts.append(f"--- {log.relative_to(sweep_dir)}\n" + "\n".join(lines))
    return "\n".join(parts)


def test_slurm_sweep_runs_three_jobs(slurm_cluster, pretrained_test_clip, tmp_path):
    """A 3-job sweep runs as a SLURM array: every job writes its summary and its own W&B run."""
    sweep_dir = tmp_path / "sweep"
    job_name = f"clipcl-test-{uuid.uuid4().hex[:8]}"
    command = _sweep_command(sweep_dir, job_name, "method=finetune,lwf,vr_lwf", "tasks.num_stages=2", "tasks.epochs=1")
    try:
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
    finally:
        _cancel_all(job_name)
    assert proc.returncode == 0, f"sweep failed:\n{proc.stderr[-4000:]}\n{_job_logs(sweep_dir)}"

    # the sweep ends with its report (<sweep>/report/, written by the sweep-end callback) beside the jobs
    assert (sweep_dir / "report" / "report.md").is_file(), f"no sweep report\n{proc.stdout[-2000:]}"
    job_dirs = sorted(
        p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "report"
    )
    assert [p.name.split("_", 1)[1] for p in job_dirs] == ["finetune_s0", "lwf_s0", "vr_lwf_s0"]
    run_ids = []
    for job_dir in job_dirs:
        assert (job_dir / "summary.json").is_file(), f"{job_dir.name}: no summary.json\n{_job_logs(sweep_dir)}"
        assert len(list((job_dir / "wandb").glob("offline-run-*"))) == 1, f"{job_dir.name}: not exactly one W&B run"
        run_ids.append(read_offline_run(job_dir)["run_id"])
    assert len(set(run_ids)) == 3, f"jobs share a W&B run: {run_ids}"


def _array_tasks(job_name: str) -> dict[str, str]:
    """{array task id (e.g. '12_0'): state} of the jobs called job_name."""
    out = subprocess.run(
        ["squeue", "-h", "-r", "-n", job_name, "-o", "%i %T"], capture_output=True, text=True, timeout=10
    ).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def test_slurm_sweep_with_cancelled_job_fails(slurm_cluster, pretrained_test_clip, tmp_path):
    """`scancel` on one job of a running sweep makes the Hydra process exit non-zero, not hang."""
    sweep_dir = tmp_path / "sweep"
    job_name = f"clipcl-test-{uuid.uuid4().hex[:8]}"
    # Two jobs that would train for hours; job 0 gets cancelled (SIGTERM, then SIGKILL) once it trains.
    # It must be job 0: the launcher collects results in job order, so it notices a cancelled job
    # only after every earlier job has ended. Job 1 keeps running after the sweep fails: the cleanup
    # cancels it.
    command = _sweep_command(sweep_dir, job_name, "method=finetune", "seed=0,1", "tasks.epochs=1000")
    log_path = tmp_path / "hydra.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        target = None
        while target is None:
            assert proc.poll() is None, f"the sweep ended before its job ran:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no job training after 300 s: {_array_tasks(job_name)}"
            # RUNNING and past its zero-shot evaluation: the job is inside the app, training.
            running = [task for task, state in _array_tasks(job_name).items() if state == "RUNNING"]
            if any(task.endswith("_0") for task in running) and any(sweep_dir.glob("0_*/metrics.jsonl")):
                target = next(task for task in running if task.endswith("_0"))
            else:
                time.sleep(2)
        subprocess.run(["scancel", target], check=True, capture_output=True, timeout=30)
        try:
            returncode = proc.wait(timeout=CANCEL_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the sweep still waits {CANCEL_EXIT_TIMEOUT_S} s after `scancel {target}`")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        _cancel_all(job_name)
    output = log_path.read_text()
    assert returncode != 0, f"the sweep exited 0 although job {target} was cancelled:\n{output[-4000:]}"
    assert "CANCELLED" in output or "UncompletedJobError" in output, output[-4000:]


def test_slurm_preempted_job_is_requeued_and_resumes_exactly(slurm_cluster, pretrained_test_clip, tmp_path):
    """`scancel --signal=USR2` mid-run: the job checkpoints, submitit requeues it, the requeued job
    resumes from its run folder and ends with exactly the metrics of an uninterrupted run."""
    import json

    from conftest import TEST_PRESET, compose_config

    from clipcl_runner.runner import run

    overrides = ("method=vr_lwf", "tasks.num_stages=2", "tasks.epochs=6", "trainer.threads=1")
    sweep_dir = tmp_path / "sweep"
    job_name = f"clipcl-test-{uuid.uuid4().hex[:8]}"
    log_path = tmp_path / "hydra.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            _sweep_command(sweep_dir, job_name, *overrides), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 300
        while True:  # wait until stage 1 is evaluated: the job is then training stage 2
            assert proc.poll() is None, f"the sweep ended before the signal:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"stage 1 not done after 300 s: {_array_tasks(job_name)}"
            metrics = list(sweep_dir.glob("0_*/metrics.jsonl"))
            if metrics and len(metrics[0].read_text().splitlines()) >= 2:
                break
            time.sleep(0.5)
        task = next(iter(_array_tasks(job_name)))
        subprocess.run(["scancel", "--signal=USR2", task], check=True, capture_output=True, timeout=30)
        returncode = proc.wait(timeout=SWEEP_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        _cancel_all(job_name)
    assert returncode == 0, f"{log_path.read_text()[-4000:]}\n{_job_logs(sweep_dir)}"
    job_dir = next(sweep_dir.glob("0_*"))
    attempts = json.loads((job_dir / "job.json").read_text())
    assert len(attempts) == 2, f"the job was not requeued: {attempts}\n{_job_logs(sweep_dir)}"
    preempted = json.loads((job_dir / "summary.json").read_text())

    torch_reference = tmp_path / "reference"
    reference = run(compose_config(*TEST_PRESET, "logger=none", *overrides, output_dir=tmp_path), torch_reference)
    for key, value in reference.items():
        assert preempted[key] == pytest.approx(value, abs=1e-9) or (preempted[key] is None and value != value), key


def test_srun_two_tasks_train_data_parallel_like_one_process(slurm_cluster, pretrained_test_clip, tmp_path):
    """DDP driven by SLURM's environment (SLURM_PROCID / SLURM_NTASKS, MASTER_ADDR / MASTER_PORT), as
    `srun` in a batch script starts it: the same metrics as one process."""
    from test_distributed import assert_same_run, launch

    single = launch(tmp_path / "single", sys.executable)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    srun = ["srun", "--ntasks=2", "--cpus-per-task=1", "--export=ALL", "--time=10", sys.executable]
    pair = launch(tmp_path / "pair", *srun, env=env)
    assert_same_run(single, pair, tmp_path / "pair")
