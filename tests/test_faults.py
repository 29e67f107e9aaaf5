"""Fault injection on the run folder (issue 13): one writer, config identity on resume, safe loading,
signals to the whole process group, rows exactly once, and bad input refused before any work."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TEST_PRESET, compose_config

from clipcl_runner import checkpoint, run_folder
from clipcl_runner.config_checks import config_diff, identity
from clipcl_runner.run_folder import RunFolderBusy, RunFolderError, RunLock

SHORT = ("tasks.num_stages=2", "tasks.epochs=1")


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_leftover_runs():
    """A failing test must not leave its runs (and their DataLoader workers) behind."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def clipcl(*args: str, **popen) -> subprocess.Popen:
    """`clipcl ARGS` in its own process group (as a SLURM job step is), from the repository root."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipcl_runner.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **popen,
    )
    STARTED.append(proc)
    return proc


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (rc {proc.returncode}) before {what}:\n{err[-3000:]}")
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def stages(run_dir: Path) -> list[float]:
    return [row["stage"] for row in run_folder.read_metrics(run_dir)]


# -- 6. validation before work ------------------------------------------------------------------
CHECK = """
import runpy, sys, time
sys.argv = ["clipcl", *sys.argv[1:]]
try:
    runpy.run_module("clipcl_runner.cli", run_name="__main__")
finally:
    print("TORCH_IMPORTED=" + str("torch" in sys.modules), file=sys.stderr)
