"""The trainer serves a method's auxiliary data (``Method.auxiliary_data``) and keeps its position for
exact mid-stage resume; ``trainer.drop_last`` decides what happens to the last partial batch."""

from __future__ import annotations

import pytest
import torch

from clipcl_runner.auxiliary import Auxiliary
from clipcl_runner.data.stages import Stage, TensorImages
from clipcl_runner.methods.base import Method, RunContext
from clipcl_runner.trainer import StageTraining, TrainSettings, train_settings


def indexed(count: int) -> TensorImages:
    """Image i is filled with the value i, so a batch tells which samples it holds."""
    return TensorImages(
        torch.arange(count, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).clone(), torch.arange(count) % 2
    )


def ids(batch: torch.Tensor) -> list[int]:
    return batch[:, 0, 0, 0].long().tolist()


class Scalar(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.register_buffer("logit_scale", torch.zeros(()))  # the trainer's clamp reads it


class Recording(Method):
    """A loss on one scalar that records the training and the auxiliary batch of every step."""

    def __init__(self, extra: int, extra_batch: int | None):
        super().__init__("recording")
        self.extra = Auxiliary(indexed(extra), extra_batch)
        self.seen: list[tuple[list[int], list[int]]] = []

    def setup(self, run):
        return [run.model.weight]

    def auxiliary_data(self, run):
        return {"extra": self.extra}

    def training_loss(self, run, images, labels, extra=None):
        self.seen.append((ids(images), ids(extra)))
        return (run.model.weight - images.mean() - extra.mean()) ** 2, {}


def stage_training(method: Method, images: int, batch: int, steps: int, drop_last=None, workers: int = 0):
    data = indexed(images)
    stage = Stage("T1", ["a", "b"], data, data, iterations=steps)
    run = RunContext(model=Scalar(), tokenizer=None, device=torch.device("cpu"), stages=[stage])
    parameters = method.setup(run)
    settings = TrainSettings(batch_size=batch, progress=False, drop_last=drop_last, num_workers=workers)
    return StageTraining(run, method, parameters, lambda p: torch.optim.SGD(p, lr=0.1), None, settings, seed=3)


def test_the_loss_gets_one_batch_of_every_stream_and_each_pass_is_a_permutation():
    method = Recording(extra=6, extra_batch=3)
    stage_training(method, images=8, batch=4, steps=4).run()
    extra = [i for _, batch in method.seen for i in batch]
    assert len(method.seen) == 4 and all(len(batch) == 3 for _, batch in method.seen)
    assert sorted(extra[:6]) == sorted(extra[6:]) == list(range(6))  # each image once per pass (ZSCL's loader)
    assert extra[:6] != extra[6:]


def test_a_stream_without_a_batch_size_takes_the_training_batch():
    method = Recording(extra=10, extra_batch=None)
    stage_training(method, images=8, batch=4, steps=2).run()
    assert [len(batch) for _, batch in method.seen] == [4, 4]


@pytest.mark.parametrize("workers", [0, 2])
def test_mid_stage_resume_continues_the_same_auxiliary_batches(workers):
    plain = Recording(extra=5, extra_batch=2)
    stage_training(plain, images=8, batch=4, steps=6, workers=workers).run()

    first = Recording(extra=5, extra_batch=2)
    training = stage_training(first, images=8, batch=4, steps=6, workers=workers)
    saved = {}

    class Stop(Exception):
        pass

    def stop_after_two(stage):
        if stage.step == 2:
            saved.update(stage.state_dict())
            raise Stop

    with pytest.raises(Stop):
        training.run(stop_after_two)
    assert saved["auxiliary"] == {"extra": {"position": 4}}  # samples handed to the loss, not prefetched

    resumed = Recording(extra=5, extra_batch=2)
    training = stage_training(resumed, images=8, batch=4, steps=6, workers=workers)
    training.load_state_dict(saved)
    training.run()
    assert first.seen == plain.seen[:2] and resumed.seen == plain.seen[2:]


def test_drop_last_null_false_true():
    # 10 images, batch 4: null drops the last partial batch (2 steps per epoch), false keeps it (3)
    for drop_last, per_epoch, sizes in ((None, 2, [4, 4, 4, 4]), (False, 3, [4, 4, 2, 4]), (True, 2, [4, 4, 4, 4])):
        method = Recording(extra=3, extra_batch=1)
        training = stage_training(method, images=10, batch=4, steps=4, drop_last=drop_last)
        assert training.steps_per_epoch == per_epoch
        training.run()
        assert [len(images) for images, _ in method.seen] == sizes, drop_last
    # a stage smaller than one batch: null keeps it (one partial batch), true would drop everything
    assert stage_training(Recording(3, 1), images=3, batch=4, steps=1).steps_per_epoch == 1
    with pytest.raises(ValueError, match="trainer.drop_last=true"):
        stage_training(Recording(3, 1), images=3, batch=4, steps=1, drop_last=True)


def test_the_default_config_has_every_trainer_setting():
    from conftest import compose_config

    cfg = compose_config("experiment=synthetic_test")
    assert cfg.trainer.drop_last is None
    assert train_settings(cfg.trainer, "fp32").drop_last is None
    assert compose_config("experiment=zscl_cil", "tasks.root=/nonexistent").trainer.drop_last is False
