"""sweep_status: one line per job and state change of a submitit sweep, read from the sweep folder."""

from __future__ import annotations

import io

from omegaconf import OmegaConf

from clipcl_runner.sweep_status import SweepStatus, job_labels, start_for, sweep_jobs


def _config(launcher: str, sweep_dir, params=None, task=("method=finetune,lwf", "seed=0,1", "logger=none")):
    return OmegaConf.create(
        {
            "hydra": {
                "launcher": {"_target_": launcher},
                "sweep": {"dir": str(sweep_dir)},
                "sweeper": {"params": params or {}},
                "overrides": {"task": list(task)},
            }
        }
    )


def test_jobs_and_labels_in_hydras_order():
    jobs = sweep_jobs(_config("x", "/tmp/s", params={"trainer.lr": "1,2"}, task=("method=a,b", "logger=none")))
    assert len(jobs) == 4 and jobs[0] == ["trainer.lr=1", "method=a", "logger=none"]
    assert job_labels(jobs) == [
        "trainer.lr=1 method=a",
        "trainer.lr=1 method=b",
        "trainer.lr=2 method=a",
        "trainer.lr=2 method=b",
    ]


def test_each_state_change_is_one_line(tmp_path):
    out = io.StringIO()
    status = SweepStatus(tmp_path, ["method=finetune", "method=lwf"], out=out)
    status.poll()
    assert out.getvalue() == ""  # nothing submitted yet
    (tmp_path / ".submitit" / "123_0").mkdir(parents=True)
    status.poll()
    status.poll()  # no change: no line
    job0, job1 = tmp_path / "0_finetune_s0", tmp_path / "1_lwf_s0"
    job0.mkdir()
    (job0 / "cli.log").write_text("[..][INFO] - zero-shot\n")
    status.poll()
    (job0 / "summary.json").write_text("{}")
    job1.mkdir()
    (job1 / "cli.log").write_text("Traceback ...\nValueError: x\nclipcl: job 1 (method=lwf) failed: ValueError: x\n")
    status.poll()
    assert out.getvalue().splitlines() == [
        "job 0/2 (method=finetune): submitted",
        "job 1/2 (method=lwf): submitted",
        f"job 0/2 (method=finetune): running — log: {job0 / 'cli.log'}",
        f"job 0/2 (method=finetune): done — log: {job0 / 'cli.log'}",
        f"job 1/2 (method=lwf): failed — log: {job1 / 'cli.log'}",
    ]


def test_the_watcher_thread_reports_files_as_they_appear(tmp_path):
    out = io.StringIO()
    status = SweepStatus(tmp_path, ["", ""], interval=0.05, out=out).start()
    (tmp_path / "0_finetune_s0").mkdir()
    import time

    deadline = time.time() + 5
    while "running" not in out.getvalue() and time.time() < deadline:
        time.sleep(0.05)
    status.stop()
    assert out.getvalue().splitlines()[0] == "job 0/2: running"
    assert not status._thread.is_alive()


def test_only_submitit_launchers_get_a_watcher(tmp_path):
    assert start_for(_config("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", tmp_path)) is None
    status = start_for(_config("hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", tmp_path))
    try:
        import pickle

        from clipcl_runner.sweep_report import SweepReport

        callback = SweepReport()
        callback.status = status  # submitit pickles the callbacks into each job: the thread stays behind
        assert pickle.loads(pickle.dumps(callback)).status is None and callback.status is status
        assert status is not None and status.labels == [
            "method=finetune seed=0",
            "method=finetune seed=1",
            "method=lwf seed=0",
            "method=lwf seed=1",
        ]
    finally:
        status.stop()
