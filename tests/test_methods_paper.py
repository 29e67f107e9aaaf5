"""The paper's adapted methods GeoDL, mean-IMM and RKR on a tiny random-init open_clip model."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from conftest import tiny_run
from torch import nn

from clipcl_runner.methods.distill import frozen_copy
from clipcl_runner.methods.geodl import GeoDL, geodesic_distance, geodesic_flow_kernel, pca_subspace
from clipcl_runner.methods.imm import MeanIMM
from clipcl_runner.methods.rkr import RKR, RectifiedLinear, RectifiedMultiheadAttention, Rectifier
from clipcl_runner.models import tower_of

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = torch.tensor([0, 1, 0, 1])


def towers_with_gradient(model: nn.Module) -> set[str]:
    return {tower_of(n) for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def encode(model: nn.Module, tokens: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def unit_rows(rows: int, dim: int, seed: int) -> torch.Tensor:
    return nn.functional.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


# --- GeoDL --------------------------------------------------------------------------------------
def test_geodesic_distance_is_zero_for_identical_features_and_positive_otherwise():
    old = unit_rows(8, 16, 0)
    new = nn.functional.normalize(old + 0.3 * unit_rows(8, 16, 1), dim=-1)
    assert geodesic_distance(old, old, geodesic_flow_kernel(old, old, 4)).item() == 0.0
    assert geodesic_distance(old, new, geodesic_flow_kernel(old, new, 4)).item() > 1e-4


def test_geodesic_flow_kernel_is_symmetric_psd_and_the_integral_along_the_geodesic():
    old, new = unit_rows(10, 12, 2), unit_rows(10, 12, 3)
    kernel = geodesic_flow_kernel(old, new, 5)
    assert kernel.shape == (12, 12) and torch.equal(kernel, kernel.t())
    assert torch.linalg.eigvalsh(kernel.double()).min() > -1e-6
    # Independent check: Simpson quadrature of ∫ Φ(t)Φ(t)ᵀ dt along Φ(t) = A cos tθ + B sin tθ.
    source, target = pca_subspace(old.double(), 5), pca_subspace(new.double(), 5)
    u, cosines, vh = torch.linalg.svd(source.t() @ target)
    theta = torch.arccos(cosines.clamp(0, 1))
    a, c = source @ u, target @ vh.t()
    b = (c - a * cosines) / torch.sin(theta)
    steps = torch.linspace(0, 1, 201, dtype=torch.float64)
    weights = torch.ones(201, dtype=torch.float64)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    phis = [a * torch.cos(t * theta) + b * torch.sin(t * theta) for t in steps]
    numeric = sum(w * phi @ phi.t() for w, phi in zip(weights, phis)) / (3 * 200)
    assert torch.allclose(kernel.double(), numeric, atol=1e-5)
    assert torch.allclose(phis[-1] @ phis[-1].t(), target @ target.t(), atol=1e-6)  # the geodesic ends at P_T
    # Identical subspaces (angles 0: the series branch) give the projector P Pᵀ; more than D/2 dims is fine.
    same = geodesic_flow_kernel(old, old * 1.0000001, 9)
    projector = pca_subspace(old.double(), 9)
    assert torch.allclose(same.double(), projector @ projector.t(), atol=1e-5)


@pytest.mark.parametrize("rows", [1, 0])
def test_geodesic_flow_kernel_rejects_degenerate_batches(rows):
    with pytest.raises(ValueError):
        geodesic_flow_kernel(torch.randn(rows, 8), torch.randn(rows, 8), 4)
    with pytest.raises(ValueError):
        geodesic_flow_kernel(torch.full((4, 8), float("nan")), torch.randn(4, 8), 4)


def test_geodl_falls_back_to_cross_entropy_with_one_warning(caplog):
    run = tiny_run("whole")
    method = GeoDL("geodl")
    method.setup(run)
    method.begin_stage(run)
    run.model.eval()  # a batch of one cannot go through BatchNorm in train mode
    with caplog.at_level(logging.WARNING, logger="clipcl_runner.methods.geodl"):
        for _ in range(2):
            loss, terms = method.training_loss(run, torch.randn(1, 3, 32, 32), torch.tensor([1]))
            assert torch.isfinite(loss) and loss.item() == terms["ce"].item()
            assert terms["geodl_fallback"].item() == 1.0
    assert len([r for r in caplog.records if "geodesic flow kernel failed" in r.getMessage()]) == 1


def test_geodl_gives_gradient_to_both_towers_and_none_to_the_teacher():
    run = tiny_run("whole")
    method = GeoDL("geodl", alpha=10.0)
    method.setup(run)
    method.begin_stage(run)
    run.model.eval()
    images = torch.randn(4, 3, 32, 32)
    _, terms = method.training_loss(run, images, LABELS)  # student == teacher: both distances vanish
    assert terms["geodl_img"].item() == pytest.approx(0.0, abs=1e-7) and terms["geodl_txt"].item() == pytest.approx(
        0.0, abs=1e-7
    )
    with torch.no_grad():  # move the student away from the teacher
        for param in run.model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    names, templates = run.stage.classnames, run.stage.train_templates
    d_img, d_txt = method.geodesic_terms(
        run,
        images,
        run.model.encode_image(images, normalize=True),
        method.class_features(run, run.model, names, templates),
    )
    assert d_img.item() > 0 and d_txt.item() > 0
    (d_img + d_txt).backward()  # the distillation terms alone reach both towers
    assert towers_with_gradient(run.model) == {"image", "text"}
    assert all(p.grad is None for p in method.teacher.parameters())
    run.model.zero_grad(set_to_none=True)
    loss, terms = method.training_loss(run, images, LABELS)
    loss.backward()
    assert terms["geodl_fallback"].item() == 0.0
    assert loss.item() == pytest.approx(
        terms["ce"].item() + 10.0 * (terms["geodl_img"].item() + terms["geodl_txt"].item()), rel=1e-5
    )
    assert towers_with_gradient(run.model) == {"image", "text"}


def test_geodl_skips_the_frozen_tower():
    run = tiny_run("image")
    method = GeoDL("geodl")
    method.setup(run)
    method.begin_stage(run)
    _, terms = method.training_loss(run, torch.randn(4, 3, 32, 32), LABELS)
    assert terms["geodl_txt"].item() == 0.0 and terms["geodl_fallback"].item() == 0.0


# --- mean-IMM -----------------------------------------------------------------------------------
def test_imm_merges_exactly_the_trainable_parameters():
    run = tiny_run("image")
    method = MeanIMM("imm", alpha=0.6)
    trainable = {id(p) for p in method.setup(run)}
    method.begin_stage(run)
    old = {name: value.clone() for name, value in run.model.state_dict().items()}
    with torch.no_grad():  # "training": move the trainable parameters, and the BN statistics by a forward pass
        for param in run.model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param))
        run.model.train()
        run.model.encode_image(torch.randn(4, 3, 32, 32))
    new = {name: value.clone() for name, value in run.model.state_dict().items()}
    merged_state = method.merged_state(run)
    assert all(torch.equal(value, new[name]) for name, value in run.model.state_dict().items())  # untouched
    method.end_stage(run)
    params = dict(run.model.named_parameters())
    buffers = dict(run.model.named_buffers())
    merged_count = 0
    for name, value in run.model.state_dict().items():
        if name in params and id(params[name]) in trainable:
            expected = 0.6 * new[name] + (1 - 0.6) * old[name]
            assert torch.equal(value, expected), name
            assert not torch.equal(value, new[name]), name
            merged_count += 1
        elif name in buffers:
            assert torch.equal(value, new[name]), name  # BatchNorm statistics: the new model's
        else:
            assert tower_of(name) != "image" and torch.equal(value, old[name]), name  # frozen: untouched
        assert torch.equal(merged_state[name], value), name
    assert merged_count == len(trainable) > 0
    assert not torch.equal(buffers["visual.bn1.running_mean"], old["visual.bn1.running_mean"])
    assert method.state_dict() == {}


# --- RKR ----------------------------------------------------------------------------------------
def wrapped_towers(model: nn.Module) -> dict[str, int]:
    counts = {"image": 0, "text": 0}
    for name, module in model.named_modules():
        if isinstance(module, (RectifiedLinear, RectifiedMultiheadAttention)):
            counts[tower_of(f"{name}.")] += 1
    return counts


# RKR on every linear of the tower (attention pool and in-projections included), the logit scale
# following the trainer: the wrapping mechanics on the tiny RN model (tests/test_fidelity_clclip.py
# pins the default, CL-CLIP's 3 layers per transformer block).
ALL_LAYERS = {"layers": "all", "init": "normal", "freeze_logit_scale": False}


def plain_linears(model: nn.Module, tower: str) -> int:
    return sum(
        1
        for name, module in model.named_modules()
        if type(module) in (nn.Linear, nn.MultiheadAttention) and tower_of(f"{name}.") == tower and ".base" not in name
    )


@pytest.mark.parametrize("train_logit_scale", [False, True])
def test_rkr_starts_exactly_at_the_frozen_model_and_trains_only_rectifiers(train_logit_scale):
    run = tiny_run("whole", train_logit_scale)
    original = frozen_copy(run.model)  # eval, no gradients: the same attention kernels as the wrapped model
    parameters = RKR("rkr", **ALL_LAYERS).setup(run)
    run.model.eval()
    tokens = run.tokenizer(["this is a photo of shape0a .", "a b c"])
    images = torch.randn(4, 3, 32, 32)
    for got, want in zip(encode(run.model, tokens, images), encode(original, tokens, images)):
        assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert wrapped_towers(run.model) == {"image": 4, "text": 6}  # attnpool q/k/v/c; 2 x (attention, c_fc, c_proj)
    names = {name for name, p in run.model.named_parameters() if p.requires_grad}
    assert ("logit_scale" in names) == train_logit_scale
    assert all("rectifier" in name for name in names - {"logit_scale"})
    assert len(parameters) == len(names) == 3 * 4 + 3 * 6 + 3 * 2 + int(train_logit_scale)  # U, D, σ; MHA has 2


def test_rkr_step_changes_outputs_but_not_the_original_weights_and_round_trips():
    run = tiny_run("whole")
    method = RKR("rkr", **ALL_LAYERS)
    parameters = method.setup(run)
    run.model.eval()  # BatchNorm statistics fixed: only the optimiser can change the outputs
    frozen = {name: value.clone() for name, value in run.model.state_dict().items() if "rectifier" not in name}
    tokens = run.tokenizer(["this is a photo of shape0a .", "a b c"])
    images = torch.randn(4, 3, 32, 32)
    before = encode(run.model, tokens, images)
    method.begin_stage(run)
    optimizer = torch.optim.Adam(parameters, lr=1e-3)
    loss, _ = method.training_loss(run, images, LABELS)
    loss.backward()
    optimizer.step()
    after = encode(run.model, tokens, images)
    state = run.model.state_dict()
    assert all(torch.equal(state[name], value) for name, value in frozen.items())
    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])
    # A fresh model wrapped the same way (other random U) loads the checkpoint and computes the same.
    fresh = tiny_run("whole")
    torch.manual_seed(123)
    RKR("rkr", **ALL_LAYERS).setup(fresh)
    fresh.model.load_state_dict(state)
    fresh.model.eval()
    for got, want in zip(encode(fresh.model, tokens, images), after):
        assert torch.equal(got, want)


@pytest.mark.parametrize("part,expected", [("image", {"image": 4, "text": 0}), ("text", {"image": 0, "text": 6})])
def test_rkr_wraps_only_the_trained_tower(part, expected):
    run = tiny_run(part)
    parameters = RKR("rkr", **ALL_LAYERS).setup(run)
    assert wrapped_towers(run.model) == expected
    other = "text" if part == "image" else "image"
    assert plain_linears(run.model, other) == {"image": 4, "text": 6}[other]
    assert {tower_of(n) for n, p in run.model.named_parameters() if p.requires_grad} == {part}
    assert len(parameters) == 3 * sum(expected.values()) + 3 * 2 * (part == "text")


def test_rkr_rectified_weights_reach_modules_that_read_weights_directly():
    run = tiny_run("image")
    RKR("rkr", **ALL_LAYERS).setup(run)
    run.model.eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = run.model.encode_image(images)
        run.model.visual.attnpool.c_proj.rectifier.sigma.fill_(2.0)  # the attention pool reads c_proj.weight
        after = run.model.encode_image(images)
    assert torch.allclose(after, 2 * before, atol=1e-5)


def test_rkr_multihead_attention_with_separate_key_value_dims():
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(16, 2, kdim=8, vdim=8, batch_first=True).eval()
    wrapped = RectifiedMultiheadAttention(copy.deepcopy(attention), rank=4, init_std=0.02).eval()
    query, context = torch.randn(2, 3, 16), torch.randn(2, 5, 8)
    with torch.no_grad():
        want, _ = attention(query, context, context, need_weights=False)
        got, _ = wrapped(query, context, context, need_weights=False)
        assert torch.allclose(got, want, atol=1e-6, rtol=0) and wrapped.batch_first
        wrapped.k_proj_rectifier.D.normal_()
        changed, _ = wrapped(query, context, context, need_weights=False)
    assert not torch.allclose(changed, want)
    assert sum(isinstance(m, Rectifier) for m in wrapped.modules()) == 4
