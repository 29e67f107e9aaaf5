"""The ZSCL presets against ZSCL's official code (github Thunderbeee/ZSCL @ b96e714).

Each test pins one row of docs/fidelity.md (ZSCL section). Expected numbers are derived by hand in the
comments, or from the official formula restated in a few lines here.
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config, tiny_run
from hydra.utils import instantiate
from PIL import Image
from test_data_zscl import write_caltech101, write_cifar100, write_eurosat, write_mnist, write_sun397
from torch import nn
from torchvision import transforms as T

from clipcl_runner import metrics as M
from clipcl_runner.data.errors import DatasetMissing
from clipcl_runner.data.reference import ReferenceSet, imagenet_cc_reference, read_cc_captions
from clipcl_runner.data.sequences import cil_sequence, mtil_sequence
from clipcl_runner.data.stages import Stage, TensorImages, with_transform
from clipcl_runner.data.vision_datasets import load_vision_dataset
from clipcl_runner.methods.distill import soft_target_distillation
from clipcl_runner.methods.icarl import ICaRL, zscl_stage_quotas
from clipcl_runner.methods.lwf_vr import LwFVR
from clipcl_runner.methods.weights import trainable_snapshot
from clipcl_runner.methods.wise_ft import WiSEFT
from clipcl_runner.methods.zscl import ZSCL, we_due
from clipcl_runner.methods.zscl_lwf import ZSCLLwF
from clipcl_runner.trainer import StageTraining, TrainSettings
from clipcl_runner.zscl_loop import batches_per_epoch, zscl_cosine

pytestmark = pytest.mark.usefixtures("one_thread")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
LABELS = torch.tensor([0, 1, 0, 1])


def fake_clip():
    eval_tf = T.Compose([T.Resize(16), T.CenterCrop(16), T.ToTensor(), T.Normalize(MEAN, STD)])
    return SimpleNamespace(
        name="fake", model=None, preprocess_eval=eval_tf, preprocess_train=eval_tf, image_mean=MEAN, image_std=STD
    )


def tiny_reference(images: int = 12) -> ReferenceSet:
    pixels = torch.randn(images, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return ReferenceSet(TensorImages(pixels, torch.arange(images)), ["a red star.", "a blue circle", "a heart"])


def perturb(model, scale: float = 0.05) -> None:
    """Move the trainable parameters, as some optimiser steps would (the frozen logit scale stays)."""
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(scale * torch.randn_like(param))


# --------------------------------------------------------------------------- 13. WE timing
def scalar_run(value: float = 0.0):
    """A 'model' with one trainable scalar: the weight ensemble's mean is plain arithmetic on it."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return SimpleNamespace(model=model)


def ensemble_after(steps: int, every: int, timing: str) -> tuple[float, int]:
    """θ after step s is s (θ_start = 0): the ensemble's value and its sample count at the stage end."""
    run = scalar_run()
    method = ZSCL(reference=tiny_reference(), we_every=every, we_timing=timing)
    method.begin_stage(run)
    for step in range(1, steps + 1):
        with torch.no_grad():
            run.model.weight.fill_(float(step))
        method.after_step(run, step)
    count = method.average.count
    method.end_stage(run)
    return run.model.weight.item(), count


def test_we_official_timing_samples_after_steps_1_1pf_and_the_closing_step():
    # ZSCL's loop: 1000 iterations + 1 closing step, averaging at 0-based iteration % 100 == 0, i.e. after
    # steps 1, 101, ..., 1001: 11 updates + θ_start = 12 samples; mean = (0 + Σ_{k=0..10} (1 + 100k)) / 12
    # = (11 + 100·55) / 12 = 5511 / 12
    value, count = ensemble_after(1001, 100, "official")
    assert count == 12 and value == pytest.approx(5511 / 12)
    assert [s for s in range(1, 1002) if we_due(s, 100, "official")] == [1 + 100 * k for k in range(11)]
    # multiples (the clean timing): after steps 100, ..., 1000 and the last: 10 + θ_start = 11 samples,
    # mean = 100·55 / 11 = 500
    value, count = ensemble_after(1000, 100, "multiples")
    assert count == 11 and value == pytest.approx(500.0)


