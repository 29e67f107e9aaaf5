"""RunTracker: local run-folder files, W&B offline logging read back with
`wandb leet inspect`, resume, failures. W&B only ever runs offline or disabled here."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from clipcl_runner import tracking
from clipcl_runner.plots import plot_matrix, plot_probes
from clipcl_runner.tracking import RunTracker, read_metrics, read_offline_run

ROWS = [
    {
        "stage": 0,
        "stage_name": "zero-shot",
        "task/T1/acc": 10.0,
        "task/T2/acc": 12.5,
        "zs/colour/acc": 61.0,
        "ret/heldout/i2t_r1": 30.0,
    },
    {
        "stage": 1,
        "stage_name": "after T1",
        "epoch": 2,
        "task/T1/acc": 80.25,
        "task/T2/acc": 11.0,
        "zs/colour/acc": 55.5,
        "ret/heldout/i2t_r1": 27.0,
    },
    {
        "stage": 2,
        "stage_name": "after T2",
        "epoch": 2,
        "task/T1/acc": 60.0,
        "task/T2/acc": 85.0,
        "zs/colour/acc": 50.0,
        "ret/heldout/i2t_r1": 25.5,
    },
]
MATRIX = pd.DataFrame(
    [[10.0, 12.5], [80.25, float("nan")], [60.0, 85.0]],
    index=pd.Index(["zero-shot", "after T1", "after T2"], name="model"),
    columns=["T1", "T2"],
)
SUMMARY = {"ut_acc": 72.5, "bwt": -20.25, "transfer": float("nan"), "zs_acc": 50.0}


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path, monkeypatch):
    """Every W&B file of a test goes under its tmp dir; offline is the env default too."""
    wb = tmp_path / "wandb_home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        (wb / var).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(wb / var))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_ERROR_REPORTING", raising=False)  # the tracker must set it
    yield wb
    import wandb

    if wandb.run is not None:  # a test must not leak a live run into the next one
        wandb.finish(exit_code=1)
        pytest.fail("a W&B run was left unfinished")


def _log_all(tracker: RunTracker) -> None:
    for row in ROWS:
        tracker.log_eval(row)
    tracker.log_matrix(MATRIX)
    tracker.log_summary(SUMMARY)


def _history_by_stage(run: dict, key: str) -> dict[int, float]:
    return {int(h["stage"]): h[key] for h in run["history"] if key in h}


@pytest.mark.parametrize("mode", ["disabled", "offline"])
def test_local_files(tmp_path, mode):
    run_dir = tmp_path / "run"
    with RunTracker(run_dir, config={"lr": 1e-5}, mode=mode) as tracker:
        _log_all(tracker)

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert [json.loads(line) for line in lines] == ROWS
    assert read_metrics(run_dir) == ROWS

    back = pd.read_csv(run_dir / "accuracy_matrix.csv", index_col=0)
    pd.testing.assert_frame_equal(back, MATRIX)
    assert (run_dir / "accuracy_matrix.png").read_bytes()[:4] == b"\x89PNG"

    text = (run_dir / "summary.json").read_text()
    assert "NaN" not in text
    summary = json.loads(text)
    assert summary == {"bwt": -20.25, "transfer": None, "ut_acc": 72.5, "zs_acc": 50.0}
    assert list(summary) == sorted(summary)


def test_restore_drops_rows_after_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    with RunTracker(run_dir, config={}, mode="disabled") as tracker:
        for row in ROWS:
            tracker.log_eval(row)
    # the checkpoint covers stages 0 and 1; stage 2 was evaluated after it, then a crash
    with RunTracker(run_dir, config={}, mode="disabled", resume=True) as tracker:
        tracker.restore(ROWS[:2])
        assert read_metrics(run_dir) == ROWS[:2]
        redo = dict(ROWS[2], **{"task/T1/acc": 61.0})
        tracker.log_eval(redo)
    assert read_metrics(run_dir) == [ROWS[0], ROWS[1], redo]


def test_read_metrics_skips_torn_last_line(tmp_path):
    run_dir = tmp_path / "run"
    with RunTracker(run_dir, config={}, mode="disabled") as tracker:
        tracker.log_eval(ROWS[0])
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"stage": 1, "stage_na')  # crash mid-write
    assert read_metrics(run_dir) == [ROWS[0]]


def test_log_eval_rejects_rows_without_stage(tmp_path):
    with RunTracker(tmp_path / "run", config={}, mode="disabled") as tracker:
        with pytest.raises(KeyError):
            tracker.log_eval({"stage_name": "x", "zs/a/acc": 1.0})
        with pytest.raises(TypeError):
            tracker.log_eval({"stage": "1", "stage_name": "x"})


def test_offline_wandb_round_trip(tmp_path):
    run_dir = tmp_path / "run"
    tracker = RunTracker(
        run_dir,
        config={"lr": 1e-5, "method": {"name": "lwf", "alpha": 0.5}},
        mode="offline",
        group="lwf",
        job_type="mst",
        name="lwf-seed0",
        tags=["demo", "seed0"],
    )
    assert os.environ["WANDB_ERROR_REPORTING"] == "false"  # no telemetry upload either
    with tracker:
        assert tracker.wandb_run_dir is not None
        assert tracker.wandb_run_dir.parent == run_dir / "wandb"  # dir defaults to run_dir
        assert tracker.wandb_run_dir.name.startswith("offline-run-")
        _log_all(tracker)
        png = plot_probes(ROWS, run_dir / "probes.png")
        tracker.log_figure(png, "probes")

    run = read_offline_run(run_dir)
    assert run["run_id"] == (run_dir / "wandb_run_id.txt").read_text().strip() == tracker.run_id
    assert run["state"] == "finished" and run["exit_code"] == 0
    for key in ("task/T1/acc", "task/T2/acc", "zs/colour/acc", "ret/heldout/i2t_r1"):
        assert _history_by_stage(run, key) == {r["stage"]: r[key] for r in ROWS}, key
    names = {int(h["stage"]): h["stage_name"] for h in run["history"] if "stage_name" in h}
    assert names == {0: "zero-shot", 1: "after T1", 2: "after T2"}
    # the table, heatmap and figure were logged against the last stage
    logged = set().union(*(h.keys() for h in run["history"]))
    assert {"accuracy_matrix._type", "accuracy_matrix_heatmap._type", "probes._type"} <= logged
    assert all("stage" in h for h in run["history"])

    summary = run["summary"]
    assert summary["ut_acc"] == 72.5 and summary["bwt"] == -20.25 and summary["zs_acc"] == 50.0
    assert "transfer" in summary and summary["transfer"] is None  # NaN reads back as null
    assert summary["accuracy_matrix"]["_type"] == "table-file"
    assert summary["accuracy_matrix"]["nrows"] == 3 and summary["accuracy_matrix"]["ncols"] == 3

    assert run["config"]["lr"] == 1e-5
    assert run["config"]["method"] == {"name": "lwf", "alpha": 0.5}
    assert run["group"] == "lwf" and run["job_type"] == "mst" and run["name"] == "lwf-seed0"
    assert sorted(run["tags"]) == ["demo", "seed0"]
    assert run["project"] == "clipcl"


def test_exception_propagates_and_finishes_the_run(tmp_path, offline_wandb):
    import wandb

    shared = tmp_path / "shared_wandb"
    with pytest.raises(RuntimeError, match="boom"):
        with RunTracker(tmp_path / "a", config={}, mode="offline", wandb_dir=shared) as first:
            first.log_eval(ROWS[0])
            raise RuntimeError("boom")
    assert wandb.run is None  # finished, not left for the next job to log into
    first.finish()  # idempotent

    with RunTracker(tmp_path / "b", config={}, mode="offline", wandb_dir=shared) as second:
        second.log_eval(ROWS[0])
        second.log_eval(ROWS[1])
    assert second.run_id != first.run_id
    assert second.wandb_run_dir != first.wandb_run_dir
    assert len(list((shared / "wandb").glob("offline-run-*"))) == 2
    assert not (tmp_path / "a" / "wandb").exists()  # wandb_dir was honoured

    a, b = read_offline_run(first.wandb_run_dir), read_offline_run(second.wandb_run_dir)
    assert a["run_id"] == first.run_id and a["exit_code"] == 1
    assert _history_by_stage(a, "task/T1/acc") == {0: 10.0}  # nothing of the second job
    assert b["run_id"] == second.run_id and b["exit_code"] == 0 and b["state"] == "finished"
    assert _history_by_stage(b, "task/T1/acc") == {0: 10.0, 1: 80.25}
    assert read_metrics(tmp_path / "a") == ROWS[:1]


def test_resume_reuses_run_id(tmp_path):
    run_dir = tmp_path / "run"
    with RunTracker(run_dir, config={}, mode="offline") as first:
        first.log_eval(ROWS[0])
    with RunTracker(run_dir, config={}, mode="offline", resume=True) as resumed:
        resumed.restore(ROWS[:1])
        resumed.log_eval(ROWS[1])
    assert resumed.run_id == first.run_id
    assert resumed.wandb_run_dir != first.wandb_run_dir  # offline: one folder per attempt
    assert read_offline_run(resumed.wandb_run_dir)["run_id"] == first.run_id
    assert read_offline_run(run_dir)["run_id"] == first.run_id  # latest attempt
    assert read_metrics(run_dir) == ROWS[:2]

    with RunTracker(run_dir, config={}, mode="offline", resume=False) as fresh:
        pass
    assert fresh.run_id != first.run_id
    assert (run_dir / "wandb_run_id.txt").read_text().strip() == fresh.run_id


def test_disabled_writes_local_files_and_no_wandb_dir(tmp_path, offline_wandb):
    run_dir = tmp_path / "run"
    with RunTracker(run_dir, config={"a": 1}, mode="disabled") as tracker:
        assert tracker.run is None and tracker.mode == "disabled"
        _log_all(tracker)
        tracker.log_figure(run_dir / "accuracy_matrix.png", "m")
    assert (run_dir / "metrics.jsonl").exists() and (run_dir / "summary.json").exists()
    assert (run_dir / "accuracy_matrix.csv").exists()
    assert not list(tmp_path.rglob("wandb"))
    assert not list(tmp_path.rglob("offline-run-*"))
    assert not (run_dir / "wandb_run_id.txt").exists()
    assert RunTracker(tmp_path / "n", config={}, mode="none").mode == "disabled"


def test_wandb_init_failure_keeps_local_files(tmp_path, monkeypatch, caplog):
    import wandb

    def refuse(*args, **kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "init", refuse)
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="clipcl_runner.tracking"):
        with RunTracker(run_dir, config={}, mode="offline") as tracker:
            assert tracker.run is None
            _log_all(tracker)
    message = caplog.text
    assert "api_key not configured" in message
    assert "WANDB_MODE=offline" in message and "wandb login" in message
    assert read_metrics(run_dir) == ROWS
    assert json.loads((run_dir / "summary.json").read_text())["ut_acc"] == 72.5


def test_mode_resolution(monkeypatch):
    resolve = RunTracker._resolve_mode
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve("online") == "offline"  # env forces offline on nodes without internet
    assert resolve("disabled") == "disabled" and resolve(None) == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert resolve("online") == "online" and resolve("Offline") == "offline"
    with pytest.raises(ValueError, match="unknown W&B mode"):
        resolve("sometimes")


def test_git_commit_recorded_when_available(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "git_commit", lambda directory=None: "abc123")
    t = RunTracker(tmp_path / "r1", config={"x": 1}, mode="disabled")
    assert t.config == {"x": 1, "git_commit": "abc123"}
    monkeypatch.setattr(tracking, "git_commit", lambda directory=None: None)
    assert RunTracker(tmp_path / "r2", config={"x": 1}, mode="disabled").config == {"x": 1}
    assert tracking.git_commit(tmp_path) is None  # not a repository: no crash


def test_omegaconf_config_is_resolved(tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"a": 2, "b": "${a}", "git_commit": "x"})
    assert RunTracker(tmp_path / "r", config=cfg, mode="disabled").config == {"a": 2, "b": 2, "git_commit": "x"}


def test_plots_write_pngs(tmp_path):
    fractions = MATRIX / 100.0  # fractions are shown in percent as well
    assert plot_matrix(fractions, tmp_path / "m.png", title="t").read_bytes()[:4] == b"\x89PNG"
    ost = [{"stage": 0, "stage_name": "zero-shot", "zs/a/acc": 0.6}] + [
        {
            "stage": 1,
            "stage_name": "OST",
            "epoch": e,
            "zs/a/acc": 0.6 - e / 100,
            "ret/c/i2t_r1": float("nan") if e == 2 else 0.3,
        }
        for e in range(1, 4)
    ]
    out = plot_probes(ost, tmp_path / "sub" / "p.png", title="probes")
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert plot_probes(ROWS, tmp_path / "q.png", metrics=["task/T1/acc"]).exists()


def test_import_is_cheap():
    code = (
        "import sys, clipcl_runner.tracking, clipcl_runner.plots; "
        "print(sorted(m for m in ('wandb', 'matplotlib', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unfinished_tracker_does_not_capture_the_next_one(tmp_path):
    first = RunTracker(tmp_path / "a", config={}, mode="offline")  # never finished by the caller
    first.log_eval(ROWS[0])
    with RunTracker(tmp_path / "b", config={}, mode="offline") as second:
        second.log_eval(ROWS[1])
        assert second.run.id == second.run_id != first.run_id
    first.finish()
    assert _history_by_stage(read_offline_run(tmp_path / "a"), "task/T1/acc") == {0: 10.0}
    assert _history_by_stage(read_offline_run(tmp_path / "b"), "task/T1/acc") == {1: 80.25}


def _stage_count(rows: list[dict]) -> dict:
    """A stand-in for the runner's CL series: what the tracker passes in is visible in the result."""
    return {"cl/rows": len(rows), "cl/t1": rows[-1]["task/T1/acc"]}


