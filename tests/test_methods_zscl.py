"""ZSCL's benchmark methods (iCaRL, WiSE-FT, ZSCL, LwF-VR, joint) on a tiny random-init open_clip model."""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_config, tiny_run
from hydra.utils import instantiate

from clipcl_runner.data.errors import DatasetMissing
from clipcl_runner.data.reference import ReferenceSet, coco_reference, synthetic_reference
from clipcl_runner.data.stages import Stage, TensorImages
from clipcl_runner.methods.icarl import ICaRL, class_quotas, herding
from clipcl_runner.methods.joint import Joint
from clipcl_runner.methods.lwf_vr import LwFVR
from clipcl_runner.methods.weights import RunningAverage, interpolate_, trainable_snapshot
from clipcl_runner.methods.wise_ft import WiSEFT
from clipcl_runner.methods.zscl import ZSCL
from clipcl_runner.models import tower_of
from clipcl_runner.trainer import StageTraining, TrainSettings

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = torch.tensor([0, 1, 0, 1])
SETTINGS = TrainSettings(batch_size=4, progress=False)
ADAM = functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.0)


def train_stage(run, method, parameters, after_step=None) -> StageTraining:
    """What the stage loop does between begin_stage and end_stage."""
    run.train_stage = method.training_stage(run)
    training = StageTraining(run, method, parameters, ADAM, None, SETTINGS, seed=run.stage_index)
    training.run(after_step)
    return training


