"""What sweeps and multi-process runs print: torchrun ranks agree on one run folder and rank 0 alone logs
INFO (console.py, conf/hydra/default.yaml's job_logging); a failed sweep job is one line with its log
(sweep_report.py) and ``clipcl -m`` exits 1 after the report; pack jobs' lines carry their job folder."""

from __future__ import annotations

import logging
import logging.config
import re
from pathlib import Path

import pytest
from conftest import CONFIG_DIR, TEST_PRESET, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from clipcl_runner import console
from clipcl_runner.config_checks import unique_suffix

TORCHRUN = {"TORCHELASTIC_RUN_ID": "b14f6ab4-e473", "MASTER_ADDR": "localhost", "MASTER_PORT": "39515"}


@pytest.fixture
def no_launcher_env(monkeypatch):
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key in TORCHRUN:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_torchrun_ranks_name_the_same_run_folder(no_launcher_env):
    monkeypatch = no_launcher_env
    assert unique_suffix() != unique_suffix()  # one process: random
    for key, value in TORCHRUN.items():
        monkeypatch.setenv(key, value)
    suffixes = set()
    for rank in ("0", "1"):  # each rank composes its own config from the same launch environment
        monkeypatch.setenv("RANK", rank)
        suffixes.add(unique_suffix())
    assert len(suffixes) == 1 and re.fullmatch(r"t[0-9a-f]{6}", suffixes.pop())
    first = unique_suffix()
    monkeypatch.setenv("MASTER_PORT", "39516")  # another launch (default run id "none" in older torch)
    assert unique_suffix() != first
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # inside a SLURM job the job id still names it
    assert unique_suffix() == "j77"


def _record(level: int) -> logging.LogRecord:
    return logging.LogRecord("clipcl_runner.runner", level, __file__, 1, "msg", None, None)


