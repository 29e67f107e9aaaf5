"""What a task sequence is made of: stages, and the probe sets evaluated after each stage.

A stage names its training data, its class names and prompts, and how long it trains.
Any dataset that yields ``(image_tensor, label)`` can be a stage; the stage loop knows
nothing about where the images come from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import ConcatDataset, Dataset, Subset


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


def model_input(images: torch.Tensor, clip) -> torch.Tensor:
    """The world's uint8 images as ``clip``'s input: resized to its image size when that differs
    (e.g. a ViT-B/32 at 224 px on the 32 px synthetic world), then normalised with its mean/std."""
    size = getattr(getattr(clip.model, "visual", None), "image_size", None)
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size) if size else None
    if size is not None and tuple(images.shape[-2:]) != size:
        resized = torch.nn.functional.interpolate(images.float(), size=size, mode="bilinear", antialias=True)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return normalise_uint8(images, clip.image_mean, clip.image_std)


class OffsetLabels(Dataset):
    """``dataset`` with ``offset`` added to every label: a stage's local labels placed in a larger head."""

    def __init__(self, dataset: Dataset, offset: int):
        self.dataset, self.offset = dataset, offset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return image, int(label) + self.offset


def merged_stage(
    name: str,
    parts: Sequence[tuple[Stage, Sequence[int] | None]],
    epochs: int | None = None,
    iterations: int | None = None,
    lr: float | None = None,
) -> Stage:
    """One training stage over the classes of several stages (a class-incremental head, replay, joint training).

    ``parts`` are ``(stage, indices)``: the stage's training images at ``indices`` (all when None),
    their labels shifted after the classes of the parts before. When every part prompts with the
    same templates the class names stay plain; otherwise (MTIL: one template per dataset) each
    class name becomes its own stage's formatted prompt and the template is ``"{}"``, which needs
    a single training template per stage.
    """
    if not parts:
        raise ValueError(f"merged stage {name}: no parts")
    same_templates = all(stage.train_templates == parts[0][0].train_templates for stage, _ in parts)
    classnames: list[str] = []
    datasets: list[Dataset] = []
    for stage, indices in parts:
        if same_templates:
            classnames.extend(stage.classnames)
        else:
            if len(stage.train_templates) != 1:
                raise ValueError(
                    f"stage {stage.name} has {len(stage.train_templates)} training templates; merging stages with "
                    "different templates needs one template per stage."
                )
            classnames.extend(stage.train_templates[0].format(c) for c in stage.classnames)
        data = stage.train if indices is None else Subset(stage.train, list(indices))
        datasets.append(OffsetLabels(data, len(classnames) - len(stage.classnames)))
    first = parts[0][0]
    return Stage(
        name=name,
        classnames=classnames,
        train=datasets[0] if len(datasets) == 1 and datasets[0].offset == 0 else ConcatDataset(datasets),
        test=first.test,  # unused: evaluation always runs on the task sequence's own stages
        train_templates=list(first.train_templates) if same_templates else ["{}"],
        epochs=epochs if epochs is not None else (None if iterations else first.epochs),
        iterations=iterations,
        lr=lr if lr is not None else first.lr,
    )


def with_transform(dataset: Dataset, transform) -> Dataset:
    """``dataset`` with its images read through ``transform`` instead (e.g. the evaluation transform for a
    method's second view of the training images): datasets with a ``transform`` attribute are copied
    with it replaced, through Subset / ConcatDataset / OffsetLabels; tensors already in memory
    (``TensorImages``) have no transform and come back as they are."""
    import copy

    if isinstance(dataset, Subset):
        return Subset(with_transform(dataset.dataset, transform), dataset.indices)
    if isinstance(dataset, ConcatDataset):
        return ConcatDataset([with_transform(part, transform) for part in dataset.datasets])
    if isinstance(dataset, OffsetLabels):
        return OffsetLabels(with_transform(dataset.dataset, transform), dataset.offset)
    if hasattr(dataset, "transform"):
        view = copy.copy(dataset)
        view.transform = transform
        return view
    return dataset
