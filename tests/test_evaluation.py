"""The evaluator's bookkeeping: heads, task-head offsets, shared image features, metric names."""

from __future__ import annotations

import open_clip
import pytest
import torch

from clipcl_runner.data.stages import ClassificationProbe, RetrievalProbe, Stage, TensorImages
from clipcl_runner.evaluation import Evaluator, accuracy
from clipcl_runner.models import register_model_configs

NAME = "SynthCLIP-RN-Tiny"


@pytest.fixture(scope="module")
def model_and_tokenizer():
    register_model_configs()
    torch.manual_seed(0)
    return open_clip.create_model(NAME).eval(), open_clip.get_tokenizer(NAME)


def stages(n: int = 3) -> list[Stage]:
    images = torch.randn(6, 3, 32, 32)
    return [
        Stage(
            f"T{i + 1}",
            [f"class{i}a", f"class{i}b"],
            TensorImages(images, torch.arange(6) % 2),
            TensorImages(images, torch.arange(6) % 2),
        )
        for i in range(n)
    ]


def test_accuracy_is_top1_in_percent():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0], [0.0, 1.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1, 1])) == pytest.approx(75.0)


@pytest.mark.parametrize(
    "task_head,completed,expected",
    [
        ("stage", 1, (["class1a", "class1b"], 0)),
        ("seen", 1, (["class0a", "class0b", "class1a", "class1b"], 2)),  # a future stage sees up to itself
        ("seen", 3, (["class0a", "class0b", "class1a", "class1b", "class2a", "class2b"], 2)),
        ("all", 0, (["class0a", "class0b", "class1a", "class1b", "class2a", "class2b"], 2)),
    ],
)
def test_task_heads_and_label_offsets(task_head, completed, expected):
    evaluator = Evaluator(stages(), [], tokenizer=None, device=torch.device("cpu"), task_head=task_head)
    assert evaluator._task_classes(1, completed) == expected


def test_probes_share_image_features_and_name_their_metrics(model_and_tokenizer, monkeypatch):
    model, tokenizer = model_and_tokenizer
    shared = TensorImages(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]))
    probes = [
        ClassificationProbe("colour", shared, ["red", "blue"], ["a photo of a {} object."]),
        ClassificationProbe("other", shared, ["x", "y", "z"], ["{}"], targets=torch.tensor([2, 2, 1, 0])),
        RetrievalProbe("heldout", shared, ["a", "b", "c", "d", "e"], torch.tensor([0, 1, 2, 3, 3])),
    ]
    evaluator = Evaluator(stages(2), probes, tokenizer, torch.device("cpu"), batch_size=3)
    encoded = []
    original = evaluator.encode_images
    monkeypatch.setattr(evaluator, "encode_images", lambda m, d: encoded.append(d) or original(m, d))
    metrics = evaluator(model, completed_stages=0)
    assert len(encoded) == 3  # one per stage test set, and one for the three probes that share their images
    assert {
        "task/T1/acc",
        "task/T2/acc",
        "zs/colour/acc",
        "zs/other/acc",
        "ret/heldout/i2t_r1",
        "ret/heldout/t2i_r10",
    } <= set(metrics)
    assert all(0.0 <= value <= 100.0 for value in metrics.values())
    assert not model.training


def test_unknown_task_head_is_rejected():
    with pytest.raises(ValueError, match="eval.task_head='nope'"):
        Evaluator([], [], None, torch.device("cpu"), task_head="nope")


def test_balanced_accuracy_weights_every_class_equally():
    from clipcl_runner.evaluation import balanced_accuracy

    targets = torch.tensor([0, 0, 0, 1])  # class 0: 2 of 3 right, class 1: 1 of 1 right
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert accuracy(logits, targets) == pytest.approx(75.0)
    assert balanced_accuracy(logits, targets) == pytest.approx((2 / 3 + 1) / 2 * 100)


def test_zero_shot_head_equals_open_clips_classifier_builder(model_and_tokenizer):
    from open_clip import build_zero_shot_classifier

    model, tokenizer = model_and_tokenizer
    names, templates = ["red star", "blue hexagon", "cat"], ["a photo of a {}.", "a {} thing", "{}"]
    evaluator = Evaluator([], [], tokenizer, torch.device("cpu"), batch_size=4)  # chunks split a class's prompts
    with torch.no_grad():
        reference = build_zero_shot_classifier(model, tokenizer, names, templates, device="cpu")
        torch.testing.assert_close(evaluator.head(model, names, templates), reference, rtol=1e-5, atol=1e-6)


def test_eval_precision_fp32_evaluates_outside_the_trainers_autocast(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    cpu = torch.device("cpu")
    reference = Evaluator(stages(2), [], tokenizer, cpu, "fp32")(model, 1)
    fp32 = Evaluator(stages(2), [], tokenizer, cpu, "bf16", eval_precision="fp32")
    auto = Evaluator(stages(2), [], tokenizer, cpu, "bf16", eval_precision="auto")
    assert (fp32.precision, auto.precision) == ("fp32", "bf16")
    assert fp32(model, 1) == reference
    features, _ = fp32.encode_images(model, stages(1)[0].test)
    assert features.dtype == torch.float32
    with pytest.raises(ValueError, match="eval.precision"):
        Evaluator(stages(1), [], tokenizer, cpu, "bf16", eval_precision="bf16")


def test_retrieval_ties_setting_reaches_the_recall(model_and_tokenizer):
    """Four copies of one caption, one per image: every image ties over its four candidate captions.
    Counting ties in the query's favour gives i2t R@1 = 100; ranking them as CL-CLIP's argsort does
    puts exactly one image's own caption first (25)."""
    model, tokenizer = model_and_tokenizer
    images = TensorImages(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))
    probe = RetrievalProbe("tied", images, ["a red circle"] * 4, torch.arange(4))
    cpu = torch.device("cpu")
    official = Evaluator([], [probe], tokenizer, cpu, retrieval_ties="official")(model, 0)
    optimistic = Evaluator([], [probe], tokenizer, cpu, retrieval_ties="optimistic")(model, 0)
    assert optimistic["ret/tied/i2t_r1"] == 100.0 and official["ret/tied/i2t_r1"] == 25.0
