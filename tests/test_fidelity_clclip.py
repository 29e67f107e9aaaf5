"""Fidelity to CL-CLIP's official code (yxding95/CL-CLIP@877a69f): one test per row of docs/fidelity.md.

Expected numbers are derived here independently: a hand-worked case, or the official formula
restated in a few lines (never the official code itself).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_run
from torch import nn

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = torch.tensor([0, 1, 0, 1])
VOCABULARY = ["red cube", "blue sphere", "a tall tree", "small green boat", "an old lamp", "quiet river"]


def perturb(model: nn.Module, seed: int = 1, scale: float = 0.02) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))


def encode_texts(model: nn.Module, tokenizer, texts) -> torch.Tensor:
    return F.normalize(model.encode_text(tokenizer(list(texts))), dim=-1)


def kl_teacher_student(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Batch mean of sum_c p_t log(p_t / p_s) (the official LwF_KL with q = teacher)."""
    p_t = torch.softmax(teacher_logits / temperature, dim=1)
    return (
        (
            p_t
            * (
                torch.log_softmax(teacher_logits / temperature, dim=1)
                - torch.log_softmax(student_logits / temperature, dim=1)
            )
        )
        .sum(1)
        .mean()
    )


# --- 1. VR-LwF: CE + alpha * VR in OST / MST session 0, + alpha * LwF from session 1 ----------------
def vr_lwf_expected(run, method, images, labels, with_lwf: bool) -> torch.Tensor:
    model, teacher, tok = run.model, method.teacher, run.tokenizer
    template = run.stage.train_templates[0]
    with torch.no_grad():
        img = F.normalize(model.encode_image(images), dim=-1)
        img_t = F.normalize(teacher.encode_image(images), dim=-1)
        current = encode_texts(model, tok, [template.format(c) for c in run.stage.classnames])
        ce = F.cross_entropy(model.logit_scale.exp() * img @ current.t(), labels)
        voc_s, voc_t = encode_texts(model, tok, VOCABULARY), encode_texts(teacher, tok, VOCABULARY)
        vr = kl_teacher_student(
            teacher.logit_scale.exp() * img_t @ voc_t.t(), model.logit_scale.exp() * img @ voc_s.t(), method.temperature
        )
        distill = vr
        if with_lwf:
            seen = [template.format(c) for c in run.seen_classnames()]
            s, t = encode_texts(model, tok, seen), encode_texts(teacher, tok, seen)
            distill = distill + kl_teacher_student(
                teacher.logit_scale.exp() * img_t @ t.t(), model.logit_scale.exp() * img @ s.t(), method.temperature
            )
    return ce + method.alpha * distill


@pytest.mark.parametrize("stage_index,lwf_from_stage,with_lwf", [(0, 1, False), (1, 1, True), (0, 0, True)])
def test_vr_lwf_loss_is_ce_plus_alpha_vr_and_lwf_from_the_second_session(stage_index, lwf_from_stage, with_lwf):
    from clipcl_runner.methods.vr_lwf import VRLwF

    run = tiny_run("whole", stages=2)
    method = VRLwF(
        alpha=0.7, temperature=1.0, num_texts=len(VOCABULARY), vocabulary=VOCABULARY, lwf_from_stage=lwf_from_stage
    )
    method.setup(run)
    run.stage_index = stage_index
    method.begin_stage(run)
    method.training_stage(run)
    perturb(run.model)
    run.model.eval()  # BN statistics fixed: student and teacher see the same normalisation
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    loss, terms = method.training_loss(run, images, LABELS)
    expected = vr_lwf_expected(run, method, images, LABELS, with_lwf)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert (terms["lwf"].item() > 0) == with_lwf
    assert terms["vr"].item() > 0


def test_vr_lwf_rejects_a_negative_lwf_stage():
    from clipcl_runner.methods.vr_lwf import VRLwF

    with pytest.raises(ValueError, match="lwf_from_stage"):
        VRLwF(lwf_from_stage=-1)


# --- 2. OpenAI backbones are built with QuickGELU; a mismatch is an error ---------------------------
def shipped_open_clip_models() -> list[str]:
    from pathlib import Path

    from conftest import CONFIG_DIR

    names = sorted(p.stem for p in Path(CONFIG_DIR, "model").glob("*.yaml"))
    return [n for n in names if n not in ("synthetic", "local_checkpoint")]