def test_mid_stage_evaluation_sees_the_ensemble_not_the_trained_weights():
    # ZSCL's finetune.py:183-184 evaluates we_model. After steps 1..3 with θ_s = s and official f = 2:
    # samples θ_start = 0, θ_1 = 1, θ_3 = 3 -> the evaluated model has 4/3; the trained one stays at 3
    run = scalar_run()
    method = ZSCL(reference=tiny_reference(), we_every=2, we_timing="official")
    method.begin_stage(run)
    for step in (1, 2, 3):
        with torch.no_grad():
            run.model.weight.fill_(float(step))
        method.after_step(run, step)
    assert method.model_for_evaluation(run).weight.item() == pytest.approx(4 / 3)
    assert run.model.weight.item() == 3.0


def test_we_official_timing_in_cil_leaves_out_unsampled_final_steps():
    # CIFAR-100 10 steps: 5000 images per task, ceil(5000/64) = 79 batches + 1 = 80 steps; f = 10:
    # samples after steps 1, 11, ..., 71 (8) + θ_start = 9; the final weights (step 80) are not in it,
    # as in ZSCL's CIL code. Mean = (0 + Σ_{k=0..7} (1 + 10k)) / 9 = (8 + 280) / 9 = 32
    value, count = ensemble_after(80, 10, "official")
    assert count == 9 and value == pytest.approx(32.0)
    # multiples: 10, ..., 80 (8) + θ_start -> mean = 10·36 / 9 = 40
    value, count = ensemble_after(80, 10, "multiples")
    assert count == 9 and value == pytest.approx(40.0)


def test_the_trainer_calls_after_step_once_per_optimiser_step_with_its_1_based_count():
    run = tiny_run("whole")
    data = run.stages[0].train
    run.stages = [Stage("T1", ["shape0a", "shape0b"], data, data, iterations=7)]
    method = ZSCL(reference=tiny_reference(), ref_batch_size=4, we_every=3, we_timing="official")
    parameters = method.setup(run)
    method.begin_stage(run)
    seen, snapshots = [], [trainable_snapshot(run.model)]
    original = method.after_step

    def recording(run_, step):
        seen.append(step)
        if we_due(step, 3, "official"):
            snapshots.append(trainable_snapshot(run_.model))
        original(run_, step)

    method.after_step = recording
    run.train_stage = method.training_stage(run)
    adam = functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.0)
    StageTraining(run, method, parameters, adam, None, TrainSettings(batch_size=4, progress=False), seed=0).run()
    assert seen == list(range(1, 8))
    assert len(snapshots) == 4 and method.average.count == 4  # θ_start, steps 1, 4, 7
    method.end_stage(run)
    params = dict(run.model.named_parameters())
    for name in snapshots[0]:
        assert torch.allclose(params[name], torch.stack([s[name] for s in snapshots]).mean(0), atol=1e-6), name


# --------------------------------------------------------------------------- the closing lr-0 step
def official_cosine_lr(base: float, warmup: int, steps: int, step: int) -> float:
    """ZSCL's utils.cosine_lr at ``step`` (restated)."""
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * (1 + np.cos(np.pi * (step - warmup) / (steps - warmup))) * base


def test_zscl_cosine_is_the_official_schedule_with_its_closing_step_at_lr_0():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-5)
    schedule = zscl_cosine(optimizer, total_steps=1001, warmup_steps=100, extra_steps=1)
    lrs = []
    for _ in range(1001):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    expected = [official_cosine_lr(1e-5, 100, 1000, k) for k in range(1001)]
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-18)
    assert lrs[-1] == 0.0 and lrs[0] == pytest.approx(1e-7)
    with pytest.raises(ValueError, match="extra_steps"):
        zscl_cosine(optimizer, total_steps=1, extra_steps=1)


def test_an_adamw_step_at_lr_0_leaves_the_parameters_unchanged():
    param = nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = torch.optim.AdamW([param], lr=0.0, weight_decay=0.0)
    param.grad = torch.tensor([0.3, 0.7])
    optimizer.step()
    assert torch.equal(param.detach(), torch.tensor([1.0, -2.0]))


# --------------------------------------------------------------------------- 14. CIL
@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cil")
    write_cifar100(root, train_per_class=10)  # class names class_00 .. class_99
    return root


def test_steps_per_task_official_is_ceil_plus_one_ours_floor():
    # 50-step CIFAR-100: 2 classes x 500 images = 1000 per task; 1000 = 15·64 + 40
    assert batches_per_epoch(1000, 64, "official") + 1 == 17  # 16 batches (the last of 40) + closing step
    assert batches_per_epoch(1000, 64, "epochs") == 15
    # 10-step: 5000 = 78·64 + 8 -> 79 + 1 = 80 vs 78
    assert batches_per_epoch(5000, 64, "official") + 1 == 80 and batches_per_epoch(5000, 64, "epochs") == 78
    with pytest.raises(ValueError, match="steps_per_task"):
        batches_per_epoch(10, 4, "ceil")