"""


def refused(*args: str) -> tuple[str, float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", CHECK, *TEST_PRESET, "logger=none", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "\\n" not in result.stderr, result.stderr
    assert "TORCH_IMPORTED=False" in result.stderr, "torch was imported before the config was refused"
    return result.stderr, elapsed


@pytest.mark.parametrize(
    "override, named",
    [
        ("trainer.batch_size=abc", "trainer.batch_size='abc'"),
        ("trainer.batch_size=0", "trainer.batch_size=0"),
        ("trainer.batch_size=2.5", "trainer.batch_size=2.5"),
        ("trainer.optimizer.lr=-1e-4", "trainer.optimizer.lr=-0.0001"),
        ("seed=abc", "seed='abc'"),
        ("+trainer.batchsize=8", "Did you mean trainer.batch_size"),
        ("paths.cache_dir=/proc/nope/x", "paths.cache_dir=/proc/nope/x"),
        ("paths.output_dir=/proc/nope/x", "paths.output_dir=/proc/nope/x"),
        ("model=open_clip", "model.pretrain"),
        ("part=both", "part='both'"),
    ],
)
def test_bad_values_are_refused_fast_naming_the_key(override, named, tmp_path):
    stderr, elapsed = refused(override, f"paths.output_dir={tmp_path}")
    assert named in stderr, stderr
    assert elapsed < 5, f"refusing {override} took {elapsed:.1f} s"


def test_several_problems_in_one_message_each_on_its_own_line(tmp_path):
    # ranges: the types are the schema's, refused by Hydra one at a time (tests/test_config_schema.py)
    stderr, _ = refused("trainer.batch_size=0", "trainer.optimizer.lr=0", "seed=-1", f"paths.output_dir={tmp_path}")
    lines = [line for line in stderr.splitlines() if line.startswith("  - ")]
    assert [line.split("=")[0] for line in lines] == ["  - seed", "  - trainer.batch_size", "  - trainer.optimizer.lr"]


def test_additions_below_an_instantiated_node_stay_allowed():
    from clipcl_runner.config_checks import validate

    cfg = compose_config(*TEST_PRESET, "+trainer.optimizer.betas=[0.9,0.98]")
    validate(cfg, ["+trainer.optimizer.betas=[0.9,0.98]"])  # AdamW's keyword: no error


def test_a_failed_write_names_the_path_and_leaves_no_partial_file(tmp_path):
    target = tmp_path / "checkpoints" / "last.pt"

    def disk_full(handle):
        handle.write(b"x" * 100_000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RunFolderError, match=r"cannot write .*last\.pt: No space left on device") as error:
        run_folder.atomic_write(target, disk_full)
    assert "disk is full" in str(error.value)
    assert list(target.parent.iterdir()) == []  # no partial file
    run_folder.atomic_write(target, b"old")
    with pytest.raises(RunFolderError):
        run_folder.atomic_write(target, disk_full)
    assert target.read_bytes() == b"old" and len(list(target.parent.iterdir())) == 1
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    with pytest.raises(RunFolderError, match=str(blocked / "summary.json")):
        run_folder.atomic_write(blocked / "summary.json", "{}")


# -- 1. one writer per run folder ---------------------------------------------------------------
def test_the_lock_names_its_holder_and_dies_with_it(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunFolderBusy, match=rf"in use by pid {os.getpid()} on host"):
            RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire().release()  # released on exit

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from clipcl_runner.run_folder import RunLock; "
                f"RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"
            ),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunFolderBusy, match=rf"pid {holder.pid}"):
        RunLock(tmp_path).acquire()
    holder.kill()  # kill -9: the kernel drops the lock, no stale lock remains
    holder.wait()
    RunLock(tmp_path).acquire().release()


def test_default_run_folders_never_collide():
    from clipcl_runner.config_checks import unique_suffix

    assert len({unique_suffix() for _ in range(200)}) == 200
    text = (REPO / "conf" / "hydra" / "default.yaml").read_text()
    assert text.count("${clipcl.unique:}") == 2  # runs and sweeps


@pytest.mark.slow
def test_two_runs_on_one_folder_one_is_refused_the_other_intact(pretrained_test_clip, tmp_path):
    run_dir = tmp_path / "run"
    common = (
        *TEST_PRESET,
        "logger=none",
        "tasks.num_stages=1",
        "tasks.epochs=1",
        f"hydra.run.dir={run_dir}",
        f"paths.output_dir={tmp_path}",
    )
    first = clipcl(*common, "seed=0")
    wait_for(
        lambda: (run_dir / run_folder.LOCK).is_file() and (run_dir / run_folder.LOCK).stat().st_size > 0,
        120,
        "the first run's lock",
        first,
    )
    second = clipcl(*common, "seed=1")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 2, err[-3000:]
    assert f"in use by pid {first.pid}" in err and "Traceback" not in err, err[-3000:]
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    assert stages(run_dir) == [0, 1]
    assert "seed: 0" in (run_dir / ".hydra" / "config.yaml").read_text()  # not replaced by the refused run
    assert (run_dir / "summary.json").is_file()


# -- 2. config identity -------------------------------------------------------------------------
def fake_run_folder(run_dir: Path, *overrides: str) -> None:
    """A run folder whose stage-end checkpoint was written under the config of ``overrides``."""
    state = {"completed_stages": 1, "config": identity(compose_config(*TEST_PRESET, *overrides)), "rows": []}
    checkpoint.save(run_dir, state)


def test_identity_ignores_where_and_how_fast_but_not_what():
    base = identity(compose_config(*TEST_PRESET))
    moved = identity(
        compose_config(
            *TEST_PRESET,
            "paths.cache_dir=/elsewhere",
            "trainer.num_workers=4",
            "logger=none",
            "trainer.progress=true",
            "resume=true",
            "trainer.threads=3",
        )
    )
    assert config_diff(base, moved) == []
    changed = identity(compose_config(*TEST_PRESET, "trainer.optimizer.lr=0.01", "seed=3", "part=image"))
    assert config_diff(base, changed) == [
        "part: 'whole' -> 'image'",
        "seed: 0 -> 3",
        "trainer.optimizer.lr: 0.0001 -> 0.01",
    ]


def test_resume_with_another_method_is_refused_with_the_diff(tmp_path):
    run_dir = tmp_path / "run"
    fake_run_folder(run_dir, "method=finetune")
    stderr, elapsed = refused("resume=true", "method=lwf", f"hydra.run.dir={run_dir}", f"paths.output_dir={tmp_path}")
    assert "method.name: 'finetune' -> 'lwf'" in stderr and "resume_allow_config_change=true" in stderr, stderr
    assert elapsed < 5


def test_the_runner_checks_the_checkpoint_itself_under_the_lock(tmp_path):
    from clipcl_runner.runner import prepare_run_folder

    run_dir = tmp_path / "run"
    fake_run_folder(run_dir, "method=finetune")
    run_folder.checkpoint_path(run_dir, run_folder.IDENTITY).unlink()  # only the checkpoint says it
    lwf = compose_config(*TEST_PRESET, "method=lwf", "resume=true")
    with pytest.raises(RunFolderError, match=r"method.name: 'finetune' -> 'lwf'"):
        prepare_run_folder(lwf, run_dir, {".hydra/config.yaml": "new"})
    assert not (run_dir / ".hydra").exists()  # nothing written by a refused run
    allowed = compose_config(*TEST_PRESET, "method=lwf", "resume=true", "resume_allow_config_change=true")
    prepare_run_folder(allowed, run_dir, None)


def test_a_new_run_into_a_folder_holding_a_run_needs_overwrite(tmp_path):
    from clipcl_runner.runner import prepare_run_folder

    run_dir = tmp_path / "run"
    fake_run_folder(run_dir)
    (run_dir / "summary.json").write_text("{}")
    with pytest.raises(RunFolderError, match=r"already holds a run \(summary.json, last.pt\)"):
        prepare_run_folder(compose_config(*TEST_PRESET), run_dir, None)
    prepare_run_folder(compose_config(*TEST_PRESET, "overwrite=true"), run_dir, {".hydra/config.yaml": "seed: 1"})
    assert run_folder.previous_run(run_dir) == [] and (run_dir / ".hydra" / "config.yaml").read_text() == "seed: 1"


# -- 3. safe loading ----------------------------------------------------------------------------
class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_in_last_pt_does_not_execute(tmp_path):
    import torch

    run_dir, marker = tmp_path / "run", tmp_path / "pwned"
    run_dir.joinpath("checkpoints").mkdir(parents=True)
    torch.save({"completed_stages": 1, "rows": [Payload(marker)]}, run_dir / "checkpoints" / "last.pt")
    with pytest.raises(checkpoint.CheckpointError, match=r"last\.pt holds Python objects"):
        checkpoint.load(run_dir)
    assert not marker.exists()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clipcl_runner.cli",
            *TEST_PRESET,
            "logger=none",
            "resume=true",
            f"hydra.run.dir={run_dir}",
            f"paths.output_dir={tmp_path}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and str(run_dir / "checkpoints" / "last.pt") in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and not marker.exists()


def test_a_corrupt_checkpoint_names_the_file_and_the_way_out(tmp_path):
    import torch

    run_dir = tmp_path / "run"
    checkpoint.save(run_dir, {"completed_stages": 1, "model": {"w": torch.ones(1000)}, "rows": []})
    path = run_folder.checkpoint_path(run_dir)
    path.write_bytes(path.read_bytes()[:500])  # truncated (a copy that stopped half way)
    with pytest.raises(checkpoint.CheckpointError, match=r"last\.pt is corrupt or truncated") as error:
        checkpoint.load(run_dir)
    assert "overwrite=true" in str(error.value)
    mid = run_folder.checkpoint_path(run_dir, run_folder.MID_STAGE)
    mid.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match=r"delete mid_stage\.pt to resume from the checkpoint before"):
        checkpoint.load(run_dir, run_folder.MID_STAGE)


@pytest.mark.slow
def test_checkpoints_hold_only_safe_types(pretrained_test_clip, tmp_path):
    """Every method's stage-end and mid-stage state loads with weights_only=True (the real files)."""
    from test_e2e import run_preset

    run_dir = tmp_path / "run"
    # keep_checkpoints=last: a finished run keeps its stage-end checkpoint (the default drops it)
    run_preset(run_dir, "method=zscl", "tasks.num_stages=1", "tasks.epochs=1", "trainer.keep_checkpoints=last")
    state = checkpoint.load(run_dir)  # weights_only=True
    assert state["config"]["method"]["name"] == "zscl" and state["rows"] and state["method"]["average"]