@pytest.mark.parametrize("model", shipped_open_clip_models())
def test_every_shipped_openai_model_config_builds_quick_gelu(model):
    from conftest import compose_config
    from hydra.utils import instantiate

    from clipcl_runner.models import built_activation, tag_quick_gelu

    cfg = compose_config(f"model={model}").model
    assert tag_quick_gelu(cfg.name, cfg.pretrained) is True  # every shipped config is an OpenAI tag
    clip = instantiate(cfg, load_weights=False)  # random init: nothing is downloaded
    assert built_activation(clip.model) == "quick_gelu"


def test_activation_mismatch_with_the_tag_is_an_error():
    from clipcl_runner.models import _check_activation, load_open_clip

    with pytest.raises(ValueError, match="model.quick_gelu=false"):
        load_open_clip("ViT-B-32", "openai", quick_gelu=False, load_weights=False)
    tiny = load_open_clip("SynthCLIP-RN-Tiny").model  # nn.GELU, no tag
    with pytest.raises(ValueError, match="needs quick_gelu"):
        _check_activation(tiny, "SynthCLIP-RN-Tiny", "openai", True)
    _check_activation(tiny, "SynthCLIP-RN-Tiny", None, None)  # a file / no tag: nothing to compare


# --- 3. EuroSAT: ImageFolder file order for the test split, folder names split into words ------------
def fake_eurosat(root, per_class: int, hidden: bool = False):
    from PIL import Image

    from clipcl_runner.data.folders import EUROSAT_CLASSNAMES

    for c, folder in enumerate(EUROSAT_CLASSNAMES):  # the real release: 2750/<Class>/<Class>_<n>.jpg, n from 1
        directory = root / "eurosat" / "2750" / folder
        directory.mkdir(parents=True)
        for n in range(1, per_class + 1):
            Image.new("RGB", (8, 8), (c * 20, n, 0)).save(directory / f"{folder}_{n}.jpg")
        if hidden:
            Image.new("RGB", (8, 8)).save(directory / f"._{folder}_1.jpg")  # macOS resource fork
    if hidden:
        (root / "eurosat" / "2750" / ".ipynb_checkpoints").mkdir()
        Image.new("RGB", (8, 8)).save(root / "eurosat" / "2750" / ".ipynb_checkpoints" / "x.jpg")
    return root


def names_of(dataset, label):
    from pathlib import Path

    return [Path(p).name for p, y in zip(dataset.paths, dataset.labels) if y == label]


def test_eurosat_test_split_is_the_last_images_in_imagefolder_order(tmp_path):
    from torchvision.datasets import ImageFolder

    from clipcl_runner.data.folders import eurosat_sessions
    from clipcl_runner.models import load_open_clip

    clip = load_open_clip("SynthCLIP-RN-Tiny")
    root = fake_eurosat(tmp_path, per_class=12)
    (ost,) = eurosat_sessions(clip, root, sessions=1, epochs=1, test_per_class=5)
    # written out by hand: sorted names are _1, _10, _11, _12, _2, ..., _9, so the last five are _5.._9
    assert names_of(ost.test, 0) == [f"AnnualCrop_{n}.jpg" for n in (5, 6, 7, 8, 9)]
    assert names_of(ost.train, 0) == [f"AnnualCrop_{n}.jpg" for n in (1, 10, 11, 12, 2, 3, 4)]
    # and it is torchvision's ImageFolder order, which the official split indexes with [-500:]
    folder = ImageFolder(str(root / "eurosat" / "2750"))
    per_class = {}
    for path, target in folder.samples:
        per_class.setdefault(target, []).append(path.rsplit("/", 1)[-1])
    assert all(names_of(ost.test, y) == per_class[y][-5:] for y in range(10))
    (natural,) = eurosat_sessions(clip, root, sessions=1, epochs=1, test_per_class=5, file_order="natural")
    assert names_of(natural.test, 0) == [f"AnnualCrop_{n}.jpg" for n in (8, 9, 10, 11, 12)]
    with pytest.raises(ValueError, match="tasks.file_order"):
        eurosat_sessions(clip, root, file_order="random")


def test_eurosat_class_names_are_the_folder_words_in_lower_case(tmp_path):
    from clipcl_runner.data.folders import eurosat_readable, eurosat_sessions
    from clipcl_runner.models import load_open_clip

    assert eurosat_readable("AnnualCrop") == "annual crop"
    assert eurosat_readable("HerbaceousVegetation") == "herbaceous vegetation"
    assert eurosat_readable("SeaLake") == "sea lake" and eurosat_readable("Forest") == "forest"
    assert eurosat_readable("AnnualCrop", "clip") == "annual crop land"
    clip = load_open_clip("SynthCLIP-RN-Tiny")
    stages = eurosat_sessions(clip, fake_eurosat(tmp_path, per_class=3), sessions=5, epochs=1, test_per_class=1)
    assert [s.classnames for s in stages][:2] == [["annual crop", "forest"], ["herbaceous vegetation", "highway"]]
    with pytest.raises(ValueError, match="tasks.class_names"):
        eurosat_sessions(clip, tmp_path, class_names="pretty")


