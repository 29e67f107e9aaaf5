"""Class-incremental pieces of the stage loop: merged training stages, the seen-class training head,
the class-incremental accuracy and its Avg / Last summary."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_run

from clipcl_runner.data.stages import Stage, TensorImages, merged_stage
from clipcl_runner.evaluation import Evaluator
from clipcl_runner.methods.base import Method
from clipcl_runner.metric_names import CIL_ACC as CIL_METRIC
from clipcl_runner.run_summary import run_summary


def labelled(n: int, label_values) -> TensorImages:
    return TensorImages(torch.arange(n, dtype=torch.float32).view(n, 1), torch.tensor(label_values))


def test_merged_stage_shifts_labels_after_the_classes_before():
    first = Stage("A", ["a0", "a1"], labelled(4, [0, 1, 0, 1]), labelled(1, [0]))
    second = Stage("B", ["b0", "b1", "b2"], labelled(3, [2, 0, 1]), labelled(1, [0]))
    merged = merged_stage("AB", [(first, [1, 2]), (second, None)], iterations=7)
    assert merged.classnames == ["a0", "a1", "b0", "b1", "b2"]
    assert merged.train_templates == ["a photo of a {}."] and merged.iterations == 7
    assert [(float(x), y) for x, y in (merged.train[i] for i in range(len(merged.train)))] == [
        (1.0, 1),
        (2.0, 0),
        (0.0, 4),
        (1.0, 2),
        (2.0, 3),
    ]


def test_merged_stage_formats_prompts_when_templates_differ():
    cars = Stage("cars", ["mini"], labelled(1, [0]), labelled(1, [0]), train_templates=["a photo of a {}, a car."])
    pets = Stage("pets", ["pug"], labelled(1, [0]), labelled(1, [0]), train_templates=["a photo of a {}, a pet."])
    merged = merged_stage("joint", [(cars, None), (pets, None)], iterations=2)
    assert merged.classnames == ["a photo of a mini, a car.", "a photo of a pug, a pet."]
    assert merged.train_templates == ["{}"]
    two = Stage("x", ["y"], labelled(1, [0]), labelled(1, [0]), train_templates=["{}", "a {}"])
    with pytest.raises(ValueError, match="one template per stage"):
        merged_stage("bad", [(cars, None), (two, None)], iterations=1)


def test_seen_training_head_classifies_among_every_class_so_far():
    run = tiny_run(stages=3)
    run.train_head = "seen"
    method = Method("finetune")
    assert method.training_stage(run) is run.stage  # the first step has no earlier classes
    run.stage_index = 2
    stage = method.training_stage(run)
    assert stage.classnames == ["shape0a", "shape0b", "shape1a", "shape1b", "shape2a", "shape2b"]
    assert len(stage.train) == len(run.stage.train)  # only the current step's images
    assert sorted({int(stage.train[i][1]) for i in range(len(stage.train))}) == [4, 5]
    run.train_stage = stage
    images, labels = next(iter(torch.utils.data.DataLoader(stage.train, batch_size=8)))
    loss, _ = method.training_loss(run, images, labels)
    assert torch.isfinite(loss)


def test_unknown_train_head_is_rejected():
    with pytest.raises(ValueError, match="trainer.train_head='every'"):
        tiny_run().__class__(model=None, tokenizer=None, device=torch.device("cpu"), stages=[], train_head="every")


def test_cil_accuracy_pools_every_seen_class(monkeypatch):
    images = torch.zeros(4, 3, 8, 8)
    stages = [
        Stage(
            f"S{i}",
            [f"c{i}a", f"c{i}b"],
            TensorImages(images, torch.tensor([0, 1, 0, 1])),
            TensorImages(images[: 2 + 2 * i], torch.tensor([0, 1, 0, 1])[: 2 + 2 * i]),
        )
        for i in range(3)
    ]
    evaluator = Evaluator(stages, [], tokenizer=None, device=torch.device("cpu"), task_head="seen")
    # Scripted features and heads: the model answers class index 1 for every image.
    monkeypatch.setattr(evaluator, "encode_images", lambda model, ds: (torch.ones(len(ds), 1), ds.labels))
    monkeypatch.setattr(evaluator, "head", lambda model, names, templates: torch.eye(len(names))[1:2])
    metrics = evaluator(torch.nn.Linear(1, 1), completed_stages=2)
    # Seen after 2 steps: S0 (2 images: labels 0,1 -> right once) and S1 (4 images, labels 2,3,2,3 -> never right).
    assert metrics["task/S0/acc"] == pytest.approx(50.0) and metrics["task/S1/acc"] == pytest.approx(0.0)
    assert metrics[CIL_METRIC] == pytest.approx(100.0 * 1 / 6)


def test_cil_summary_is_the_mean_and_last_step():
    names = ["S1", "S2", "S3"]
    rows = [
        {"stage": t, "stage_name": f"S{t}", **{f"task/{n}/acc": 50.0 for n in names}, CIL_METRIC: acc}
        for t, acc in ((1, 90.0), (2, 70.0), (3, 50.0))
    ]
    summary = run_summary(rows, names)
    assert summary["cil_avg"] == pytest.approx(70.0) and summary["cil_last"] == pytest.approx(50.0)
