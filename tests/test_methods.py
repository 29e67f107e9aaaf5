"""The method contract on a tiny random-init open_clip model (no weights, no pretraining)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_run

from clipcl_runner.data.stages import Stage, TensorImages
from clipcl_runner.methods.base import Method
from clipcl_runner.methods.distill import distillation_kl, frozen_copy, random_token_texts
from clipcl_runner.methods.finetune import Finetune
from clipcl_runner.methods.lwf import LwF
from clipcl_runner.methods.vr_lwf import VRLwF, read_vocabulary
from clipcl_runner.methods.zeroshot import ZeroShot
from clipcl_runner.models import register_model_configs, select_trainable, tower_of


def grads_by_tower(model) -> dict[str, bool]:
    seen = {"image": False, "text": False, "logit": False}
    for name, param in model.named_parameters():
        if param.grad is not None and param.grad.abs().sum() > 0:
            seen[tower_of(name)] = True
    return seen


def test_frozen_copy_shares_no_storage_and_has_no_gradients():
    run = tiny_run()
    teacher = frozen_copy(run.model)
    student_ptrs = {p.data_ptr() for p in run.model.parameters()}
    assert not student_ptrs & {p.data_ptr() for p in teacher.parameters()}
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        next(run.model.parameters()).add_(1.0)  # training the student must not move the teacher
    assert not torch.equal(next(run.model.parameters()), next(teacher.parameters()))


@pytest.mark.parametrize("part,expected", [("whole", {"image", "text"}), ("image", {"image"}), ("text", {"text"})])
def test_part_selects_the_trained_towers(part, expected):
    run = tiny_run(part)
    trainable = select_trainable(run.model, part, train_logit_scale=False)
    names = {name for name, p in run.model.named_parameters() if p.requires_grad}
    assert {tower_of(name) for name in names} == expected
    assert len(trainable) == len(names) and not run.model.logit_scale.requires_grad
    select_trainable(run.model, part, train_logit_scale=True)
    assert run.model.logit_scale.requires_grad


def test_bad_part_is_rejected():
    with pytest.raises(ValueError, match="part='both'"):
        select_trainable(tiny_run().model, "both", False)


def test_distillation_kl_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.randn(4, 7)
    assert distillation_kl(logits, logits, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_kl(logits, logits.flip(1), 2.0).item() > 0


def test_random_token_texts_have_the_papers_form():
    tokens = random_token_texts(
        100, 8, sot=49406, eot=49407, context_length=32, generator=torch.Generator().manual_seed(0)
    )
    assert tokens.shape == (100, 32)
    assert (tokens[:, 0] == 49406).all() and (tokens[:, 9] == 49407).all() and (tokens[:, 10:] == 0).all()
    assert (tokens[:, 1:9] < 49406).all()
    assert tokens[:, 1:9].unique().numel() > 500  # really random, not one repeated text
    assert (tokens.argmax(dim=1) == 9).all()  # open_clip pools the text at the EOT (the largest id)


def test_finetune_trains_only_through_the_current_stage_classes():
    run = tiny_run("whole")
    method = Finetune("finetune")
    method.setup(run)
    run.stage_index = 1
    method.begin_stage(run)
    loss, terms = method.training_loss(run, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert set(terms) == {"ce"} and torch.isfinite(loss)
    assert grads_by_tower(run.model) == {"image": True, "text": True, "logit": False}


@pytest.mark.parametrize("method", [LwF("lwf"), VRLwF("vr_lwf", num_texts=16)])
def test_distillation_is_zero_when_student_equals_teacher(method):
    run = tiny_run("whole")
    method.setup(run)
    method.begin_stage(run)
    run.model.eval()  # same BN statistics as the teacher: the distributions must match exactly
    _, terms = method.training_loss(run, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]))
    for key in set(terms) - {"ce"}:
        assert terms[key].item() == pytest.approx(0.0, abs=1e-5), key


def test_vr_lwf_gives_gradient_to_both_student_towers_and_none_to_the_teacher():
    run = tiny_run("whole")
    method = VRLwF("vr_lwf", num_texts=16, include_lwf=False)
    method.setup(run)
    method.begin_stage(run)
    with torch.no_grad():  # move the student away from the teacher so the distillation term is non-zero
        for param in run.model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    images = torch.randn(4, 3, 32, 32)
    vocabulary_term = method.vocabulary_kl(  # the distillation term alone, without the CE
        run, run.model.encode_image(images, normalize=True), method.teacher_image_features(images)
    )
    assert vocabulary_term.item() > 0
    vocabulary_term.backward()
    assert grads_by_tower(run.model)["image"] and grads_by_tower(run.model)["text"]
    assert all(p.grad is None for p in method.teacher.parameters())


def test_vr_lwf_vocabulary_file_replaces_random_tokens(tmp_path):
    vocabulary = tmp_path / "vocab.txt"
    vocabulary.write_text("a photo of a red star.\n\na blue circle\nan image of a ring\n")
    assert read_vocabulary(vocabulary) == ["a photo of a red star.", "a blue circle", "an image of a ring"]
    run = tiny_run("image")
    method = VRLwF("vr_lwf", num_texts=2, vocabulary=str(vocabulary))
    method.setup(run)
    method.begin_stage(run)
    tokens, teacher_texts = method.draw_texts(run)
    assert tokens.shape == (2, 32) and teacher_texts.shape == (2, 128)
    assert method.teacher_vocabulary.shape == (3, 128)


def test_lwf_distils_over_all_seen_classes_in_later_stages():
    run = tiny_run()
    method = LwF("lwf", distill_classes="seen")
    method.setup(run)
    run.stage_index = 1
    method.begin_stage(run)
    assert method.distilled_names == ["shape0a", "shape0b", "shape1a", "shape1b"]
    current = LwF("lwf", distill_classes="current")
    current.begin_stage(run)
    assert current.distilled_names == ["shape1a", "shape1b"]


def test_zeroshot_trains_nothing():
    run = tiny_run()
    method = ZeroShot("zeroshot")
    assert method.setup(run) == [] and not method.trains
    assert not any(p.requires_grad for p in run.model.parameters())


def test_the_base_method_is_plain_fine_tuning():
    assert issubclass(Finetune, Method) and Finetune.training_loss is Method.training_loss


def test_cross_entropy_sees_only_the_current_sessions_classes():
    """MST: the other sessions' class prompts get exactly zero gradient (they are not in the softmax)."""
    register_model_configs()
    run = tiny_run("text")
    images = torch.randn(4, 3, 32, 32)
    data = TensorImages(images, torch.tensor([0, 1, 0, 1]))
    run.stages = [Stage("S1", ["zebra", "giraffe"], data, data), Stage("S2", ["airplane", "bicycle"], data, data)]
    run.stage_index = 1
    method = Finetune("finetune")
    method.setup(run)
    method.begin_stage(run)
    loss, _ = method.training_loss(run, images, torch.tensor([0, 1, 0, 1]))
    loss.backward()
    grad = run.model.token_embedding.weight.grad
    old_tokens = set(run.tokenizer(["zebra", "giraffe"])[:, 1:3].flatten().tolist()) - {0, 49407}
    new_tokens = set(run.tokenizer(["airplane", "bicycle"])[:, 1:3].flatten().tolist()) - {0, 49407}
    assert old_tokens and not old_tokens & new_tokens
    assert all(grad[token].abs().sum() == 0 for token in old_tokens)
    assert all(grad[token].abs().sum() > 0 for token in new_tokens)