def test_hidden_files_and_folders_are_never_images_or_classes(tmp_path):
    from clipcl_runner.data.folders import eurosat_sessions, imagenet_folder_probe
    from clipcl_runner.models import load_open_clip

    clip = load_open_clip("SynthCLIP-RN-Tiny")
    root = fake_eurosat(tmp_path / "sat", per_class=3, hidden=True)
    (ost,) = eurosat_sessions(clip, root, sessions=1, epochs=1, test_per_class=1)
    assert len(ost.classnames) == 10 and len(ost.train) == 20 and len(ost.test) == 10
    assert not any("/." in p for p in ost.train.paths + ost.test.paths)
    class_list = tmp_path / "classes.txt"
    class_list.write_text("AnnualCrop\tannual crop\n")
    probe = imagenet_folder_probe(clip, "p", root / "eurosat" / "2750", class_list, "{}")
    assert len(probe.dataset) == 3


# --- 10. COCO crop box: every float corner rounded as PIL.crop rounds it -----------------------------
@pytest.mark.parametrize(
    "bbox,official,cover",
    [
        ([20.4, 5.6, 8.2, 9.1], (20, 6, 29, 15), (20, 5, 29, 15)),  # 28.6 -> 29, 14.7 -> 15
        ([2.5, 3.5, 10.0, 10.0], (2, 4, 12, 14), (2, 3, 13, 14)),  # halves to even: 2.5 -> 2, 3.5 -> 4, 12.5 -> 12
        ([0.2, 0.7, 5.1, 5.1], (0, 1, 5, 6), (0, 0, 6, 6)),
    ],
)
def test_coco_crop_box_rounds_each_corner_like_pil(bbox, official, cover):
    from PIL import Image

    from clipcl_runner.data.coco import crop_box

    assert crop_box(bbox, 64, 64) == official
    assert crop_box(bbox, 64, 64, "cover") == cover
    # PIL itself, given the official float box (x, y, x + w, y + h), cuts exactly the official box
    image = Image.new("L", (64, 64))
    image.putdata([i % 251 for i in range(64 * 64)])
    x, y, w, h = bbox
    assert image.crop((x, y, x + w, y + h)).tobytes() == image.crop(official).tobytes()
    with pytest.raises(ValueError, match="tasks.box_rounding"):
        crop_box(bbox, 64, 64, "floor")


