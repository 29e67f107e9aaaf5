"""ZSCL's weight ensemble (``after_step``, outside the DDP-wrapped / compiled loss) is the same with
``trainer.compile=true``, under DDP (two gloo processes) and in one process (issue 11, item 2)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

SCRIPT = str(REPO / "tests" / "zscl_ensemble_run.py")


def ensemble(out, *launcher: str, options: tuple[str, ...] = ()) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launcher, SCRIPT, str(out), *options], cwd=REPO, capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out, weights_only=True)


def assert_same_ensemble(one: dict, other: dict) -> None:
    assert (other["count"], other["averaged_step"]) == (one["count"], one["averaged_step"]) == (4, 5)
    for name, value in one["ensemble"].items():
        torch.testing.assert_close(other["ensemble"][name], value, rtol=1e-4, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return ensemble(tmp_path_factory.mktemp("zscl") / "one.pt", sys.executable)


@pytest.mark.slow
def test_zscl_ensemble_is_the_same_under_ddp_with_two_gloo_processes(one_process, tmp_path):
    pair = ensemble(
        tmp_path / "pair.pt", sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"
    )
    assert_same_ensemble(one_process, pair)


@pytest.mark.slow
def test_lwf_vr_second_batch_stream_trains_the_same_under_ddp(tmp_path):
    """Every rank draws the same whole second batch, so two processes train what one process does."""
    one = ensemble(tmp_path / "one.pt", sys.executable, options=("--lwf-vr",))
    pair = ensemble(
        tmp_path / "pair.pt",
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        options=("--lwf-vr",),
    )
    for name, value in one["ensemble"].items():
        torch.testing.assert_close(pair["ensemble"][name], value, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_zscl_ensemble_is_the_same_with_trainer_compile(one_process, tmp_path):
    assert_same_ensemble(one_process, ensemble(tmp_path / "compiled.pt", sys.executable, options=("--compile",)))
