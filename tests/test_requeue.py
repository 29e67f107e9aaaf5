"""Scheduler job ids as sacct shows them, and the local executor's requeue recognised from job.json."""

from __future__ import annotations

import json

import pytest

from clipcl_runner import requeue

SCHEDULER = ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID", "SLURM_RESTART_COUNT", requeue.LOCAL_JOB)


@pytest.fixture(autouse=True)
def no_scheduler(monkeypatch):
    for name in SCHEDULER:
        monkeypatch.delenv(name, raising=False)


def test_array_task_is_recorded_as_sacct_shows_it(monkeypatch):
    assert requeue.job_id() is None
    monkeypatch.setenv("SLURM_JOB_ID", "2")  # an array task's own number: sacct lists it as 1_0
    assert requeue.job_id() == "2"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    assert requeue.job_id() == "1_0" and requeue.job_fields()["slurm_job_id"] == "1_0"


def test_local_requeue_is_an_attempt_of_the_same_local_job(tmp_path, monkeypatch):
    assert not requeue.requeued(tmp_path)
    monkeypatch.setenv(requeue.LOCAL_JOB, "4242")
    assert not requeue.requeued(tmp_path)  # first attempt: no job.json yet
    (tmp_path / "job.json").write_text(json.dumps([{"pid": 1, "submitit_local_job_id": "999"}]))
    assert not requeue.requeued(tmp_path)  # another job's attempt (an earlier sweep)
    (tmp_path / "job.json").write_text(json.dumps([{"pid": 1, "submitit_local_job_id": "4242", "ended": 1.0}]))
    assert requeue.requeued(tmp_path)
    (tmp_path / "job.json").write_text("{torn")
    assert not requeue.requeued(tmp_path)


def test_slurm_restart_count_is_a_requeue(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeue.requeued(tmp_path)


def test_the_runner_records_the_job_and_resumes_a_local_requeue(tmp_path, monkeypatch):
    from clipcl_runner.runner import record_job

    monkeypatch.setenv(requeue.LOCAL_JOB, "77")
    record_job(tmp_path, device="cpu")
    record_job(tmp_path, ended=2.0)
    attempts = json.loads((tmp_path / "job.json").read_text())
    assert attempts[0]["submitit_local_job_id"] == "77" and attempts[0]["ended"] == 2.0
    assert requeue.requeued(tmp_path)  # the next attempt of job 77 resumes