def test_stage_series_and_training_curves_read_back_offline(tmp_path):
    run_dir = tmp_path / "run"
    with RunTracker(run_dir, config={}, mode="offline", stage_series=_stage_count) as tracker:
        tracker.log_eval(ROWS[0])
        tracker.log_train(10, {"loss": 0.5, "lr": 1e-4})
        tracker.log_train(20, {"loss": 0.25, "lr": 5e-5})
        tracker.log_eval(ROWS[1])
        tracker.log_eval(ROWS[2])
    run = read_offline_run(run_dir)
    # a series point at each stage end, from the rows so far; none at the zero-shot row
    assert _history_by_stage(run, "cl/rows") == {1: 2, 2: 3}
    assert _history_by_stage(run, "cl/t1") == {1: 80.25, 2: 60.0}
    curves = [(h["train/step"], h["step/loss"], h["step/lr"]) for h in run["history"] if "step/loss" in h]
    assert curves == [(10, 0.5, 1e-4), (20, 0.25, 5e-5)]
    # the run folder holds the evaluation rows only (curves are W&B's view of training)
    assert [sorted(r) for r in read_metrics(run_dir)] == [sorted(r) for r in ROWS]


def test_resumed_tracker_logs_the_series_of_the_rows_it_relogs(tmp_path):
    run_dir = tmp_path / "run"
    RunTracker(run_dir, config={}, mode="disabled").log_eval(ROWS[0])  # a first attempt without W&B
    with RunTracker(run_dir, config={}, mode="offline", resume=True, stage_series=_stage_count) as tracker:
        tracker.restore(ROWS[:2])
        tracker.log_eval(ROWS[2])
    run = read_offline_run(run_dir)
    assert _history_by_stage(run, "cl/rows") == {1: 2, 2: 3}