def test_cil_sequence_counts_official_steps(cifar_root):
    # 2 classes x 10 fake images = 20 per task at batch 3: ceil(20/3) = 7, + 1 = 8; floor(20/3) = 6
    clip = fake_clip()
    official = cil_sequence(clip, cifar_root, increment=2, steps_per_task="official", batch_size=3, extra_steps=1)
    ours = cil_sequence(clip, cifar_root, increment=2, steps_per_task="epochs", batch_size=3)
    plain = cil_sequence(clip, cifar_root, increment=2)
    assert len(official) == 50 and {s.iterations for s in official} == {8}
    assert {s.iterations for s in ours} == {6} and {(s.iterations, s.epochs) for s in plain} == {(None, 1)}
    with pytest.raises(ValueError, match="batch_size"):
        cil_sequence(clip, cifar_root, steps_per_task="official")
    with pytest.raises(ValueError, match="extra_steps"):
        cil_sequence(clip, cifar_root, extra_steps=1)


def is_zscl_crop(transform, size: int = 16) -> bool:
    first = transform.transforms[0]
    return isinstance(first, T.RandomResizedCrop) and first.scale == (0.9, 1.0) and first.size == (size, size)


def test_cil_crop_transform_on_train_and_test_is_the_official_and_eval_the_clean(cifar_root):
    clip = fake_clip()
    official = cil_sequence(clip, cifar_root, train_transform="crop", test_transform="crop")[0]
    assert is_zscl_crop(official.train.transform) and is_zscl_crop(official.test.transform)
    assert official.train.transform.transforms[0].interpolation == T.InterpolationMode.BICUBIC
    clean = cil_sequence(clip, cifar_root)[0]
    assert clean.train.transform is clip.preprocess_eval and clean.test.transform is clip.preprocess_eval
    with pytest.raises(ValueError, match="test_transform"):
        cil_sequence(clip, cifar_root, test_transform="random")


def test_cil_keeps_cifar_underscores_when_asked(cifar_root):
    clip = fake_clip()
    raw = cil_sequence(clip, cifar_root, keep_underscores=True)[0]
    spaced = cil_sequence(clip, cifar_root)[0]
    assert raw.classnames[0] == "class_87" and spaced.classnames[0] == "class 87"  # the order starts with 87
    assert raw.train_templates[0].format(raw.classnames[0]) == "a bad photo of a class_87."
    assert load_vision_dataset("cifar100", cifar_root, raw_names=True).classnames[:2] == ["class_00", "class_01"]


def test_mtil_sequence_adds_the_closing_step(tmp_path):
    write_mnist(tmp_path)
    stages = mtil_sequence(fake_clip(), tmp_path, order=["mnist"], iterations=1000, extra_steps=1)
    assert stages[0].iterations == 1001
    with pytest.raises(ValueError, match="extra_steps"):
        mtil_sequence(fake_clip(), tmp_path, order=["mnist"], iterations=None, epochs=1, extra_steps=1)


# --------------------------------------------------------------------------- 12. reference set
def write_jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)


def test_imagenet_cc_reference_reads_imagenet_train_and_cc_captions(tmp_path):
    for c, wnid in enumerate(["n01440764", "n01443537"]):
        for k in range(3):
            write_jpeg(tmp_path / "imagenet" / "train" / wnid / f"{wnid}_{k}.JPEG", 10 * c + k)
    write_jpeg(tmp_path / "imagenet" / "train" / ".ipynb_checkpoints" / "x.JPEG", 99)  # never a class
    write_jpeg(tmp_path / "imagenet" / "train" / "n01440764" / "._n01440764_0.JPEG", 98)  # never an image
    tsv = tmp_path / "cc" / "Validation_GCC-1.1.0-Validation.tsv"
    tsv.parent.mkdir()
    tsv.write_text("a dog on a beach\thttp://x/1.jpg\nthe city at night\thttp://x/2.jpg\n\n")
    clip = fake_clip()
    reference = imagenet_cc_reference(clip, tmp_path, tsv)
    assert len(reference.images) == 6 and reference.sentences == ["a dog on a beach", "the city at night"]
    assert reference.images.transform is clip.preprocess_eval
    image, _ = reference.images[0]
    assert image.shape == (3, 16, 16)
    four = imagenet_cc_reference(clip, tmp_path, tsv, max_images=4).images  # 6 images: indices 0, 1, 3, 4
    assert [Path(p).name for p in four.paths] == [
        "n01440764_0.JPEG",
        "n01440764_1.JPEG",
        "n01443537_0.JPEG",
        "n01443537_1.JPEG",
    ]
    # gather_cc.py's output (ZSCL's own file): a header, then title<TAB>filepath
    output = tmp_path / "cc" / "Validation_GCC-1.1.0-Validation_output.csv"
    output.write_text("title\tfilepath\na red car\tcc_data/val/1/1.jpg\n")
    assert read_cc_captions(output) == ["a red car"]


