"""The trainer's contract with a method: ``after_step(run, step)`` after every optimiser and scheduler step."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_run

from clipcl_runner.methods.base import Method
from clipcl_runner.trainer import StageTraining, TrainSettings


class Recording(Method):
    """Fine-tuning that records, at each ``after_step``, the step, whether the weights changed since its
    loss was computed, and the learning rate then in force."""

    def __init__(self):
        super().__init__("recording")
        self.calls: list[tuple[int, bool, float]] = []
        self.optimizer = None

    def training_loss(self, run, images, labels):
        self.before = [p.detach().clone() for p in run.model.parameters() if p.requires_grad]
        return super().training_loss(run, images, labels)

    def after_step(self, run, step):
        after = [p.detach() for p in run.model.parameters() if p.requires_grad]
        changed = any(not torch.equal(a, b) for a, b in zip(after, self.before))
        self.calls.append((step, changed, self.optimizer.param_groups[0]["lr"]))


def test_after_step_follows_every_optimiser_and_scheduler_step():
    run = tiny_run(stages=1)  # 8 images: batch 4, 3 epochs = 6 steps
    method = Recording()
    parameters = method.setup(run)
    method.begin_stage(run)
    run.train_stage = method.training_stage(run)
    run.train_stage.epochs = 3

    def optimizer(params):
        method.optimizer = torch.optim.SGD(params, lr=0.1)
        return method.optimizer

    # lr factor 1 / (k + 1) after k scheduler steps: the hook must see the schedule already stepped
    def scheduler(opt, total_steps):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 / (k + 1))

    training = StageTraining(
        run, method, parameters, optimizer, scheduler, TrainSettings(batch_size=4, progress=False), 0
    )
    training.run()
    assert [step for step, _, _ in method.calls] == [1, 2, 3, 4, 5, 6]
    assert all(changed for _, changed, _ in method.calls)
    assert [lr for _, _, lr in method.calls] == pytest.approx([0.1 / (step + 1) for step in range(1, 7)])


def test_after_step_counts_from_the_resumed_step():
    run = tiny_run(stages=1)
    method = Recording()
    parameters = method.setup(run)
    method.begin_stage(run)
    run.train_stage = method.training_stage(run)
    run.train_stage.epochs = 2

    def optimizer(params):
        method.optimizer = torch.optim.SGD(params, lr=0.1)
        return method.optimizer

    training = StageTraining(run, method, parameters, optimizer, None, TrainSettings(batch_size=4, progress=False), 0)
    training.step = 2  # as after load_state_dict of a mid-stage checkpoint
    training.run()
    assert [step for step, _, _ in method.calls] == [3, 4]
