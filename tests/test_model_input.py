"""The synthetic world's 32 px images fed to a model of another input size (ViT-B/32 at 224 px: the GPU check)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from clipcl_runner.data.stages import model_input, normalise_uint8


def fake_clip(size):
    return SimpleNamespace(
        model=SimpleNamespace(visual=SimpleNamespace(image_size=size)),
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.25, 0.25, 0.25),
    )


def test_same_size_is_plain_normalisation():
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(model_input(images, fake_clip(32)), normalise_uint8(images, (0.5,) * 3, (0.25,) * 3))


def test_other_sizes_are_resized_first():
    images = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    out = model_input(images, fake_clip((224, 224)))
    assert out.shape == (2, 3, 224, 224)
    assert torch.allclose(out, torch.full_like(out, (1.0 - 0.5) / 0.25))  # a flat image stays flat