def test_missing_cc_captions_or_imagenet_name_the_file_and_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        read_cc_captions(tmp_path / "Validation_GCC-1.1.0-Validation.tsv")
    message = str(error.value)
    assert "Validation_GCC-1.1.0-Validation.tsv" in message and "ai.google.com/research/ConceptualCaptions" in message
    with pytest.raises(DatasetMissing, match="imagenet"):
        imagenet_cc_reference(fake_clip(), tmp_path, tmp_path / "x.tsv")


# --------------------------------------------------------------------------- hidden entries
def test_hidden_folders_and_files_are_never_classes_or_images(tmp_path):
    write_caltech101(tmp_path)
    write_eurosat(tmp_path)
    write_sun397(tmp_path)
    plain = {name: load_vision_dataset(name, tmp_path) for name in ("caltech101", "eurosat", "sun397")}
    write_jpeg(tmp_path / "caltech101" / "101_ObjectCategories" / ".ipynb_checkpoints" / "image_0001.jpg", 1)
    (tmp_path / "caltech101" / "101_ObjectCategories" / "Faces" / ".DS_Store").write_bytes(b"\0" * 8)
    write_jpeg(tmp_path / "eurosat" / "2750" / ".ipynb_checkpoints" / "Forest_1-checkpoint.jpg", 3)
    write_jpeg(tmp_path / "eurosat" / "2750" / "Forest" / ".Forest_1.jpg", 4)
    write_jpeg(tmp_path / "SUN397" / "a" / "abbey" / ".ipynb_checkpoints" / "sun_0000-checkpoint.jpg", 5)
    for name, before in plain.items():
        after = load_vision_dataset(name, tmp_path)
        assert after.classnames == before.classnames, name
        assert [str(p) for p in after.train.paths] == [str(p) for p in before.train.paths], name
        assert [str(p) for p in after.test.paths] == [str(p) for p in before.test.paths], name


# --------------------------------------------------------------------------- 15. baselines
def test_zscl_lwf_distils_the_stage_start_model_on_the_current_class_prompts():
    run = tiny_run("whole")
    method = ZSCLLwF(distill_transform="train")
    method.setup(run)
    method.begin_stage(run)
    prompts = [f"a photo of a {name}." for name in run.stage.classnames]
    assert torch.equal(method.tokens, run.tokenizer(prompts))
    run.model.eval()  # same BN statistics as the teacher: zero distillation at the stage start
    _, terms = method.training_loss(run, torch.randn(4, 3, 32, 32), LABELS)
    assert terms["vr_image"].item() == pytest.approx(0.0, abs=1e-5) and terms["ce"].item() > 0
    perturb(run.model)
    method.end_stage(run)
    start = {name: value.clone() for name, value in run.model.state_dict().items()}
    run.stage_index = 1
    method.begin_stage(run)  # the teacher is the model this stage starts from
    assert all(torch.equal(method.teacher.state_dict()[name], value) for name, value in start.items())
    assert torch.equal(method.tokens, run.tokenizer([f"a photo of a {n}." for n in run.stage.classnames]))


class TransformedImages(torch.utils.data.Dataset):
    """Tiny PIL images read through ``self.transform`` (what ImageFiles / ArrayImages do)."""

    def __init__(self, count: int, transform):
        self.images = [Image.new("RGB", (24, 20), (10 * i, 0, 0)) for i in range(count)]
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(self.images[index]), index % 2