@pytest.mark.parametrize("method_name", ["lwf", "vr_lwf"])
def test_lwf_encodes_the_student_prompts_once_with_the_same_loss_and_gradients(method_name):
    from clipcl_runner.methods.lwf import LwF
    from clipcl_runner.methods.vr_lwf import VRLwF

    run = tiny_run(stages=2)
    method = LwF() if method_name == "lwf" else VRLwF(num_texts=4)
    parameters = method.setup(run)
    run.stage_index = 1
    method.begin_stage(run)
    run.train_stage = method.training_stage(run)
    assert method.ce_rows.tolist() == [2, 3]  # the current classes among the seen ones
    images, labels = run.stage.train.images[:6], run.stage.train.labels[:6]
    with torch.no_grad():
        for p in run.model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # student != teacher, so the LwF term is not zero

    def loss_and_grads():
        torch.manual_seed(1)  # the same random texts for VR-LwF
        for p in parameters:
            p.grad = None
        loss, terms = method.training_loss(run, images, labels)
        loss.backward()
        return loss.detach(), terms, [p.grad.clone() for p in parameters if p.grad is not None]

    shared_loss, shared_terms, shared_grads = loss_and_grads()
    method.ce_rows = None  # the two-pass path
    separate_loss, separate_terms, separate_grads = loss_and_grads()
    assert shared_terms["lwf"] > 0
    torch.testing.assert_close(shared_loss, separate_loss)
    for key in shared_terms:
        torch.testing.assert_close(shared_terms[key], separate_terms[key])
    for shared, separate in zip(shared_grads, separate_grads):
        torch.testing.assert_close(shared, separate, rtol=1e-4, atol=1e-5)  # summation order only