# -- 5. rows exactly once ----------------------------------------------------------------------
ROWS = [
    {"stage": stage, "stage_name": name, "task/T1/acc": acc}
    for stage, name, acc in ((0, "zero-shot", 10.0), (1, "T1", 50.0), (2, "T2", 40.0))
]


def wandb_stages(run_dir: Path) -> list[float]:
    from clipcl_runner.tracking import read_offline_history

    return [row["stage"] for row in read_offline_history(run_dir) if "task/T1/acc" in row]


def test_a_resumed_tracker_logs_every_row_to_wandb_exactly_once(tmp_path):
    from clipcl_runner.tracking import RunTracker

    run_dir = tmp_path / "run"
    with RunTracker(run_dir, config={}, mode="offline") as tracker:
        for row in ROWS[:2]:
            tracker.log_eval(row)
    first_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    # The checkpoint covers both rows: the same W&B run continues, nothing is logged twice.
    with RunTracker(run_dir, config={}, mode="offline", resume=True) as tracker:
        tracker.restore(ROWS[:2])
        tracker.log_eval(ROWS[2])
    assert (run_dir / "wandb_run_id.txt").read_text().strip() == first_id
    assert wandb_stages(run_dir) == [0, 1, 2]
    # Killed before the checkpoint of T2 (its row already logged): a new W&B run gets all rows once.
    with RunTracker(run_dir, config={}, mode="offline", resume=True) as tracker:
        tracker.restore(ROWS[:2])
        tracker.log_eval(ROWS[2])
    assert (run_dir / "wandb_run_id.txt").read_text().strip() != first_id
    assert wandb_stages(run_dir) == [0, 1, 2]
    assert stages(run_dir) == [0, 1, 2]