def test_zscl_lwf_and_lwf_vr_draw_their_second_batch_through_the_eval_transform():
    clip = fake_clip()
    crop = T.Compose([T.RandomResizedCrop(16, scale=(0.9, 1.0)), T.ToTensor(), T.Normalize(MEAN, STD)])
    train = TransformedImages(6, crop)
    run = tiny_run("whole")
    run.clip = clip
    run.stages = [Stage("T1", ["a", "b"], train, train)]
    for method in (ZSCLLwF(distill_transform="eval"), LwFVR(num_texts=4, distill_transform="eval")):
        method.setup(run)
        method.begin_stage(run)
        view = method.distillation_images(run)
        assert view.transform is clip.preprocess_eval and train.transform is crop
        assert torch.equal(view[2][0], clip.preprocess_eval(train.images[2]))
    assert LwFVR(num_texts=4).distillation_images(run) is train  # train: the stage's own transform
    merged = torch.utils.data.ConcatDataset([torch.utils.data.Subset(train, [0, 1])])
    assert with_transform(merged, clip.preprocess_eval).datasets[0].dataset.transform is clip.preprocess_eval
    with pytest.raises(ValueError, match="distill_transform"):
        LwFVR(distill_transform="test")


def test_icarl_per_stage_herding_uses_zscls_quotas():
    # K = 5000: t = 1 -> (K - K//1 = 0 -> K, -); t = 2 -> (2500, 2500); t = 3 -> (5000 - 1666, 1666)
    assert zscl_stage_quotas(5000, 1)[0] == 5000
    assert zscl_stage_quotas(5000, 2) == (2500, 2500) and zscl_stage_quotas(5000, 3) == (3334, 1666)
    run = tiny_run("whole", stages=3)
    method = ICaRL(memory_size=6, herding="per_stage")
    method.setup(run)
    sizes = []
    for index in range(3):
        run.stage_index = index
        method.begin_stage(run)
        method.end_stage(run)
        sizes.append({key: len(value) for key, value in method.memory.items()})
    # K = 6, 8 images per stage: t=1 -> 6; t=2 -> new 3, old 3; t=3 -> new 6 - 2 = 4, old 2 each (8 > K, as ZSCL)
    assert sizes == [{(0, -1): 6}, {(0, -1): 3, (1, -1): 3}, {(0, -1): 2, (1, -1): 2, (2, -1): 4}]
    # one herding order over the whole stage: the first exemplar is the image closest to the stage's mean
    features, _ = method.stage_features(run, run.stages[2])
    closest = int((features - features.mean(0)).norm(dim=1).argmin())
    assert method.memory[(2, -1)][0] == (2, closest)


def official_herding_order(features: np.ndarray, m: int) -> list[int]:
    """ZSCL's constructExampleSet loop (mtil/src/dynamic_dataset.py:57-80), restated; rows are deleted
    as they are picked, so positions are mapped back to the original rows."""
    mean, remaining, order, total = features.mean(axis=0), list(range(len(features))), [], None
    left = features.copy()
    for k in range(min(m, len(features))):
        if k == 0:
            index = int(np.argmin(np.sum((mean - left) ** 2, axis=1)))
            total = left[index].copy()
        else:
            index = int(np.argmin(np.sum((mean - (1 / (k + 1)) * (left + total)) ** 2, axis=1)))
            total += left[index]
        order.append(remaining.pop(index))
        left = np.delete(left, index, axis=0)
    return order


def test_herding_order_is_zscls():
    from clipcl_runner.methods.icarl import herding

    features = F.normalize(torch.randn(40, 8, generator=torch.Generator().manual_seed(3)), dim=1).double()
    assert herding(features, 15) == official_herding_order(features.numpy(), 15)


def test_icarl_herding_pool_keeps_the_first_images_only():
    run = tiny_run("whole")
    method = ICaRL(memory_size=8, herding="per_stage", herding_pool=3)
    method.setup(run)
    method.begin_stage(run)
    method.end_stage(run)
    assert sorted(i for _, i in method.memory[(0, -1)]) == [0, 1, 2]
    with pytest.raises(ValueError, match="herding"):
        ICaRL(herding="per_task")


def test_wise_ft_stage_start_anchor_with_ratio_08():
    run = scalar_run(1.0)
    method = WiSEFT(ratio=0.8, anchor="stage_start")
    method.zero_shot = trainable_snapshot(run.model)  # what setup snapshots: the pretrained 1
    with torch.no_grad():
        run.model.weight.fill_(3.0)  # the start of stage 2
    method.begin_stage(run)
    with torch.no_grad():
        run.model.weight.fill_(8.0)  # fine-tuned
    method.end_stage(run)
    assert run.model.weight.item() == pytest.approx(0.2 * 3.0 + 0.8 * 8.0)  # 7.0
    zero_shot = WiSEFT(ratio=0.8)
    run = scalar_run(1.0)
    zero_shot.zero_shot = trainable_snapshot(run.model)
    with torch.no_grad():
        run.model.weight.fill_(3.0)
    zero_shot.begin_stage(run)
    with torch.no_grad():
        run.model.weight.fill_(8.0)
    zero_shot.end_stage(run)
    assert run.model.weight.item() == pytest.approx(0.2 * 1.0 + 0.8 * 8.0)  # 6.6
    with pytest.raises(ValueError, match="anchor"):
        WiSEFT(anchor="previous")