# --- 11. Retrieval ties ranked as the official argsort ranks them --------------------------------
def official_ranks(images: np.ndarray, captions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CL-CLIP's i2t / t2i ranks restated: 5 captions per image, argsort(d)[::-1], best positive."""
    n = images.shape[0] // 5
    i2t = np.zeros(n)
    for index in range(n):
        inds = np.argsort(images[5 * index] @ captions.T)[::-1]
        i2t[index] = min(np.where(inds == i)[0][0] for i in range(5 * index, 5 * index + 5))
    t2i = np.zeros(5 * n)
    ims = images[::5]
    for index in range(n):
        for i, query in enumerate(captions[5 * index : 5 * index + 5]):
            t2i[5 * index + i] = np.where(np.argsort(query @ ims.T)[::-1] == index)[0][0]
    return i2t, t2i


def test_retrieval_ties_match_the_official_argsort_order():
    from clipcl_runner.retrieval import recall_at_k

    # 3 images x 5 captions, features quantised so that many scores tie exactly
    # (15 captions and 3 images: numpy's default argsort is an insertion sort there, i.e. stable)
    generator = torch.Generator().manual_seed(0)
    image_features = torch.randint(0, 2, (3, 4), generator=generator).double()
    text_features = torch.randint(0, 2, (15, 4), generator=generator).double()
    i2t, t2i = official_ranks(np.repeat(image_features.numpy(), 5, axis=0), text_features.numpy())
    expected = {}
    for k in (1, 5, 10):
        expected[f"i2t_r{k}"] = 100.0 * (i2t < k).mean()
    for k in (1, 5, 10):
        expected[f"t2i_r{k}"] = 100.0 * (t2i < k).mean()
    got = recall_at_k(image_features, text_features, torch.arange(15) // 5, chunk_size=2)
    assert got == pytest.approx(expected)
    optimistic = recall_at_k(image_features, text_features, torch.arange(15) // 5, ties="optimistic")
    assert optimistic["t2i_r1"] > got["t2i_r1"]  # the case does have ties that matter


# --- 6. GeoDL: the official kernel on a hand-worked case; exact kernel one switch away -------------
def test_newton_schulz_inverse_is_one_iteration_by_hand():
    from clipcl_runner.methods.geodl import newton_schulz_inverse

    # X = diag(3, 4): ||X||_F = 5, step = (3I - X/5)/2 = diag(1.2, 1.1), inverse ~ step^2 / 5
    got = newton_schulz_inverse(torch.diag(torch.tensor([3.0, 4.0], dtype=torch.float64)))
    assert torch.allclose(got, torch.diag(torch.tensor([1.44 / 5, 1.21 / 5], dtype=torch.float64)))


def test_official_kernel_on_a_hand_worked_batch():
    """N = 3 samples in D = 3: d = N - 2 = 1 and the complement has 2 <= 60 columns, so every
    choice is forced. New rows u, -u, 1/sqrt3 centre (per sample) to a rank-1 matrix along u;
    old rows v, -v, 1/sqrt3 along v = cos(phi) u + sin(phi) w. Then A = cos(phi), the 1x1
    Newton-Schulz inverse is exact, and G = b1 u u' + sin^2(phi)/(2 phi) (u w' + w u') + b4 w w'.
    For Δ = u - v: Δ'GΔ = 1 + sin(2phi)/(2phi) - cos(phi) - sin(phi)/phi = 1/2 - 3 sqrt3 / (4 pi)
    at phi = pi/3, for two of the three rows (the third has Δ = 0)."""
    from clipcl_runner.methods.geodl import geodesic_distance, official_kernel

    u = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64) / math.sqrt(2)
    w = torch.tensor([1.0, 1.0, -2.0], dtype=torch.float64) / math.sqrt(6)
    phi = math.pi / 3
    v = math.cos(phi) * u + math.sin(phi) * w
    ones = torch.ones(3, dtype=torch.float64) / math.sqrt(3)
    new, old = torch.stack([u, -u, ones]), torch.stack([v, -v, ones])
    kernel = official_kernel(new, old)
    b1, b4 = 0.5 + math.sin(2 * phi) / (4 * phi), 0.5 - math.sin(2 * phi) / (4 * phi)
    cross = math.sin(phi) ** 2 / (2 * phi)
    expected_kernel = b1 * torch.outer(u, u) + cross * (torch.outer(u, w) + torch.outer(w, u)) + b4 * torch.outer(w, w)
    assert torch.allclose(kernel.double(), expected_kernel, atol=1e-6)
    loss = geodesic_distance(old.float(), new.float(), kernel)
    assert loss.item() == pytest.approx(2 / 3 * (0.5 - 3 * math.sqrt(3) / (4 * math.pi)), rel=1e-5)


def test_official_kernel_is_not_a_projector_and_differs_from_the_exact_one():
    from clipcl_runner.methods.geodl import geodesic_flow_kernel, official_kernel

    generator = torch.Generator().manual_seed(0)
    common = 3 * torch.randn(128, generator=generator)  # CLIP-like features share a large mean direction
    old = F.normalize(torch.randn(30, 128, generator=generator) + common, dim=-1)
    new = F.normalize(old + 0.5 * torch.randn(30, 128, generator=generator) / 128**0.5 * 4, dim=-1)
    official = torch.linalg.eigvalsh(official_kernel(new, old).double())
    exact = torch.linalg.eigvalsh(geodesic_flow_kernel(old, new, 128).double())
    assert official.max() > 1.01 and exact.max() <= 1 + 1e-6  # the approximate HOGSVD overshoots
    with pytest.raises(ValueError, match="3 <= N"):
        official_kernel(new[:2], old[:2])


def geodl_run(stage_index: int, train_head: str = "stage", label_smoothing: float = 0.0):
    run = tiny_run("whole", stages=2)
    run.train_head, run.label_smoothing = train_head, label_smoothing
    return run


@pytest.mark.parametrize("kernel", ["official", "exact"])
def test_geodl_uses_the_shared_ce_with_train_head_seen_and_label_smoothing(kernel):
    """Issue 10 item 4: stage 2 with train_head=seen used to raise IndexError (CE over 2 classes)."""
    from clipcl_runner.methods.geodl import GeoDL

    run = geodl_run(1, "seen", 0.1)
    method = GeoDL(alpha=0.0, kernel=kernel)
    method.setup(run)
    run.stage_index = 1
    method.begin_stage(run)
    run.train_stage = method.training_stage(run)
    perturb(run.model)
    run.model.eval()
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([2, 3, 0, 1])  # labels over the 4 seen classes
    loss, terms = method.training_loss(run, images, labels)
    with torch.no_grad():
        img = F.normalize(run.model.encode_image(images), dim=-1)
        text = encode_texts(
            run.model, run.tokenizer, [run.stage.train_templates[0].format(c) for c in run.seen_classnames()]
        )
        expected = F.cross_entropy(run.model.logit_scale.exp() * img @ text.t(), labels, label_smoothing=0.1)
    assert terms["ce"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.parametrize("text_classes,rows", [("seen", 4), ("current", 2)])
def test_geodl_mst_text_term_over_every_seen_class(text_classes, rows):
    from clipcl_runner.methods.geodl import GeoDL, geodesic_distance, geodesic_flow_kernel

    run = geodl_run(1)
    method = GeoDL(alpha=1.0, kernel="exact", text_classes=text_classes)
    method.setup(run)
    run.stage_index = 1
    method.begin_stage(run)
    perturb(run.model)
    run.model.eval()
    images = torch.randn(4, 3, 32, 32)
    _, terms = method.training_loss(run, images, torch.tensor([0, 1, 0, 1]))
    template = run.stage.train_templates[0]
    names = run.seen_classnames() if text_classes == "seen" else run.stage.classnames
    assert len(names) == rows and method.text_names == list(names)
    with torch.no_grad():
        prompts = [template.format(c) for c in names]
        new, old = encode_texts(run.model, run.tokenizer, prompts), encode_texts(method.teacher, run.tokenizer, prompts)
        expected = geodesic_distance(old, new, geodesic_flow_kernel(old, new, 128))
    assert terms["geodl_txt"].item() == pytest.approx(expected.item(), rel=1e-3, abs=1e-7)


def test_geodl_rejects_unknown_switches():
    from clipcl_runner.methods.geodl import GeoDL

    with pytest.raises(ValueError, match="method.kernel"):
        GeoDL(kernel="approx")
    with pytest.raises(ValueError, match="method.text_classes"):
        GeoDL(text_classes="all")


# --- 7. RKR: CL-CLIP's rectifiers (3 per block, nn.Linear-initialised U, logit scale frozen) -------
VIT_WIDTH, TEXT_WIDTH, BLOCKS, RANK = 64, 32, 2, 4


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A 2-block ViT CLIP (image width 64, text width 32), registered with open_clip for this module."""
    import json

    import open_clip

    folder = tmp_path_factory.mktemp("vit_config")
    config = {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": BLOCKS, "width": VIT_WIDTH, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": TEXT_WIDTH, "heads": 2, "layers": BLOCKS},
    }
    (folder / "H1-Fidelity-ViT-Tiny.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / "H1-Fidelity-ViT-Tiny.json")
    return "H1-Fidelity-ViT-Tiny"


def vit_run(name: str, part: str, train_logit_scale: bool = True):
    import open_clip

    from clipcl_runner.methods.base import RunContext

    run = tiny_run(part)
    torch.manual_seed(0)
    return RunContext(
        model=open_clip.create_model(name),
        tokenizer=open_clip.get_tokenizer(name),
        device=torch.device("cpu"),
        stages=run.stages,
        part=part,
        train_logit_scale=train_logit_scale,
    )


def block_rectifier_size(width: int, in_proj: bool) -> int:
    """Per block, by hand: (U out x r, D r x in, σ out) for out-proj (w, w), c_fc (4w, w), c_proj (w, 4w)."""
    size = sum(RANK * o + RANK * i + o for o, i in [(width, width), (4 * width, width), (width, 4 * width)])
    return size + (RANK * 3 * width + RANK * width + 3 * width if in_proj else 0)


@pytest.mark.parametrize(
    "part,in_proj,quirk,towers",
    [
        ("whole", False, False, ("image", "text")),
        ("whole", True, False, ("image", "text")),
        ("image", False, False, ("image",)),
        ("text", False, False, ("text",)),
        ("text", False, True, ("image", "text")),  # CL-CLIP's "Transformer" name match also hits visual.transformer
    ],
)
def test_rkr_parameter_counts_follow_the_official_layers(tiny_vit, part, in_proj, quirk, towers):
    from clipcl_runner.methods.rkr import RKR

    run = vit_run(tiny_vit, part)
    parameters = RKR(rank=RANK, in_proj=in_proj, text_rectifies_image=quirk).setup(run)
    widths = {"image": VIT_WIDTH, "text": TEXT_WIDTH}
    expected = sum(BLOCKS * block_rectifier_size(widths[t], in_proj) for t in towers)
    assert sum(p.numel() for p in parameters) == expected
    assert not run.model.logit_scale.requires_grad  # frozen although trainer.train_logit_scale=true
    assert all(p.requires_grad for p in parameters)
    assert sum(p.numel() for p in run.model.parameters() if p.requires_grad) == expected


def test_rkr_u_is_initialised_as_nn_linear_and_the_model_starts_unchanged(tiny_vit):
    from clipcl_runner.methods.distill import frozen_copy
    from clipcl_runner.methods.rkr import RKR, Rectifier

    run = vit_run(tiny_vit, "whole")
    original = frozen_copy(run.model)
    RKR(rank=RANK).setup(run)
    run.model.eval()
    u = torch.cat([m.U.flatten() for m in run.model.modules() if isinstance(m, Rectifier)])
    # nn.Linear(rank, out).weight ~ U(-1/sqrt(rank), 1/sqrt(rank)): std 1/sqrt(3 rank) = 0.2887 for rank 4
    assert u.abs().max() <= 1 / math.sqrt(RANK)
    assert u.std().item() == pytest.approx(1 / math.sqrt(3 * RANK), rel=0.05)
    assert all(torch.equal(m.D, torch.zeros_like(m.D)) for m in run.model.modules() if isinstance(m, Rectifier))
    images, tokens = torch.randn(2, 3, 32, 32), run.tokenizer(["a photo of a cat", "x"])
    with torch.no_grad():
        assert torch.allclose(run.model.encode_image(images), original.encode_image(images), atol=1e-5)
        assert torch.allclose(run.model.encode_text(tokens), original.encode_text(tokens), atol=1e-5)
    normal = vit_run(tiny_vit, "whole")
    RKR(rank=RANK, init="normal", init_std=0.02).setup(normal)
    u = torch.cat([m.U.flatten() for m in normal.model.modules() if isinstance(m, Rectifier)])
    assert u.std().item() == pytest.approx(0.02, rel=0.05)


def test_rkr_refuses_an_image_tower_without_transformer_blocks():
    from clipcl_runner.methods.rkr import RKR

    with pytest.raises(ValueError, match="method.layers=all"):
        RKR().setup(tiny_run("image"))  # the tiny RN image tower
    with pytest.raises(ValueError, match="method.init"):
        RKR(init="zeros")


# --- Verified-equivalent items (docs/fidelity.md): FT, LwF, part sets, transforms, prompts, metrics --
def student_teacher_logits(run, teacher, images, names):
    template = run.stage.train_templates[0]
    prompts = [template.format(c) for c in names]
    with torch.no_grad():
        img, img_t = (
            F.normalize(run.model.encode_image(images), dim=-1),
            F.normalize(teacher.encode_image(images), dim=-1),
        )
        s, t = encode_texts(run.model, run.tokenizer, prompts), encode_texts(teacher, run.tokenizer, prompts)
    return run.model.logit_scale.exp() * img @ s.t(), teacher.logit_scale.exp() * img_t @ t.t()


@pytest.mark.parametrize("stage_index", [0, 1])
def test_ft_and_lwf_match_the_official_masked_logits(stage_index):
    """Official MST: logits over ALL classes, other sessions' CE logits filled with -1e4, LwF logits
    beyond the seen sessions filled with -1e4 (student and teacher), LwF_KL at T = 1, from session 0."""
    from clipcl_runner.methods.finetune import Finetune
    from clipcl_runner.methods.lwf import LwF

    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    for method in (Finetune("finetune"), LwF(alpha=0.5, temperature=1.0)):
        run = tiny_run("whole", stages=2)
        method.setup(run)
        run.stage_index = stage_index
        method.begin_stage(run)
        method.training_stage(run)
        teacher = getattr(method, "teacher", None) or run.model
        perturb(run.model)
        run.model.eval()
        loss, _ = method.training_loss(run, images, LABELS)
        all_names = [c for s in run.stages for c in s.classnames]
        student, base = student_teacher_logits(run, teacher, images, all_names)
        session = torch.zeros(len(all_names), dtype=torch.bool)
        session[2 * stage_index : 2 * stage_index + 2] = True
        seen = torch.zeros(len(all_names), dtype=torch.bool)
        seen[: 2 * stage_index + 2] = True
        ce = F.cross_entropy(student.masked_fill(~session, -1e4), LABELS + 2 * stage_index)
        expected = ce
        if isinstance(method, LwF):
            expected = ce + 0.5 * kl_teacher_student(
                base.masked_fill(~seen, -1e4), student.masked_fill(~seen, -1e4), 1.0
            )
        assert loss.item() == pytest.approx(expected.item(), rel=1e-4), method.name


@pytest.mark.parametrize("part,official", [("whole", "wm"), ("image", "io"), ("text", "to")])
def test_part_parameter_sets_equal_main_py(tiny_vit, part, official):
    """main.py's learning_param lists restated (only_part_layers = 0): *_trans by name prefix,
    *_pre / *_post fixed name lists, logit_scale in both posts."""
    import open_clip

    from clipcl_runner.models import select_trainable

    model = open_clip.create_model(tiny_vit)
    names = [n for n, _ in model.named_parameters()]
    visual_trans = [
        n for n in names if n.split(".")[0] == "visual" and len(n.split(".")) > 3 and n.split(".")[1] == "transformer"
    ]
    text_trans = [n for n in names if n.split(".")[0] == "transformer"]
    text_pre, text_post = (
        ["token_embedding.weight", "positional_embedding"],
        ["ln_final.weight", "ln_final.bias", "text_projection", "logit_scale"],
    )
    visual_pre = [
        "visual.class_embedding",
        "visual.positional_embedding",
        "visual.conv1.weight",
        "visual.ln_pre.weight",
        "visual.ln_pre.bias",
    ]
    visual_post = ["visual.ln_post.weight", "visual.ln_post.bias", "visual.proj", "logit_scale"]
    learning = {
        "wm": text_trans + visual_trans + text_post + visual_post + text_pre + visual_pre,
        "io": visual_trans + visual_post + visual_pre,
        "to": text_trans + text_post + text_pre,
    }[official]
    chosen = {id(p) for p in select_trainable(model, part, train_logit_scale=True)}
    assert {n for n, p in model.named_parameters() if id(p) in chosen} == set(learning)


def test_preset_prompts_and_transforms_equal_data_py():
    from conftest import compose_config
    from hydra.utils import instantiate
    from torchvision import transforms as T

    from clipcl_runner.data.folders import paper_train_transform

    cfg = compose_config("experiment=ding2022_mst", "method=finetune")
    assert cfg.tasks.prompt == "this is a photo of {} in the scene ."  # data.py:63
    assert list(cfg.eval.probes.tiered_imagenet.templates) == ["this is a photo of {} ."]  # data.py:259
    assert (
        compose_config("experiment=ding2022_mst", "tasks=eurosat_mst").tasks.prompt
        == "this is a satellite photo of {} ."
    )
    clip = instantiate(cfg.model, load_weights=False)
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    train = paper_train_transform(clip).transforms  # data.py:23-29: Resize 256 bicubic, RandomCrop 224, flip
    assert (
        isinstance(train[0], T.Resize)
        and train[0].size == 256
        and train[0].interpolation == T.InterpolationMode.BICUBIC
    )
    assert isinstance(train[1], T.RandomCrop) and tuple(train[1].size) == (224, 224)
    assert (
        isinstance(train[2], T.RandomHorizontalFlip) and tuple(train[-1].mean) == mean and tuple(train[-1].std) == std
    )
    resize, crop = (s for s in clip.preprocess_eval.transforms if isinstance(s, (T.Resize, T.CenterCrop)))
    assert resize.size == 224 and resize.interpolation == T.InterpolationMode.BICUBIC and tuple(crop.size) == (224, 224)
    normalize = [s for s in clip.preprocess_eval.transforms if isinstance(s, T.Normalize)][0]
    assert tuple(normalize.mean) == mean and tuple(normalize.std) == std  # data.py:33-39


def test_ut_acc_and_bwt_equal_get_acc_bwt():
    """base.py get_acc_bwt restated: acc_t = mean_{i<=t} a[t][i]; BWT_t = sum_{i<t}(a[t][i] - a[i][i]) / (t + 1)."""
    from clipcl_runner.metrics import bwt, ut_acc

    a = np.array([[0.9, 0.0, 0.0], [0.7, 0.8, 0.0], [0.6, 0.5, 0.95]])
    official_acc = [a[t, : t + 1].mean() for t in range(3)]
    official_bwt = [sum(a[t, i] - a[i, i] for i in range(t)) / (t + 1) for t in range(3)]
    assert np.allclose(ut_acc(a), official_acc)
    assert np.allclose(bwt(a, "paper"), official_bwt)


# --- The presets resolve to what docs/fidelity.md says ---------------------------------------------
LEDGER_DEFAULTS = {  # config key -> value in both ding2022_* presets (COCO, part=whole)
    "trainer.precision": "fp16",
    "trainer.grad_clip_norm": 1.0,
    "trainer.grad_clip_before_unscale": True,
    "trainer.teacher_precision": "fp32",
    "trainer.clamp_logit_scale": False,
    "trainer.train_logit_scale": True,
    "trainer.batch_size": 100,
    "eval.precision": "fp32",
    "model.quick_gelu": None,
    "tasks.box_rounding": "official",
}
LEDGER_METHOD_DEFAULTS = {  # method -> {method key: value} (+ trainer.optimizer.lr)
    "finetune": {"lr": 1e-6},
    "lwf": {"lr": 1e-6, "alpha": 0.5, "temperature": 1.0},
    "vr_lwf": {
        "lr": 1e-6,
        "alpha": 0.5,
        "temperature": 1.0,
        "include_lwf": True,
        "lwf_from_stage": 1,
        "num_texts": 100,
        "token_length": 8,
    },
    "geodl": {"lr": 1e-6, "alpha": 0.5, "kernel": "official", "text_classes": "seen", "null_space_dim": 60},
    "imm": {"lr": 1e-6, "alpha": 0.5},
    "rkr": {
        "lr": 1e-5,
        "init": "linear",
        "layers": "blocks",
        "in_proj": False,
        "freeze_logit_scale": True,
        "text_rectifies_image": True,
    },
}


@pytest.mark.parametrize("experiment,epochs", [("ding2022_mst", 10), ("ding2022_ost", 15)])
@pytest.mark.parametrize("method", sorted(LEDGER_METHOD_DEFAULTS))
def test_presets_resolve_to_the_ledger(experiment, epochs, method):
    from pathlib import Path

    from conftest import REPO, compose_config
    from omegaconf import OmegaConf

    ledger = Path(REPO, "docs", "fidelity.md").read_text()
    cfg = compose_config(f"experiment={experiment}", f"method={method}")
    for key, value in LEDGER_DEFAULTS.items():
        assert OmegaConf.select(cfg, key) == value, key
        assert f"`{key}" in ledger, f"{key} missing from docs/fidelity.md"
    assert cfg.tasks.epochs == epochs
    scheduler = cfg.trainer.scheduler
    if experiment == "ding2022_ost":  # StepLR(10 epochs of 15, gamma 0.1), OST only
        assert scheduler.at_fraction == pytest.approx(10 / 15, abs=1e-4) and scheduler.gamma == 0.1
    else:
        assert scheduler is None
    assert cfg.trainer.optimizer._target_ == "torch.optim.Adam" and cfg.trainer.optimizer.weight_decay == 0.0
    resolved = OmegaConf.to_container(cfg.method, resolve=True)
    for key, value in LEDGER_METHOD_DEFAULTS[method].items():
        got = cfg.trainer.optimizer.lr if key == "lr" else resolved[key]
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, (method, key)
        if key != "lr":
            assert f"method.{key}" in ledger, f"method.{key} missing from docs/fidelity.md"


# f51dd73:run_gpu0.sh (wm), run_gpu1.sh (to), run_gpu2.sh (io): --alpha per method; vrd is our vr_lwf
EUROSAT_SCRIPT_ALPHAS = {
    "lwf": {"whole": 0.5, "text": 0.1, "image": 0.5},
    "vr_lwf": {"whole": 2.0, "text": 1.0, "image": 1.0},
    "geodl": {"whole": 10.0, "text": 0.3, "image": 10.0},
    "imm": {"whole": 0.6, "text": 0.7, "image": 0.6},
}


@pytest.mark.parametrize("method", sorted(EUROSAT_SCRIPT_ALPHAS))
def test_presets_on_eurosat_take_the_eurosat_scripts_alphas(method):
    from conftest import compose_config
    from hydra.utils import instantiate

    for part, alpha in EUROSAT_SCRIPT_ALPHAS[method].items():
        cfg = compose_config("experiment=ding2022_ost", "tasks=eurosat_ost", f"method={method}", f"part={part}")
        assert instantiate(cfg.method).alpha == alpha, (method, part)
        assert cfg.tasks.epochs == 15 and cfg.tasks.file_order == "lexicographic" and cfg.tasks.class_names == "folder"
