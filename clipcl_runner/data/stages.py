"""What a task sequence is made of: stages, and the probe sets evaluated after each stage.

A stage names its training data, its class names and prompts, and how long it trains.
Any dataset that yields ``(image_tensor, label)`` can be a stage; the stage loop knows
nothing about where the images come from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch.utils.data import Dataset


@dataclass
class Stage:
    name: str
    classnames: list[str]
    train: Dataset
    test: Dataset
    train_templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    eval_templates: list[str] | None = None  # defaults to the training templates
    epochs: int | None = 1
    iterations: int | None = None  # when set, overrides epochs (MTIL-style schedules)
    lr: float | None = None  # per-stage learning rate override (e.g. ZSCL's Aircraft/MNIST)

    def __post_init__(self) -> None:
        if self.eval_templates is None:
            self.eval_templates = list(self.train_templates)
        if not self.epochs and not self.iterations:
            raise ValueError(f"stage {self.name}: give epochs or iterations.")


@dataclass
class ClassificationProbe:
    """Zero-shot classification of ``dataset`` among ``classnames`` with a template ensemble."""

    name: str
    dataset: Dataset
    classnames: list[str]
    templates: list[str]
    targets: torch.Tensor | None = None  # overrides the dataset's own labels (several probes may share images)


@dataclass
class RetrievalProbe:
    """Image<->text retrieval: every caption points to the index of its image."""

    name: str
    dataset: Dataset
    captions: list[str]
    text_to_image: torch.Tensor
    folds: int = 1  # COCO's 1k protocol: 5 folds of 1k images, averaged


class TensorImages(Dataset):
    """Images already in memory as a normalised float tensor, with integer labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]


def normalise_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N,3,H,W) -> float32 normalised with the model's mean/std (what open_clip's transform does)."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t
