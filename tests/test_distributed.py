"""Data-parallel training: two gloo processes under torchrun give the metrics of one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, TEST_PRESET

from clipcl_runner.trainer import EpochShuffle

# Two short stages (10 steps of a global batch of 32) and a cheap evaluation, on the test preset's CLIP.
# The tiny CLIP is a ResNet: BatchNorm in train mode normalises over each rank's 16 images rather than
# the 32 of one process, so the comparison keeps BatchNorm statistics fixed (trainer.freeze_bn).
SHORT = (
    *TEST_PRESET,
    "logger=none",
    "tasks.num_stages=2",
    "tasks.epochs=null",
    "tasks.iterations=10",
    "trainer.freeze_bn=true",
    "tasks.train_per_class=60",
    "tasks.test_per_class=40",
    "trainer.device=cpu",
    "trainer.threads=1",
    "trainer.checkpoint=false",
    "eval.probes.synthetic.retrieval_images=100",
)


def test_ranks_split_every_global_batch_between_them():
    one = list(EpochShuffle(10, seed=3, batch=4))
    ranks = [list(EpochShuffle(10, seed=3, batch=4, rank=r, world=2)) for r in range(2)]
    assert len(EpochShuffle(10, seed=3, batch=4, rank=1, world=2)) == 4
    # global batch k = rank 0's k-th pair + rank 1's k-th pair; the partial last batch is dropped
    assert [ranks[0][0:2] + ranks[1][0:2], ranks[0][2:4] + ranks[1][2:4]] == [one[0:4], one[4:8]]


def launch(run_dir: Path, *launcher: str, env: dict | None = None) -> dict:
    """The SHORT run under ``launcher`` (a python, torchrun or srun command line); its summary."""
    command = [*launcher, "-m", "clipcl_runner.cli", *SHORT, f"hydra.run.dir={run_dir}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(pretrained_test_clip, tmp_path):
    single = launch(tmp_path / "single", sys.executable)
    pair = launch(
        tmp_path / "pair", sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"
    )
    assert_same_run(single, pair, tmp_path / "pair")


def assert_same_run(single: dict, pair: dict, pair_dir: Path) -> None:
    rows = [json.loads(line) for line in (pair_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["stage"] for row in rows] == [0, 1, 2]  # rank 0 alone wrote the run folder
    job = json.loads((pair_dir / "job.json").read_text())
    assert len(job) == 1 and job[0]["world_size"] == 2
    for key, value in single.items():
        if isinstance(value, float) and value == value:
            assert pair[key] == pytest.approx(value, abs=0.6), key  # numerical noise flips an image at most
    assert single["delta/ret/heldout/i2t_r1"] != 0.0  # it trained


def test_gathered_shards_come_back_in_order():
    from clipcl_runner import distributed

    assert list(distributed.shard(5)) == [0, 1, 2, 3, 4]  # one process: everything
    local = torch.arange(5.0).view(5, 1)
    assert torch.equal(distributed.gather_shards(local, 5), local)


@pytest.mark.slow
def test_torchrun_without_a_run_folder_makes_one_folder_and_logs_once(pretrained_test_clip, tmp_path):
    """Both ranks compose the default folder name (conf/hydra/default.yaml): one folder, rank 0's lines once."""
    import os

    env = {**os.environ, "CLIPCL_OUTPUTS": str(tmp_path)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "clipcl_runner.cli", *SHORT, "tasks.num_stages=1"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1 and folders[0].name.split("_")[-1].startswith("t"), folders
    assert (folders[0] / "summary.json").is_file()
    assert done.stdout.count("[clipcl_runner.runner][INFO] - run folder") == 1, done.stdout[-3000:]
    assert done.stdout.count("[clipcl_runner.runner][INFO] - summary:") == 1