@pytest.mark.slow
def test_kill_9_before_the_first_checkpoint_then_resume_gives_each_row_once(pretrained_test_clip, tmp_path):
    run_dir = tmp_path / "run"
    args = (*TEST_PRESET, "logger=wandb", *SHORT, f"hydra.run.dir={run_dir}", f"paths.output_dir={tmp_path}")
    proc = clipcl(*args)
    wait_for(lambda: stages(run_dir) == [0], 300, "the zero-shot row", proc)
    assert not run_folder.checkpoint_path(run_dir).exists()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    resumed = clipcl(*args, "resume=true")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert stages(run_dir) == [0, 1, 2]
    assert wandb_stages(run_dir) == [0, 1, 2]


# -- 4. signals to the whole process group -----------------------------------------------------
WORKER_SCRIPT = """
import sys, time, torch
from torch.utils.data import DataLoader, Dataset
from clipcl_runner.preemption import StopRequest, ignore_stop_signals
from clipcl_runner.run_folder import atomic_write

class Slow(Dataset):
    def __len__(self):
        return 10_000
    def __getitem__(self, index):
        time.sleep(0.01)
        return torch.tensor([index])

stop = StopRequest()
loader = DataLoader(Slow(), batch_size=4, num_workers=2, persistent_workers=True, worker_init_fn=ignore_stop_signals)
for step, batch in enumerate(loader):
    if step == 3:
        print("ready", flush=True)
    if stop.requested:
        atomic_write(sys.argv[1], torch.ones(10_000).numpy().tobytes())  # the checkpoint, with workers alive
        stop.hand_over()
"""