def test_a_failing_series_is_a_warning_and_the_row_is_logged(tmp_path, caplog):
    def broken(rows):
        raise ValueError("no")

    with RunTracker(tmp_path / "run", config={}, mode="offline", stage_series=broken) as tracker:
        with caplog.at_level(logging.WARNING, logger="clipcl_runner.tracking"):
            tracker.log_eval(ROWS[1])
    assert "per-stage W&B series not computed" in caplog.text
    assert _history_by_stage(read_offline_run(tmp_path / "run"), "task/T1/acc") == {1: 80.25}


@pytest.mark.parametrize("stats,console", [(False, False), (True, True)])
def test_system_stats_and_console_switches(stats, console):
    import wandb

    settings = tracking._quiet_settings(wandb, system_stats=stats, console=console)
    assert settings.x_disable_stats is (not stats)
    assert settings.console == ("wrap" if console else "off")


def test_checkpoint_artifact_only_when_asked(tmp_path):
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    with RunTracker(run_dir, config={}, mode="offline") as tracker:
        tracker.log_checkpoint(ckpt, 1)
    staged = list((run_dir / "wandb").rglob("*.wandb"))
    assert staged and any(b"checkpoint-" in path.read_bytes() for path in staged)


def test_runner_stage_series_by_hand():
    """The runner's W&B series: the run summary of the rows so far (hand-worked on ROWS)."""
    from clipcl_runner.runner import stage_series

    one = stage_series(ROWS[:2], ["T1", "T2"])
    assert one["cl/ut_acc"] == 80.25 and math.isnan(one["cl/bwt"]) and math.isnan(one["cl/forgetting"])
    assert one["cl/delta/zs/colour/acc"] == 55.5 - 61.0
    two = stage_series(ROWS, ["T1", "T2"])
    assert two["cl/ut_acc"] == (60.0 + 85.0) / 2
    assert two["cl/bwt"] == 60.0 - 80.25 and two["cl/forgetting"] == 80.25 - 60.0
    assert two["cl/transfer"] == 11.0  # a[T1 row][T2 column]: trained rows only
    assert two["cl/delta/ret/heldout/i2t_r1"] == 25.5 - 30.0
    assert "cl/zs/colour/acc" not in two and "cl/stages" not in two  # the row has the probes themselves


