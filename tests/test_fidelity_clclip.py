"""Fidelity to CL-CLIP's official code (yxding95/CL-CLIP@877a69f): one test per row of docs/fidelity.md.

Expected numbers are derived here independently: a hand-worked case, or the official formula
restated in a few lines (never the official code itself).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_run

torch.set_num_threads(1)

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
    return (p_t * (torch.log_softmax(teacher_logits / temperature, dim=1)
                   - torch.log_softmax(student_logits / temperature, dim=1))).sum(1).mean()


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
        vr = kl_teacher_student(teacher.logit_scale.exp() * img_t @ voc_t.t(), model.logit_scale.exp() * img @ voc_s.t(),
                                method.temperature)
        distill = vr
        if with_lwf:
            seen = [template.format(c) for c in run.seen_classnames()]
            s, t = encode_texts(model, tok, seen), encode_texts(teacher, tok, seen)
            distill = distill + kl_teacher_student(teacher.logit_scale.exp() * img_t @ t.t(),
                                                   model.logit_scale.exp() * img @ s.t(), method.temperature)
    return ce + method.alpha * distill


@pytest.mark.parametrize("stage_index,lwf_from_stage,with_lwf", [(0, 1, False), (1, 1, True), (0, 0, True)])
def test_vr_lwf_loss_is_ce_plus_alpha_vr_and_lwf_from_the_second_session(stage_index, lwf_from_stage, with_lwf):
    from clipcl_runner.methods.vr_lwf import VRLwF

    run = tiny_run("whole", stages=2)
    method = VRLwF(alpha=0.7, temperature=1.0, num_texts=len(VOCABULARY), vocabulary=VOCABULARY,
                   lwf_from_stage=lwf_from_stage)
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
    from conftest import CONFIG_DIR
    from pathlib import Path

    names = sorted(p.stem for p in Path(CONFIG_DIR, "model").glob("*.yaml"))
    return [n for n in names if n not in ("synthetic", "local_checkpoint")]


@pytest.mark.parametrize("model", shipped_open_clip_models())
def test_every_shipped_openai_model_config_builds_quick_gelu(model):
    from hydra.utils import instantiate

    from clipcl_runner.models import built_activation, tag_quick_gelu
    from conftest import compose_config

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