# --------------------------------------------------------------------------- 16. a real frozen teacher
@pytest.mark.parametrize(
    "make",
    [
        lambda: LwFVR(num_texts=4),
        lambda: ZSCLLwF(distill_transform="train"),
        lambda: ICaRL(memory_size=4),
    ],
    ids=["lwf_vr", "zscl_lwf", "icarl"],
)
def test_teachers_share_no_storage_and_the_distillation_gradient_is_not_zero(make):
    run = tiny_run("whole")
    method = make()
    parameters = method.setup(run)
    if isinstance(method, ICaRL):  # a second stage, so that there are old classes to distil
        method.begin_stage(run)
        method.end_stage(run)
        run.stage_index = 1
    method.begin_stage(run)
    run.train_stage = method.training_stage(run)
    student = {p.data_ptr() for p in run.model.parameters()}
    assert not student & {p.data_ptr() for p in method.teacher.parameters()}
    perturb(run.model)  # the student moves away from its teacher, as after some steps
    teacher_before = {n: v.clone() for n, v in method.teacher.state_dict().items()}
    labels = torch.tensor([0, 1, 2, 3]) if isinstance(method, ICaRL) else LABELS
    _, terms = method.training_loss(run, torch.randn(4, 3, 32, 32), labels)
    key = "distill" if isinstance(method, ICaRL) else "vr_image"
    assert terms[key].item() > 1e-6
    # the distillation term alone: recompute it with gradients
    if isinstance(method, ICaRL):
        images = torch.randn(4, 3, 32, 32)
        _, terms = method.training_loss(run, images, labels)
        ce_only = ICaRL(memory_size=4, alpha=0.0)
        ce_only.teacher, ce_only.old_classes = method.teacher, method.old_classes
        loss = method.training_loss(run, images, labels)[0] - ce_only.training_loss(run, images, labels)[0]
    else:
        image_term, text_term = method.vocabulary_distillation(run, torch.randn(4, 3, 32, 32))
        loss = image_term + text_term
    grads = torch.autograd.grad(loss, [p for p in parameters if p.requires_grad], allow_unused=True)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    assert all(torch.equal(method.teacher.state_dict()[n], v) for n, v in teacher_before.items())


# --------------------------------------------------------------------------- verified equivalent
def official_distillation(t: torch.Tensor, s: torch.Tensor, T: float = 2.0) -> torch.Tensor:
    """ZSCL's helpers.distillation, restated: soft-target CE(s/T, softmax(t/T)), mean over rows, times T²."""
    p = F.softmax(t / T, dim=1)
    return -(p * F.log_softmax(s / T, dim=1)).sum(1).mean() * T**2


def test_zscl_loss_is_the_official_one_minus_a_constant_with_the_same_gradient():
    generator = torch.Generator().manual_seed(0)
    teacher = 30 * torch.randn(6, 9, generator=generator)
    student = (30 * torch.randn(6, 9, generator=generator)).requires_grad_()
    ours = soft_target_distillation(student, teacher, 2.0)
    official = official_distillation(teacher, student)
    p = F.softmax(teacher / 2, dim=1)
    entropy = -(p * p.log()).sum(1).mean() * 4  # the teacher's entropy·T²: constant in the student
    assert ours.item() == pytest.approx(official.item() - entropy.item(), rel=1e-5)
    (g_ours,) = torch.autograd.grad(ours, student)
    (g_official,) = torch.autograd.grad(official_distillation(teacher, student), student)
    assert torch.allclose(g_ours, g_official, atol=1e-6)
    # the text->image term is the same function on the transposed logits
    assert soft_target_distillation(student.t(), teacher.t(), 2.0).item() == pytest.approx(
        official_distillation(teacher.t(), student.t()).item()
        - (-(F.softmax(teacher.t() / 2, 1) * F.log_softmax(teacher.t() / 2, 1)).sum(1).mean() * 4).item(),
        rel=1e-5,
    )