def test_workers_ignoring_the_signal_let_the_main_process_checkpoint(tmp_path):
    """SIGTERM to the whole process group: with ignore_stop_signals the workers outlive it, so the main
    process is not hit by "DataLoader worker killed" while it checkpoints."""
    target = tmp_path / "mid_stage.pt"
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, str(target)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:  # a hanging exit must not outlive the test
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err and "killed by signal" not in err, err[-3000:]
    assert target.stat().st_size == 40_000


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, code, workers",
    [
        pytest.param(signal.SIGTERM, 143, 2, id="SIGTERM-2-workers"),
        pytest.param(signal.SIGINT, 130, 0, id="SIGINT"),
    ],
)
def test_a_signal_to_the_process_group_checkpoints_and_resumes_exactly(
    pretrained_test_clip, tmp_path, signum, code, workers
):
    from test_e2e import run_preset

    overrides = ("method=vr_lwf", "tasks.num_stages=2", "tasks.epochs=3", f"trainer.num_workers={workers}")
    run_dir = tmp_path / "run"
    args = (*TEST_PRESET, "logger=none", *overrides, f"hydra.run.dir={run_dir}", f"paths.output_dir={tmp_path}")
    proc = clipcl(*args)
    wait_for(lambda: stages(run_dir) == [0], 300, "the zero-shot row", proc)
    time.sleep(1.0)  # inside stage 1's training
    os.killpg(proc.pid, signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert (
        run_folder.checkpoint_path(run_dir, run_folder.MID_STAGE).exists()
        or run_folder.checkpoint_path(run_dir).exists()
    )
    resumed = clipcl(*args, "resume=true")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    reference = run_preset(tmp_path / "reference", *overrides)
    summary = json.loads((run_dir / "summary.json").read_text())
    for key, value in reference.items():
        assert summary[key] == pytest.approx(value, abs=1e-9) or (summary[key] is None and value != value), key
    assert stages(run_dir) == [0, 1, 2]


# -- 7. report ---------------------------------------------------------------------------------
def test_report_counts_a_copied_seed_once_and_says_so(tmp_path):
    import shutil

    from test_report import make_run

    from clipcl_runner import report

    sweep = tmp_path / "sweep"
    for seed, values in ((0, (50.0, -26.0)), (1, (52.0, -24.0))):
        make_run(sweep / f"{seed}_finetune_s{seed}", "finetune", seed, values)
    shutil.copytree(sweep / "0_finetune_s0", sweep / "copy_of_seed0")
    os.utime(sweep / "copy_of_seed0" / "summary.json", (time.time() + 10,) * 2)  # the newer one is kept
    result = report.write_report([sweep], tmp_path / "out")
    agg = report.aggregate(report.drop_duplicate_seeds(report.load_runs(report.find_runs([sweep]))[0])[0])
    assert list(agg["n"]) == [2] and list(agg["seeds"]) == ["0,1"]
    assert agg["ut_acc/mean"].iloc[0] == pytest.approx(51.0)
    duplicates = [m for m in result["missing"] if m["reason"].startswith(report.DUPLICATE)]
    assert [Path(m["run"]).name for m in duplicates] == ["0_finetune_s0"]
    assert "copy_of_seed0" in duplicates[0]["reason"]


def test_report_refuses_a_non_numeric_headline_value_naming_the_run(tmp_path, capsys):
    from test_report import make_run

    from clipcl_runner import report

    sweep = tmp_path / "sweep"
    make_run(sweep / "0_finetune_s0", "finetune", 0, (50.0, -26.0))
    bad = make_run(sweep / "1_finetune_s1", "finetune", 1, (52.0, -24.0))
    summary = json.loads((bad / "summary.json").read_text())
    summary["ut_acc"] = "n/a"
    (bad / "summary.json").write_text(json.dumps(summary))
    assert report.main([str(sweep), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "1_finetune_s1" in err and "ut_acc = 'n/a'" in err and "Traceback" not in err


def test_report_names_a_malformed_accuracy_matrix(tmp_path, capsys):
    from test_report import make_run

    from clipcl_runner import report

    sweep = tmp_path / "sweep"
    run = make_run(sweep / "0_finetune_s0", "finetune", 0, (50.0, -26.0))
    (run / "accuracy_matrix.csv").write_text("model,T1,T2\nzero-shot,10,twelve\n")
    assert report.main([str(sweep), "--out", str(tmp_path / "out")]) == 2
    assert str(run / "accuracy_matrix.csv") in capsys.readouterr().err


def test_the_runner_loads_neither_wandb_nor_matplotlib_until_needed():
    code = (
        "import sys, clipcl_runner.runner, clipcl_runner.tracking as t; "
        "t.RunTracker(sys.argv[1], config={}, mode='disabled').finish(); "
        "print(sorted(m for m in ('wandb', 'matplotlib') if m in sys.modules))"
    )
    with __import__("tempfile").TemporaryDirectory() as folder:
        out = subprocess.run(
            [sys.executable, "-c", code, folder], cwd=REPO, capture_output=True, text=True, timeout=120
        )
    assert out.stdout.strip() == "[]", out.stderr[-2000:]