def towers_with_gradient(model) -> set[str]:
    return {tower_of(n) for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def perturb(model, scale: float = 0.05) -> None:
    with torch.no_grad():
        for param in model.parameters():
            param.add_(scale * torch.randn_like(param))


def tiny_reference(images: int = 12) -> ReferenceSet:
    pixels = torch.randn(images, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    sentences = ["a red star.", "a blue circle on the left", "a small green square", "a photo of a ring.", "a heart"]
    return ReferenceSet(TensorImages(pixels, torch.arange(images)), sentences)


# --- iCaRL -----------------------------------------------------------------------------------------
def class_counts(method: ICaRL) -> dict[tuple[int, int], int]:
    return {key: len(pairs) for key, pairs in sorted(method.memory.items())}


def test_class_quotas_share_the_budget_evenly_and_never_exceed_a_class():
    assert class_quotas(10, [4, 4, 4, 4]) == [3, 3, 2, 2]
    assert class_quotas(10, [1, 10, 10]) == [1, 5, 4]  # what the small class cannot use goes to the others
    assert class_quotas(10, [2, 3]) == [2, 3]
    assert class_quotas(0, [5, 5]) == [0, 0]


def test_icarl_keeps_exactly_its_memory_budget_across_stages():
    run = tiny_run(stages=3)  # 3 stages x 2 classes x 4 images per class
    method = ICaRL("icarl", memory_size=10)
    method.setup(run)
    history = []
    for index, expected in enumerate([8, 10, 10]):  # min(budget, images seen)
        run.stage_index = index
        method.begin_stage(run)
        run.train_stage = method.training_stage(run)
        method.end_stage(run)
        counts = class_counts(method)
        assert len(counts) == 2 * (index + 1) and sum(counts.values()) == expected
        assert max(counts.values()) - min(counts.values()) <= 1  # balanced
        history.append({key: list(pairs) for key, pairs in method.memory.items()})
    assert list(class_counts(method).values()) == [2, 2, 2, 2, 1, 1]
    for before, after in zip(history, history[1:]):  # old classes shrink by dropping their herding tail
        for key, pairs in before.items():
            assert after[key] == pairs[: len(after[key])] and len(after[key]) <= len(pairs)
    assert len(history[1][(0, 0)]) == 3 and len(history[2][(0, 0)]) == 2


def test_herding_first_pick_is_closest_to_the_class_mean():
    features = torch.nn.functional.normalize(torch.randn(20, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    order = herding(features, 5)
    assert len(set(order)) == 5
    assert order[0] == int((features - features.mean(0)).norm(dim=1).argmin())
    assert herding(features, 50) and len(herding(features, 50)) == 20  # never more than the class has

    run = tiny_run(stages=1)
    method = ICaRL("icarl", memory_size=4)
    method.setup(run)
    method.begin_stage(run)
    method.end_stage(run)
    run.model.eval()
    with torch.no_grad():
        all_features = run.model.encode_image(run.stage.train.images, normalize=True)
    for label in (0, 1):
        positions = (run.stage.train.labels == label).nonzero().flatten()
        class_features = all_features[positions]
        closest = int(positions[(class_features - class_features.mean(0)).norm(dim=1).argmin()])
        assert method.memory[(0, label)][0] == (0, closest)


def test_icarl_memory_survives_state_dict_and_builds_the_seen_class_replay_stage(tmp_path):
    run = tiny_run(stages=3)
    method = ICaRL("icarl", memory_size=6)
    method.setup(run)
    for index in range(2):
        run.stage_index = index
        method.begin_stage(run)
        method.end_stage(run)
    path = tmp_path / "state.pt"
    torch.save(method.state_dict(), path)
    restored = ICaRL("icarl", memory_size=6)
    restored.load_state_dict(torch.load(path, weights_only=False))
    assert restored.memory == method.memory and sum(map(len, restored.memory.values())) == 6

    run.stage_index = 2
    restored.begin_stage(run)
    stage = restored.training_stage(run)
    assert stage.classnames == ["shape0a", "shape0b", "shape1a", "shape1b", "shape2a", "shape2b"]
    labels = [int(stage.train[i][1]) for i in range(len(stage.train))]
    assert len(labels) == 6 + 8  # quotas [2, 2, 1, 1]: 4 exemplars of stage 0, 2 of stage 1, then stage 2
    assert labels[:4] == [0, 0, 1, 1] and labels[4:6] == [2, 3] and labels[6:] == [4, 5] * 4
    pairs = [pair for key in sorted(restored.memory) for pair in restored.memory[key]]
    for position, (stage_index, dataset_index) in enumerate(pairs):
        image, label = stage.train[position]
        original_image, original_label = run.stages[stage_index].train[dataset_index]
        assert torch.equal(image, original_image) and label == original_label + 2 * stage_index


def test_icarl_loss_distils_the_old_classes_from_the_stage_start_model():
    run = tiny_run(stages=2)
    method = ICaRL("icarl", memory_size=4)
    parameters = method.setup(run)
    method.begin_stage(run)
    run.train_stage = method.training_stage(run)
    loss, terms = method.training_loss(run, torch.randn(4, 3, 32, 32), LABELS)
    assert set(terms) == {"ce"} and torch.isfinite(loss)  # nothing old at the first stage
    method.end_stage(run)
    run.stage_index = 1
    method.begin_stage(run)
    run.train_stage = method.training_stage(run)
    run.model.eval()  # same BN statistics as the teacher
    loss, terms = method.training_loss(run, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert terms["distill"].item() == pytest.approx(0.0, abs=1e-5) and torch.isfinite(loss)
    training = train_stage(run, method, parameters)
    assert training.total == 3  # (4 exemplars + 8 images) / batch 4


# --- WiSE-FT ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.0, 1.0, 0.5])
def test_wise_ft_interpolates_between_zero_shot_and_fine_tuned(ratio):
    run = tiny_run("whole")
    zero_shot = {name: value.clone() for name, value in run.model.state_dict().items()}
    method = WiSEFT("wise_ft", ratio=ratio)
    parameters = method.setup(run)
    method.begin_stage(run)
    train_stage(run, method, parameters)
    fine_tuned = {name: value.clone() for name, value in run.model.state_dict().items()}
    evaluated = method.model_for_evaluation(run).state_dict()
    method.end_stage(run)
    params = dict(run.model.named_parameters())
    moved = 0
    for name, value in run.model.state_dict().items():
        assert torch.equal(evaluated[name], value), name  # mid-stage evaluation sees the merged model
        if name not in params:  # buffers (BN statistics): the fine-tuned model's
            assert torch.equal(value, fine_tuned[name]), name
        elif ratio == 0.0:
            assert torch.equal(value, zero_shot[name]), name
        elif ratio == 1.0:
            assert torch.equal(value, fine_tuned[name]), name
        else:
            assert torch.allclose(value, 0.5 * zero_shot[name] + 0.5 * fine_tuned[name], atol=1e-7), name
        moved += not torch.equal(fine_tuned[name], zero_shot[name])
    assert moved > 0  # training did move the weights


def test_wise_ft_anchor_survives_a_checkpoint():
    run = tiny_run("image")
    method = WiSEFT("wise_ft", ratio=0.0)
    method.setup(run)
    anchor = method.state_dict()["zero_shot"]
    assert anchor and all(tower_of(name) == "image" for name in anchor)
    fresh = tiny_run("image")
    perturb(fresh.model)  # a resumed run: setup sees another model, the checkpoint restores the anchor
    other = WiSEFT("wise_ft", ratio=0.0)
    other.setup(fresh)
    other.load_state_dict(method.state_dict())
    other.end_stage(fresh)
    for name, value in anchor.items():
        assert torch.equal(dict(fresh.model.named_parameters())[name], value)


def test_running_average_and_interpolation_helpers():
    run = tiny_run("text")
    first = trainable_snapshot(run.model)
    average = RunningAverage(first)
    samples = [first]
    for _ in range(3):
        perturb(run.model)
        samples.append(trainable_snapshot(run.model))
        average.update(run.model)
    assert average.count == 4
    for name, value in average.values_like(run.model).items():
        assert torch.allclose(value, torch.stack([s[name] for s in samples]).mean(0), atol=1e-6)
    interpolate_(run.model, first, 0.0)
    assert all(torch.equal(p, first[n]) for n, p in run.model.named_parameters() if n in first)


# --- ZSCL ------------------------------------------------------------------------------------------
def zscl_on_one_stage(iterations: int, we_every: int):
    """A run of one stage of ``iterations`` steps and a ZSCL with its stage begun."""
    run = tiny_run("whole")
    data = run.stages[0].train
    run.stages = [Stage("T1", ["shape0a", "shape0b"], data, data, iterations=iterations)]
    method = ZSCL("zscl", reference=tiny_reference(), ref_batch_size=4, we_every=we_every)
    parameters = method.setup(run)
    method.begin_stage(run)
    return run, method, parameters


def test_zscl_weight_ensemble_is_the_running_average_it_claims():
    run, method, parameters = zscl_on_one_stage(iterations=6, we_every=2)
    snapshots = [trainable_snapshot(run.model)]  # θ_start counts as the first sample

    def after_step(training):
        if training.step % 2 == 0:
            snapshots.append(trainable_snapshot(run.model))

    train_stage(run, method, parameters, after_step)
    last = trainable_snapshot(run.model)
    assert len(snapshots) == 4 and method.step == 6  # start, after steps 2, 4, 6
    method.end_stage(run)
    assert method.average.count == 4
    params = dict(run.model.named_parameters())
    for name in snapshots[0]:
        expected = torch.stack([s[name] for s in snapshots]).mean(0)
        assert torch.allclose(params[name], expected, atol=1e-6), name
    assert any(not torch.allclose(params[name], last[name]) for name in last)  # not simply the last weights


def test_zscl_weight_ensemble_counts_the_last_weights_of_a_short_stage():
    run, method, parameters = zscl_on_one_stage(iterations=3, we_every=100)
    start = trainable_snapshot(run.model)
    train_stage(run, method, parameters, None)
    last = trainable_snapshot(run.model)
    method.end_stage(run)
    assert method.average.count == 2  # the start and the last weights: not the start alone
    params = dict(run.model.named_parameters())
    for name in start:
        assert torch.allclose(params[name], (start[name] + last[name]) / 2, atol=1e-6), name


def test_zscl_weight_ensemble_state_resumes_mid_stage():
    run = tiny_run("image")
    method = ZSCL("zscl", reference=tiny_reference(), ref_batch_size=4, we_every=1)
    method.setup(run)
    method.begin_stage(run)
    for step in range(1, 4):
        method.training_loss(run, torch.randn(4, 3, 32, 32), LABELS)
        perturb(run.model)  # the optimiser step
        method.after_step(run, step)
    state = method.state_dict()
    other = ZSCL("zscl", reference=tiny_reference(), ref_batch_size=4, we_every=1)
    other.setup(tiny_run("image"))
    other.begin_stage(run)  # the stage loop: begin_stage again, then the mid-stage state
    other.load_state_dict(state)
    assert other.step == 3 and other.average.count == method.average.count == 4  # θ_start + steps 1, 2, 3
    trained = {name: value.clone() for name, value in run.model.state_dict().items()}
    method.end_stage(run)
    merged = trainable_snapshot(run.model)
    run.model.load_state_dict(trained)  # the resumed run's model after the same steps
    other.end_stage(run)
    assert all(torch.equal(merged[name], value) for name, value in trainable_snapshot(run.model).items())


def test_zscl_teacher_stays_the_initial_model_across_stages():
    run = tiny_run("whole")
    initial = {name: value.clone() for name, value in run.model.state_dict().items()}
    method = ZSCL("zscl", reference=tiny_reference(), ref_batch_size=4, we_every=1)
    parameters = method.setup(run)
    for index in range(2):
        run.stage_index = index
        method.begin_stage(run)
        train_stage(run, method, parameters)
        method.end_stage(run)
        teacher = method.teacher.state_dict()
        assert all(torch.equal(teacher[name], value) for name, value in initial.items())
        assert any(not torch.equal(run.model.state_dict()[name], value) for name, value in initial.items())


@pytest.mark.parametrize(
    "part,text_features,towers",
    [
        ("whole", "teacher", {"image", "text"}),
        ("image", "teacher", {"image"}),
        ("whole", "student", {"image", "text"}),
    ],
)
def test_zscl_loss_is_finite_and_reaches_only_trainable_parameters(part, text_features, towers):
    run = tiny_run(part)
    method = ZSCL("zscl", reference=tiny_reference(), ref_batch_size=4, num_ref_texts=3, text_features=text_features)
    method.setup(run)
    method.begin_stage(run)
    perturb(run.model)
    loss, terms = method.training_loss(run, torch.randn(4, 3, 32, 32), LABELS)
    assert torch.isfinite(loss) and terms["zscl_image"] > 0 and terms["zscl_text"] > 0
    loss.backward()
    assert towers_with_gradient(run.model) == towers
    assert all(p.grad is None for p in run.model.parameters() if not p.requires_grad)
    assert all(p.grad is None for p in method.teacher.parameters())
    # the distillation alone: with the teacher's sentence embeddings only the image tower is distilled
    run.model.zero_grad(set_to_none=True)
    image_term, text_term = method.reference_distillation(run, method.reference_set.images.images[:4])
    (image_term + text_term).backward()
    expected = {"image"} | ({"text"} if text_features == "student" and part == "whole" else set())
    assert towers_with_gradient(run.model) == expected


def test_zscl_distillation_is_zero_for_the_initial_model_and_draws_texts_from_the_global_rng():
    run = tiny_run("whole")
    method = ZSCL("zscl", reference=tiny_reference(), ref_batch_size=4, num_ref_texts=2)
    method.setup(run)
    method.begin_stage(run)
    run.model.eval()
    images = method.reference_set.images.images[:4]
    torch.manual_seed(5)
    first = method.reference_distillation(run, images)
    assert all(term.item() == pytest.approx(0.0, abs=1e-5) for term in first)
    perturb(run.model)
    torch.manual_seed(5)
    again = method.reference_distillation(run, images)
    torch.manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(again, method.reference_distillation(run, images)))
    assert method.auxiliary_data(run)["reference"].batch_size == 4  # the images come from the trainer's stream


def test_reference_builders():
    clip = SimpleNamespace(image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.25, 0.25), preprocess_eval=None, model=None)
    reference = synthetic_reference(clip, num_images=6, captions_per_image=2, world_seed=0)
    assert reference.images.images.shape == (6, 3, 32, 32) and len(reference.sentences) == 12
    assert reference.images.images.dtype == torch.float32 and reference.images.images.min() < 0
    again = synthetic_reference(clip, num_images=6, captions_per_image=2, world_seed=0)
    assert torch.equal(again.images.images, reference.images.images) and again.sentences == reference.sentences
    with pytest.raises(DatasetMissing, match="coco"):
        coco_reference(clip, root="/nonexistent/coco")
    with pytest.raises(ValueError):
        ReferenceSet(reference.images, [])


# --- LwF-VR ----------------------------------------------------------------------------------------
def test_lwf_vr_texts_are_fixed_within_a_stage_and_redrawn_across_stages():
    run = tiny_run("whole")
    method = LwFVR("lwf_vr", num_texts=8, token_length=10)
    method.setup(run)
    method.begin_stage(run)
    tokens, texts = method.tokens.clone(), method.teacher_texts.clone()
    assert tokens.shape == (8, run.tokenizer.context_length) and (tokens.argmax(dim=1) == 11).all()
    for _ in range(2):
        loss, terms = method.training_loss(run, torch.randn(4, 3, 32, 32), LABELS)
        assert torch.isfinite(loss) and set(terms) == {"ce", "vr_image", "vr_text"}
    assert torch.equal(method.tokens, tokens) and torch.equal(method.teacher_texts, texts)
    method.end_stage(run)
    run.stage_index = 1
    method.begin_stage(run)
    assert not torch.equal(method.tokens, tokens)


def test_lwf_vr_distils_only_the_image_tower_and_is_zero_at_the_first_step():
    run = tiny_run("whole")
    method = LwFVR("lwf_vr", num_texts=8)
    method.setup(run)
    method.begin_stage(run)
    run.model.eval()  # same BN statistics as the teacher
    _, terms = method.training_loss(run, torch.randn(4, 3, 32, 32), LABELS)
    assert terms["vr_image"].item() == pytest.approx(0.0, abs=1e-5)
    assert terms["vr_text"].item() == pytest.approx(0.0, abs=1e-5)
    perturb(run.model)
    image_term, text_term = method.vocabulary_distillation(run, torch.randn(4, 3, 32, 32))
    assert image_term.item() > 0 and text_term.item() > 0
    (image_term + text_term).backward()
    assert towers_with_gradient(run.model) == {"image"}
    assert all(p.grad is None for p in method.teacher.parameters())


# --- joint -----------------------------------------------------------------------------------------
def test_joint_trains_on_everything_at_the_first_stage_and_nothing_after():
    run = tiny_run(stages=3)
    method = Joint("joint")
    method.setup(run)
    stage = method.training_stage(run)
    assert stage.classnames == [f"shape{i}{c}" for i in range(3) for c in "ab"]
    assert len(stage.train) == 24 and stage.epochs == 1
    assert [int(stage.train[i][1]) for i in range(0, 24, 8)] == [0, 2, 4]
    assert sorted({int(stage.train[i][1]) for i in range(24)}) == list(range(6))
    for index in (1, 2):
        run.stage_index = index
        assert method.training_stage(run) is None
    data = run.stages[0].train
    run.stages = [Stage(f"S{i}", [f"c{i}"], data, data, iterations=n) for i, n in enumerate([3, 4])]
    run.stage_index = 0
    merged = method.training_stage(run)
    assert merged.iterations == 7 and merged.epochs is None


# --- configs ---------------------------------------------------------------------------------------
def test_zscl_config_defers_its_reference_builder_to_setup():
    """Hydra builds the reference builder as a partial (no Hydra call inside the method); setup calls it."""
    from clipcl_runner.data import reference as references

    cfg = compose_config("method=zscl")
    method = instantiate(cfg.method, _convert_="all")
    assert method.ref_batch_size == cfg.trainer.batch_size
    assert method.reference.func is references.synthetic_reference
    coco = instantiate(compose_config("method=zscl", "reference=coco").method, _convert_="all")
    assert coco.reference.func is references.coco_reference and coco.reference.keywords["splits"] == ["train"]


def test_zscl_builds_its_reference_set_from_the_config():
    cfg = compose_config("method=zscl", "reference.num_images=8", "method.ref_batch_size=4")
    method = instantiate(cfg.method, _convert_="all")
    run = tiny_run("whole")
    run.clip = SimpleNamespace(image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.25, 0.25), model=None)
    method.setup(run)
    assert len(method.reference_set.images) == 8 and method.reference_texts.shape == (8, 128)
    method.begin_stage(run)
    loss, _ = method.training_loss(run, torch.randn(4, 3, 32, 32), LABELS)
    assert math.isfinite(loss.item())