def test_zscl_step_gradient_is_the_official_loss():
    """ZSCL.sh's loss (finetune.py:212-290 with --ls 0.2 --l2 1 --image_loss --text_loss), restated on our
    model's encoders, has the gradient of our training_loss (they differ by the teacher's entropies only)."""
    run = tiny_run("whole")
    run.label_smoothing = 0.2
    reference = tiny_reference()
    method = ZSCL(reference=reference, ref_batch_size=len(reference.images), we_every=None, l2=1.0)
    parameters = method.setup(run)
    method.begin_stage(run)
    start = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    perturb(run.model)
    run.model.eval()  # BatchNorm with fixed statistics: both computations see the same network
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    loss, _ = method.training_loss(run, images, LABELS)
    ours = torch.autograd.grad(loss, parameters)

    model, teacher = run.model, method.teacher
    scale = model.logit_scale.exp()  # ZSCL uses the student's (frozen) scale on both sides
    texts = run.tokenizer([f"a photo of a {name}." for name in run.stage.classnames])
    embeddings = F.normalize(model.encode_text(texts), dim=-1)
    out = F.normalize(model.encode_image(images), dim=-1)
    official = F.cross_entropy(scale * out @ embeddings.t(), LABELS, label_smoothing=0.2)
    official = official + sum(F.mse_loss(p, start[n], reduction="sum") for n, p in model.named_parameters())
    ref_images = reference.images.images
    with torch.no_grad():
        ref_embeddings = F.normalize(teacher.encode_text(run.tokenizer(reference.sentences)), dim=-1)
        ref_out = F.normalize(teacher.encode_image(ref_images), dim=-1)
    current = F.normalize(model.encode_image(ref_images), dim=-1)
    logits_current, logits_ref = scale * current @ ref_embeddings.t(), scale * ref_out @ ref_embeddings.t()
    official = official + official_distillation(logits_ref, logits_current)
    official = official + official_distillation(logits_ref.t(), logits_current.t())
    theirs = torch.autograd.grad(official, parameters)
    # float32 rounding only (our text encoding stops after the last EOT, an exact cut for CLIP's causal tower)
    difference = torch.cat([(a - b).flatten() for a, b in zip(ours, theirs)]).norm()
    assert difference <= 1e-4 * torch.cat([b.flatten() for b in theirs]).norm()


def test_zscl_lwf_step_gradient_is_lwf_shs_loss():
    """lwf.sh's loss (finetune.py with --ls 0.2 --image_loss --text_loss, ref texts = the current class
    prompts, ref images = the current dataset, teacher = the loaded previous model), restated."""
    run = tiny_run("whole")
    run.label_smoothing = 0.2
    method = ZSCLLwF(distill_transform="train")
    parameters = method.setup(run)
    method.begin_stage(run)
    perturb(run.model)
    run.model.eval()
    images, labels = run.stage.train.images, run.stage.train.labels  # 8 images: the second batch is all of them
    loss, _ = method.training_loss(run, images, labels)
    ours = torch.autograd.grad(loss, parameters)

    model, teacher = run.model, method.teacher
    scale = model.logit_scale.exp()
    texts = run.tokenizer([f"a photo of a {name}." for name in run.stage.classnames])
    out = F.normalize(model.encode_image(images), dim=-1)
    official = F.cross_entropy(
        scale * out @ F.normalize(model.encode_text(texts), dim=-1).t(), labels, label_smoothing=0.2
    )
    with torch.no_grad():
        ref_embeddings = F.normalize(teacher.encode_text(texts), dim=-1)
        ref_out = F.normalize(teacher.encode_image(images), dim=-1)
    logits_current, logits_ref = scale * out @ ref_embeddings.t(), scale * ref_out @ ref_embeddings.t()
    official = official + official_distillation(logits_ref, logits_current)
    official = official + official_distillation(logits_ref.t(), logits_current.t())
    theirs = torch.autograd.grad(official, parameters)
    difference = torch.cat([(a - b).flatten() for a, b in zip(ours, theirs)]).norm()
    assert difference <= 1e-4 * torch.cat([b.flatten() for b in theirs]).norm()


def test_transfer_avg_last_are_zscls_results_notebook_formulas():
    acc = np.random.default_rng(0).uniform(0, 100, (11, 11))  # row i: after stage i; column j: dataset j
    transfer = np.mean([np.mean([acc[j, i] for j in range(i)]) for i in range(1, 11)])  # mtil/results.ipynb
    ours = M.mtil_summary(acc)
    assert ours["transfer"] == pytest.approx(transfer)
    assert ours["avg"] == pytest.approx(acc.mean(axis=0).mean())
    assert ours["last"] == pytest.approx(acc[-1].mean())


