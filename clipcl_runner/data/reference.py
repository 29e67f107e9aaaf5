"""ZSCL's reference set: images and sentences on which the initial CLIP's image-text logits are distilled.

ZSCL draws reference images from ImageNet or Conceptual Captions and reference sentences from
Conceptual Captions; most CC image links are dead today, so the real-data builder here reads
MS-COCO 2014 train images with their Karpathy captions instead. The offline default is the
synthetic world's pretraining distribution (known shapes on seen colour pairs, with captions),
which plays the role of "the data CLIP was pretrained on".

A builder is called as ``builder(clip=ClipBundle, **kwargs)`` (``conf/reference/*.yaml``) and
returns a :class:`ReferenceSet`. Images and sentences need not be paired: ZSCL samples them
independently.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..models import ClipBundle
from . import synthetic_world as world
from .coco import COCO_KARPATHY_FILE, read_karpathy
from .errors import DatasetMissing
from .folders import ImageFiles
from .stages import TensorImages, normalise_uint8


@dataclass
class ReferenceSet:
    """Reference images (a dataset of ``(image_tensor, anything)``) and reference sentences."""

    images: Dataset
    sentences: list[str]

    def __post_init__(self) -> None:
        if len(self.images) == 0 or not self.sentences:
            raise ValueError(
                f"a reference set needs images and sentences (got {len(self.images)} images, "
                f"{len(self.sentences)} sentences)."
            )


def synthetic_reference(
    clip: ClipBundle, num_images: int = 2000, captions_per_image: int = 1, world_seed: int = 0
) -> ReferenceSet:
    """Images of the synthetic world's pretraining distribution and their captions, on their own split seed."""
    made = world.make_set(
        num_images,
        seed=world.split_seed(world_seed, "reference"),
        pairs=world.SEEN_PAIRS,
        captions_per_image=captions_per_image,
    )
    images = TensorImages(normalise_uint8(made.images, clip.image_mean, clip.image_std), torch.arange(len(made)))
    return ReferenceSet(images, [text for per_image in made.captions for text in per_image])


def coco_reference(
    clip: ClipBundle,
    root: str | os.PathLike,
    max_images: int | None = 20000,
    captions_per_image: int = 1,
    splits: tuple[str, ...] | list[str] = ("train",),
    cache_dir: str | os.PathLike | None = None,
) -> ReferenceSet:
    """COCO 2014 images of the Karpathy ``splits`` (file order, the first ``max_images``) with their captions.

    Images get the evaluation transform (ZSCL feeds reference images with the test preprocessing);
    sentences are the first ``captions_per_image`` captions of every image, lower-cased.
    """
    root = Path(root).expanduser()
    entries = [entry for split in splits for entry in read_karpathy(root, COCO_KARPATHY_FILE, split,
                                                                   captions_per_image, "coco", cache_dir)]
    if max_images is not None:
        entries = entries[:max_images]
    if not entries:
        raise ValueError(f"{root / COCO_KARPATHY_FILE} has no images in splits {list(splits)}.")
    paths = [root / entry["filepath"] / entry["filename"] for entry in entries]
    for folder in sorted({path.parent for path in paths}):
        if not folder.is_dir():
            raise DatasetMissing("coco", folder, root, "image folder")
    images = ImageFiles(paths, list(range(len(paths))), clip.preprocess_eval, "coco", root)
    return ReferenceSet(images, [text for entry in entries for text in entry["captions"]])