def test_log_line_shows_headline_and_small_terms():
    from clipcl_runner.runner import _brief

    line = _brief(
        {"ut_acc": 61.25, "bwt": -3.5, "forgetting": 4.0, "train/lwf": 0.00031, "stages": 2, "ret/x/i2t_r5": 1.0},
        headline=("ut_acc", "bwt", "forgetting"),
    )
    assert line == "ut_acc=61.25, bwt=-3.5, forgetting=4, train/lwf=0.00031"


def test_offline_history_includes_an_attempt_started_in_the_same_second(tmp_path):
    """W&B names a second folder of the same run and second '<...>-<id>-1': it is still that run's history."""
    from pathlib import Path as _Path

    from clipcl_runner.report.wandb_runs import _wandb_run_id

    run_dir = tmp_path / "run"
    with RunTracker(run_dir, config={}, mode="offline") as tracker:
        tracker.log_eval(ROWS[0])
    first = next((run_dir / "wandb").glob("offline-run-*"))
    first.rename(first.with_name(first.name + "-1"))
    assert _history_by_stage({"history": tracking.read_offline_history(run_dir)}, "task/T1/acc") == {0: 10.0}
    assert _wandb_run_id(_Path(first.name + "-1")) == tracker.run_id


def test_training_curve_points_are_logged_once_across_a_mid_stage_resume(tmp_path):
    """Killed after logging steps 10..30 with its checkpoint at step 10: the resumed job recomputes
    steps 20 and 30 (same values, exact resume) and W&B must hold each step once, in order."""
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with RunTracker(run_dir, config={}, mode="offline") as tracker:
            tracker.log_eval(ROWS[0])
            for step in (10, 20, 30):
                tracker.log_train(step, {"loss": 1.0 / step})
            raise RuntimeError("killed")
    assert json.loads((run_dir / "wandb_logged.json").read_text())["train_step"] == 30
    with RunTracker(run_dir, config={}, mode="offline", resume=True) as tracker:
        tracker.restore(ROWS[:1])
        for step in (20, 30, 40):  # the checkpoint was at step 10
            tracker.log_train(step, {"loss": 1.0 / step})
        tracker.log_eval(ROWS[1])
    history = tracking.read_offline_history(run_dir)
    curve = [(h["train/step"], h["step/loss"]) for h in history if "step/loss" in h]
    assert curve == [(10, 0.1), (20, 0.05), (30, 1.0 / 30), (40, 0.025)]
    assert _history_by_stage({"history": history}, "task/T1/acc") == {0: 10.0, 1: 80.25}


def test_a_new_wandb_run_after_a_resume_gets_the_whole_curve(tmp_path):
    """A resume that must start a new W&B run (it holds a row evaluated after the checkpoint) logs the
    curve from the checkpoint on into that run: the old run's last step does not hide points."""
    run_dir = tmp_path / "run"
    with RunTracker(run_dir, config={}, mode="offline") as tracker:
        tracker.log_eval(ROWS[0])
        tracker.log_train(10, {"loss": 0.5})
        tracker.log_eval(ROWS[1])
    first = tracker.run_id
    with RunTracker(run_dir, config={}, mode="offline", resume=True) as tracker:
        tracker.restore(ROWS[:1])  # the checkpoint predates ROWS[1]
        tracker.log_train(10, {"loss": 0.5})
    assert tracker.run_id != first
    curve = [h["train/step"] for h in tracking.read_offline_history(run_dir, tracker.run_id) if "step/loss" in h]
    assert curve == [10]
