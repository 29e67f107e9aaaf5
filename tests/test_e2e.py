"""End to end on the synthetic test preset: learning, the forgetting phenomenon, files, resume, W&B, sweeps."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
from conftest import TEST_PRESET, compose_config, run_cli

from clipcl_runner.runner import run
from clipcl_runner.tracking import read_offline_run

I2T_R1 = "ret/heldout/i2t_r1"


def run_preset(run_dir: Path, *overrides: str) -> dict:
    logger = () if any(o.startswith("logger=") for o in overrides) else ("logger=none",)
    cfg = compose_config(*TEST_PRESET, *logger, *overrides, output_dir=run_dir.parent)
    return run(cfg, run_dir)


def read_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finetune_dir(pretrained_test_clip, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finetune") / "run"
    run_preset(run_dir, "method=finetune")
    return run_dir


@pytest.fixture(scope="module")
def vr_lwf_dir(pretrained_test_clip, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("vr_lwf") / "run"
    run_preset(run_dir, "method=vr_lwf")
    return run_dir


def test_pretraining_taught_colour_and_retrieval(finetune_dir):
    zero_shot = read_rows(finetune_dir)[0]
    assert zero_shot["stage"] == 0 and zero_shot["stage_name"] == "zero-shot"
    assert zero_shot["ret/heldout/i2t_r5"] > 50 and zero_shot["ret/heldout/t2i_r5"] > 50
    assert zero_shot["zs/colour/acc"] > 80


def test_finetuning_forgets_and_vr_lwf_keeps_most(finetune_dir, vr_lwf_dir):
    finetune = json.loads((finetune_dir / "summary.json").read_text())
    vr_lwf = json.loads((vr_lwf_dir / "summary.json").read_text())
    assert finetune[f"delta/{I2T_R1}"] < -10, finetune
    assert vr_lwf[f"delta/{I2T_R1}"] > finetune[f"delta/{I2T_R1}"], (vr_lwf, finetune)
    # Both learnt the new shapes: better than the 3-way chance level on the last task.
    for summary_rows in (read_rows(finetune_dir), read_rows(vr_lwf_dir)):
        assert summary_rows[-1]["task/T3/acc"] > summary_rows[0]["task/T3/acc"] + 5


def test_run_folder_holds_everything_the_report_needs(finetune_dir):
    rows = read_rows(finetune_dir)
    assert [row["stage"] for row in rows] == [0, 1, 2, 3]
    matrix = pd.read_csv(finetune_dir / "accuracy_matrix.csv", index_col=0)
    assert list(matrix.columns) == ["T1", "T2", "T3"] and list(matrix.index) == ["zero-shot", "T1", "T2", "T3"]
    assert matrix.loc["T2", "T1"] == pytest.approx(rows[2]["task/T1/acc"])
    summary = json.loads((finetune_dir / "summary.json").read_text())
    expected_ut = (rows[3]["task/T1/acc"] + rows[3]["task/T2/acc"] + rows[3]["task/T3/acc"]) / 3
    assert summary["ut_acc"] == pytest.approx(expected_ut)
    assert summary["delta/zs/colour/acc"] == pytest.approx(rows[3]["zs/colour/acc"] - rows[0]["zs/colour/acc"])
    assert (finetune_dir / "probes.png").stat().st_size > 1000
    # trainer.keep_checkpoints=none (default): a finished run drops its checkpoints once summary.json is written
    assert not (finetune_dir / "checkpoints" / "last.pt").exists()


def test_resuming_a_finished_run_without_checkpoints_returns_its_summary(finetune_dir):
    summary = json.loads((finetune_dir / "summary.json").read_text())
    rows = (finetune_dir / "metrics.jsonl").read_text()
    resumed = run_preset(finetune_dir, "method=finetune", "resume=true")
    assert resumed == summary and (finetune_dir / "metrics.jsonl").read_text() == rows  # nothing rerun


@pytest.mark.parametrize(
    "keep,files",
    [("last", ["identity.json", "last.pt"]), ("all", ["identity.json", "last.pt", "stage_1.pt", "stage_2.pt"])],
)
def test_keep_checkpoints_last_and_all(pretrained_test_clip, tmp_path, keep, files):
    run_dir = tmp_path / "run"
    run_preset(run_dir, "method=finetune", "tasks.num_stages=2", "tasks.epochs=1", f"trainer.keep_checkpoints={keep}")
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == files
    if keep == "all":  # each stage's copy is that stage's model, not the final one
        import torch

        first, last = (
            torch.load(run_dir / "checkpoints" / name, weights_only=True) for name in ("stage_1.pt", "last.pt")
        )
        assert first["completed_stages"] == 1 and last["completed_stages"] == 2


def test_keep_checkpoints_refuses_an_unknown_value():
    from hydra.errors import ConfigCompositionException

    from clipcl_runner.config_checks import composition_problem
    from clipcl_runner.runner import keep_checkpoints

    assert keep_checkpoints(compose_config(*TEST_PRESET)) == "none"
    assert keep_checkpoints(compose_config(*TEST_PRESET, "trainer.keep_checkpoints=last")) == "last"
    with pytest.raises(ConfigCompositionException) as refused:  # the schema's choice, while Hydra composes
        compose_config(*TEST_PRESET, "trainer.keep_checkpoints=some")
    expected = "trainer.keep_checkpoints='some': must be one of ['none', 'last', 'all']."
    assert composition_problem(refused.value) == expected


def test_resume_after_a_stop_gives_the_uninterrupted_metrics(finetune_dir, tmp_path):
    run_dir = tmp_path / "run"
    stopped = run_preset(run_dir, "method=finetune", "trainer.stop_after_stage=1")
    assert stopped == {"stopped_after_stage": 1} and not (run_dir / "summary.json").exists()
    assert [row["stage"] for row in read_rows(run_dir)] == [0, 1]
    resumed = run_preset(run_dir, "method=finetune", "resume=true")
    uninterrupted = json.loads((finetune_dir / "summary.json").read_text())
    assert set(resumed) == set(uninterrupted)
    for key, value in uninterrupted.items():
        assert (value is None and math.isnan(resumed[key])) or resumed[key] == pytest.approx(value, abs=1e-9), key
    assert [row["stage"] for row in read_rows(run_dir)] == [0, 1, 2, 3]


def test_offline_wandb_run_holds_the_stage_metrics_and_summary(pretrained_test_clip, tmp_path):
    run_dir = tmp_path / "run"
    summary = run_preset(
        run_dir, "method=finetune", "logger=wandb", "tasks.num_stages=2", "tasks.epochs=1", "logger.tags=[ci]"
    )
    logged = read_offline_run(run_dir)
    by_stage = {int(row["stage"]): row for row in logged["history"] if "task/T1/acc" in row}
    local = read_rows(run_dir)
    assert sorted(by_stage) == [0, 1, 2]
    for row in local:
        assert by_stage[row["stage"]]["task/T1/acc"] == pytest.approx(row["task/T1/acc"])
        assert by_stage[row["stage"]][I2T_R1] == pytest.approx(row[I2T_R1])
    assert logged["summary"]["ut_acc"] == pytest.approx(summary["ut_acc"])
    assert logged["job_type"] == "finetune" and "ci" in logged["tags"]


def test_multirun_sweep_gives_each_job_its_own_folder_and_wandb_run(pretrained_test_clip, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        *TEST_PRESET,
        "logger=wandb",
        "method=finetune,lwf",
        "tasks.num_stages=2",
        "tasks.epochs=1",
        f"hydra.sweep.dir={sweep}",
        f"paths.output_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # the sweep ends with its table, the report written and the command that rebuilds it
    assert "| finetune |" in result.stdout and "| lwf |" in result.stdout
    assert f"rebuild: clipcl-report {sweep}" in result.stdout and (sweep / "report" / "report.md").is_file()
    jobs = sorted(path for path in sweep.iterdir() if path.is_dir() and (path / "summary.json").exists())
    assert [job.name for job in jobs] == ["0_finetune_s0", "1_lwf_s0"]
    ids = set()
    for job in jobs:
        logged = read_offline_run(job)
        method = job.name.split("_")[1]
        assert logged["group"] == sweep.name and logged["job_type"] == method
        # name = method, seed and the run's own overrides (not paths, logger, hydra or the experiment)
        assert logged["name"] == f"{method}-s0 tasks.num_stages=2 tasks.epochs=1"
        ids.add(logged["run_id"])
        # preset, task sequence, method and swept options as config fields and tags
        assert logged["config"]["preset"] == "synthetic_test" and logged["config"]["task_sequence"] == "synthetic"
        assert logged["config"]["swept"] == {"tasks.num_stages": "2", "tasks.epochs": "1"}
        assert {"preset:synthetic_test", "tasks:synthetic", f"method:{method}", "tasks.num_stages=2"} <= set(
            logged["tags"]
        )
        # the CL summary as a series over stages, ending at summary.json; training curves against train/step
        summary = json.loads((job / "summary.json").read_text())
        series = {int(h["stage"]): h["cl/ut_acc"] for h in logged["history"] if "cl/ut_acc" in h}
        assert sorted(series) == [1, 2] and series[2] == pytest.approx(summary["ut_acc"])
        assert {int(h["stage"]) for h in logged["history"] if "cl/forgetting" in h} == {1, 2}
        steps = [h["train/step"] for h in logged["history"] if "step/loss" in h]
        assert (
            steps == sorted(steps)
            and steps[0] == 10
            and all(math.isfinite(h["step/lr"]) for h in logged["history"] if "step/lr" in h)
        )
    assert len(ids) == 2


def test_pretrained_tag_without_cached_weights_says_what_to_fetch(tmp_path):
    result = run_cli(
        "model=vit_b32",
        "logger=none",
        f"paths.output_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]  # a user error: the message, not Hydra's wrapper
    assert "clipcl: error: Pretrained weights 'openai' for open_clip model 'ViT-B-32' are not cached" in result.stderr
    assert "InstantiationException" not in result.stderr and "Traceback" not in result.stderr
    assert "open_clip_pytorch_model.bin" in result.stderr and "model.pretrained=/path/to/" in result.stderr


def test_preemption_signal_mid_stage_checkpoints_and_resume_is_exact(vr_lwf_dir, tmp_path, monkeypatch):
    """SIGUSR2 in the middle of stage 2 (VR-LwF: random texts use the RNG) -> checkpoint, exit, exact resume."""
    from clipcl_runner import checkpoint
    from clipcl_runner.trainer import StageTraining

    original_step = StageTraining.train_step

    def signalled_step(self, images, labels):
        terms = original_step(self, images, labels)
        if self.run_context.stage_index == 1 and self.step == 9:  # the 10th step of stage 2
            os.kill(os.getpid(), signal.SIGUSR2)
        return terms

    monkeypatch.setattr(StageTraining, "train_step", signalled_step)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        run_preset(run_dir, "method=vr_lwf")
    assert stopped.value.code == 128 + signal.SIGUSR2
    mid_stage = checkpoint.load(run_dir, checkpoint.MID_STAGE)
    assert mid_stage["stage_index"] == 1 and mid_stage["training"]["step"] == 10
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL  # our handler is gone after the hand-over

    monkeypatch.setattr(StageTraining, "train_step", original_step)
    resumed = run_preset(run_dir, "method=vr_lwf", "resume=true")
    uninterrupted = json.loads((vr_lwf_dir / "summary.json").read_text())
    for key, value in uninterrupted.items():
        assert (value is None and math.isnan(resumed[key])) or resumed[key] == pytest.approx(value, abs=1e-9), key
    assert not checkpoint.checkpoint_path(run_dir, checkpoint.MID_STAGE).exists()


def test_every_epoch_evaluation_rows_stay_out_of_the_matrix(pretrained_test_clip, tmp_path):
    """The paper's OST evaluates after every epoch: rows with a fractional stage, the matrix from stage ends."""
    run_dir = tmp_path / "run"
    summary = run_preset(run_dir, "method=imm", "tasks.num_stages=1", "tasks.epochs=2", "eval.every_epoch=true")
    rows = read_rows(run_dir)
    assert [row["stage"] for row in rows] == [0, 0.5, 1] and rows[1]["epoch"] == 1
    matrix = pd.read_csv(run_dir / "accuracy_matrix.csv", index_col=0)
    assert list(matrix.index) == ["zero-shot", "T1"]
    assert summary["ut_acc"] == pytest.approx(rows[2]["task/T1/acc"])
