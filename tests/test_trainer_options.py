"""Trainer speed options change the speed, not the result: channels-last images and torch.compile."""
from __future__ import annotations

import pytest
import torch

from clipcl_runner.methods.lwf import LwF
from clipcl_runner.trainer import StageTraining, TrainSettings
from conftest import tiny_run


def trained_parameters(**options) -> list[torch.Tensor]:
    torch.manual_seed(0)
    run = tiny_run(stages=2)
    if options.get("channels_last"):
        run.model.to(memory_format=torch.channels_last)
    run.stage_index = 1
    method = LwF()
    parameters = method.setup(run)
    method.begin_stage(run)
    run.train_stage = method.training_stage(run)
    settings = TrainSettings(batch_size=4, progress=False, freeze_bn=True, **options)
    # SGD, not Adam: Adam turns float noise in near-zero gradients into full-size steps
    StageTraining(run, method, parameters, lambda p: torch.optim.SGD(p, lr=0.1), None, settings, seed=0).run()
    return [p.detach().clone() for p in parameters]


def assert_same_training(**options) -> None:
    for plain, optioned in zip(trained_parameters(), trained_parameters(**options)):
        torch.testing.assert_close(optioned, plain, rtol=1e-3, atol=1e-4)


def test_channels_last_trains_the_same_model():
    assert_same_training(channels_last=True)


@pytest.mark.slow
def test_compiled_step_trains_the_same_model():
    assert_same_training(compile=True)