@pytest.mark.parametrize("env", [{"RANK": "1", "WORLD_SIZE": "2"}, {"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}])
def test_other_ranks_keep_warnings_and_write_no_log(no_launcher_env, env):
    monkeypatch = no_launcher_env
    monkeypatch.setenv("MASTER_ADDR", "node1")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rank1_console, rank1_file = console.RankFilter(), console.MainRankOnly()
    assert not rank1_console.filter(_record(logging.INFO))
    assert rank1_console.filter(_record(logging.WARNING)) and rank1_console.filter(_record(logging.ERROR))
    assert not rank1_file.filter(_record(logging.ERROR))
    monkeypatch.setenv("RANK" if "RANK" in env else "SLURM_PROCID", "0")
    assert console.RankFilter().filter(_record(logging.INFO)) and console.MainRankOnly().filter(_record(logging.INFO))


@pytest.fixture
def hydra_logging(tmp_path, monkeypatch, capsys):
    """Configure logging exactly as Hydra does for a job of ``clipcl <overrides>``; yields the job's log file."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)

    def configure(*overrides: str, multirun: bool = False) -> Path:
        with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
            cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
        out = tmp_path / "3_lwf_s1"
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(out)
            cfg.hydra.job.name = "cli"
            cfg.hydra.job.num = 3
            cfg.hydra.mode = RunMode.MULTIRUN if multirun else RunMode.RUN
        HydraConfig.instance().set_config(cfg)
        out.mkdir()
        logging.config.dictConfig(OmegaConf.to_container(cfg.hydra.job_logging, resolve=True))
        return out / "cli.log"

    yield configure
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = saved
    HydraConfig.instance().cfg = None


def test_job_logging_rank_filter_through_hydras_config(no_launcher_env, hydra_logging, capsys):
    no_launcher_env.setenv("RANK", "1")
    no_launcher_env.setenv("WORLD_SIZE", "2")
    log_file = hydra_logging()
    logging.getLogger("clipcl_runner.runner").info("rank info")
    logging.getLogger("clipcl_runner.runner").warning("rank warning")
    out = capsys.readouterr().out
    assert "rank info" not in out and "rank warning" in out
    assert not log_file.exists()  # rank 0's log is the run's


def test_job_logging_rank0_logs_to_console_and_file_without_prefix(no_launcher_env, hydra_logging, capsys):
    log_file = hydra_logging(multirun=True)  # the basic launcher: one job at a time, no prefix
    logging.getLogger("clipcl_runner.runner").info("stage T1")
    out = capsys.readouterr().out
    assert re.match(r"\[\d{4}-\d\d-\d\d [^]]+\]\[clipcl_runner.runner\]\[INFO\] - stage T1$", out.strip())
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert "stage T1" in log_file.read_text()


def test_pack_jobs_prefix_every_console_line(no_launcher_env, hydra_logging, capsys):
    hydra_logging("hydra/launcher=pack", multirun=True)
    logging.getLogger("clipcl_runner.runner").info("two\nlines")
    lines = capsys.readouterr().out.strip().split("\n")
    assert len(lines) == 2 and all(line.startswith("[3_lwf_s1] ") for line in lines), lines
    assert lines[1] == "[3_lwf_s1] lines"


def test_a_single_run_under_the_pack_launcher_default_has_no_prefix(no_launcher_env, hydra_logging, capsys):
    hydra_logging("hydra/launcher=pack")  # RUN mode: no other job shares the console
    logging.getLogger("x").warning("alone")
    assert capsys.readouterr().out.startswith("[20")


def test_an_empty_folder_of_another_rank_is_removed(no_launcher_env, tmp_path):
    stray, kept = tmp_path / "stray", tmp_path / "kept"
    stray.mkdir()
    kept.mkdir()
    (kept / "job.json").write_text("[]")
    console.drop_rank_folder(stray)  # rank 0: nothing removed
    assert stray.is_dir()
    no_launcher_env.setenv("RANK", "1")
    no_launcher_env.setenv("WORLD_SIZE", "2")
    console.drop_rank_folder(stray)
    console.drop_rank_folder(kept)
    assert not stray.exists() and (kept / "job.json").is_file()


# A tiny sweep whose first job fails inside the run (AdamW refuses a negative weight decay; the config
# check lets it through), the second finishes.
FAILING_SWEEP = (
    *TEST_PRESET,
    "logger=none",
    "tasks.num_stages=1",
    "tasks.epochs=null",
    "tasks.iterations=1",
    "trainer.checkpoint=false",
    "trainer.threads=1",
    "trainer.device=cpu",
    "trainer.optimizer.weight_decay=-1,0",
)


@pytest.mark.parametrize("launcher", ["basic", "pack"])
def test_a_failed_sweep_job_is_one_line_and_the_sweep_ends_with_its_report(pretrained_test_clip, tmp_path, launcher):
    sweep = tmp_path / "sweep"
    done = run_cli("-m", f"hydra/launcher={launcher}", *FAILING_SWEEP, f"hydra.sweep.dir={sweep}")
    text = done.stdout + done.stderr
    assert done.returncode == 1, text[-3000:]
    log_file = sweep / "0_finetune_s0" / "cli.log"
    failed = [line for line in text.splitlines() if line.startswith("clipcl: job")]
    given = " ".join(FAILING_SWEEP[:-1]).replace("=false", "=False")  # as Hydra writes a sweep job's overrides
    assert failed == [
        f"clipcl: job 0 ({given} trainer.optimizer.weight_decay=-1) failed: "
        f"ValueError: Invalid weight_decay value: -1 (log: {log_file})"
    ]
    assert "Traceback" not in text and "Invalid weight_decay" in log_file.read_text()
    assert "Traceback (most recent call last)" in log_file.read_text()  # the full traceback is in the log
    assert (sweep / "1_finetune_s0" / "summary.json").is_file()  # the other job ran to its end
    assert "| finetune |" in done.stdout and "0_finetune_s0: no summary.json" in done.stdout
    assert f"rebuild: clipcl-report {sweep}" in done.stdout
    runner_lines = [line for line in done.stdout.splitlines() if "[clipcl_runner.runner][INFO]" in line]
    assert runner_lines
    if launcher == "pack":  # parallel jobs on one console: each line names its job
        assert all(re.match(r"\[[01]_finetune_s0\] \[", line) for line in runner_lines), runner_lines[:3]
        assert any(line.startswith("[1_finetune_s0] ") for line in runner_lines)
    else:
        assert all(line.startswith("[20") for line in runner_lines), runner_lines[:3]


def test_a_failed_single_run_is_one_line_naming_the_run_not_a_sweep(pretrained_test_clip, tmp_path):
    run_dir = tmp_path / "run"
    single = [override.replace("=-1,0", "=-1") for override in FAILING_SWEEP]
    done = run_cli(*single, f"hydra.run.dir={run_dir}")
    text = done.stdout + done.stderr
    assert done.returncode == 1, text[-3000:]
    failed = [line for line in text.splitlines() if line.startswith("clipcl: ")]
    assert failed and failed[0].startswith("clipcl: run (") and "failed: ValueError: Invalid weight_decay" in failed[0]
    assert f"(log: {run_dir / 'cli.log'})" in failed[0]
    assert "sweep" not in text and "Traceback" not in text
    assert "Traceback (most recent call last)" in (run_dir / "cli.log").read_text()