# --------------------------------------------------------------------------- the presets resolve to the ledger
PRESETS = {
    "zscl_mtil": {
        "reference": "clipcl_runner.data.reference.imagenet_cc_reference",
        "zscl": {"l2": 1.0, "we_timing": "official", "we_every": 100, "image_weight": 1.0, "text_weight": 1.0},
        "icarl": {"memory_size": 10000, "herding": "per_stage", "herding_pool": 30000},
        "wise_ft": {"ratio": 0.8, "anchor": "stage_start"},
        "lwf_vr": {"distill_transform": "eval", "alpha": 1.0},
        "zscl_lwf": {"distill_transform": "eval", "alpha": 1.0},
        "tasks": {"extra_steps": 1, "iterations": 1000},
        "trainer": {
            "label_smoothing": 0.2,
            "batch_size": 64,
            "train_head": "stage",
            "precision": "fp32",
            "clamp_logit_scale": False,
            "grad_clip_norm": None,
        },
    },
    "zscl_cil": {
        "reference": "clipcl_runner.data.reference.coco_reference",
        "zscl": {"l2": 0.0, "we_timing": "official", "we_every": 10, "image_weight": 5.0, "text_weight": 5.0},
        "icarl": {"memory_size": 5000, "herding": "per_stage", "herding_pool": 10000},
        "wise_ft": {"ratio": 0.8, "anchor": "stage_start"},
        "lwf_vr": {"distill_transform": "train", "alpha": 5.0},
        "zscl_lwf": {"distill_transform": "train", "alpha": 5.0},
        "tasks": {
            "extra_steps": 1,
            "steps_per_task": "official",
            "batch_size": 64,
            "train_transform": "crop",
            "test_transform": "crop",
            "keep_underscores": True,
        },
        "trainer": {
            "label_smoothing": 0.2,
            "batch_size": 64,
            "train_head": "stage",
            "drop_last": False,
            "precision": "fp32",
            "clamp_logit_scale": False,
            "grad_clip_norm": None,
        },
    },
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_resolve_to_the_ledger(preset):
    expected = PRESETS[preset]
    for name in ("zscl", "icarl", "wise_ft", "lwf_vr", "zscl_lwf"):
        method = instantiate(compose_config(f"experiment={preset}", f"method={name}").method, _convert_="all")
        for key, value in expected[name].items():
            assert getattr(method, key) == value, (preset, name, key)
    cfg = compose_config(f"experiment={preset}", "method=zscl")
    assert cfg.reference._target_ == expected["reference"]
    for key, value in expected["tasks"].items():
        assert cfg.tasks[key] == value, key
    for key, value in expected["trainer"].items():
        assert cfg.trainer[key] == value, key
    assert cfg.trainer.scheduler._target_ == "clipcl_runner.zscl_loop.zscl_cosine"
    assert cfg.trainer.scheduler.extra_steps == cfg.tasks.extra_steps == 1
    # each quirk is one override away
    clean = compose_config(
        f"experiment={preset}", "method=zscl", "method.we_timing=multiples", "method.l2=0", "tasks.extra_steps=0"
    )
    method = instantiate(clean.method, _convert_="all")
    assert method.we_timing == "multiples" and method.l2 == 0 and clean.trainer.scheduler.extra_steps == 0


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_method_composes_and_instantiates_under_the_presets(preset):
    from conftest import CONFIG_DIR

    for option in sorted(path.stem for path in (Path(CONFIG_DIR) / "method").glob("*.yaml")):
        method = instantiate(compose_config(f"experiment={preset}", f"method={option}").method, _convert_="all")
        assert method.name == option


def test_plain_method_configs_keep_the_clean_defaults():
    zscl = instantiate(compose_config("method=zscl").method, _convert_="all")
    assert zscl.we_timing == "multiples" and zscl.l2 == 0.0
    icarl = instantiate(compose_config("method=icarl").method, _convert_="all")
    assert icarl.memory_size == 2000 and icarl.herding == "per_class" and icarl.herding_pool is None
    wise = instantiate(compose_config("method=wise_ft").method, _convert_="all")
    assert wise.ratio == 0.5 and wise.anchor == "zero_shot"
    assert instantiate(compose_config("method=lwf_vr").method, _convert_="all").distill_transform == "train"
    assert instantiate(compose_config("method=zscl_lwf").method, _convert_="all").distill_transform == "eval"
