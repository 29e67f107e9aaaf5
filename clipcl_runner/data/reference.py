"""ZSCL's reference set: images and sentences on which the initial CLIP's image-text logits are distilled.

ZSCL's released MTIL recipe (``mtil/scripts/ZSCL.sh``: ``--ref-dataset ImageNet --ref-sentences
conceptual_captions``) distils on ImageNet training images (with the evaluation transform) against
the Conceptual Captions validation captions: ``imagenet_cc_reference``. Its CIL code uses CC images
as well, whose links are largely dead today; ``coco_reference`` (MS-COCO 2014 images with their
Karpathy captions) is the real-data alternative. The offline default is the synthetic world's
pretraining distribution (known shapes on seen colour pairs, with captions), which plays the role
of "the data CLIP was pretrained on".

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
from .errors import DatasetMissing
from .folders import ImageFiles
from .karpathy import COCO_KARPATHY_FILE, read_karpathy
from .stages import TensorImages, model_input
from .vision_datasets import DATASET_FOLDERS, read_image_folder


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
    images = TensorImages(model_input(made.images, clip), torch.arange(len(made)))
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
    entries = [
        entry
        for split in splits
        for entry in read_karpathy(root, COCO_KARPATHY_FILE, split, captions_per_image, "coco", cache_dir)
    ]
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


CC_VALIDATION_TSV = "Validation_GCC-1.1.0-Validation.tsv"
CC_GATHERED_CSV = "Validation_GCC-1.1.0-Validation_output.csv"  # ZSCL's gather_cc.py output
CC_HINT = (
    "Conceptual Captions' validation captions are a text file: download {name} from\n"
    '  https://ai.google.com/research/ConceptualCaptions/download ("Validation split", 15,840 lines of\n'
    "  caption<TAB>image URL; the images are not needed) and put it at {path},\n"
    "  or point reference.captions_file at it. ZSCL's own file is gather_cc.py's output\n"
    "  Validation_GCC-1.1.0-Validation_output.csv (title<TAB>filepath with a header: the captions whose\n"
    "  images downloaded in 2022); it is read the same way when you have it."
)


def read_cc_captions(path: str | os.PathLike, max_captions: int | None = None) -> list[str]:
    """The captions of a Conceptual Captions file: Google's TSV (``caption<TAB>url`` per line, no header)
    or gather_cc.py's output (a ``title<TAB>filepath`` header, then one row per downloaded image)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"reference captions file not found: {path}.\n" + CC_HINT.format(name=path.name, path=path)
        )
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    column = 0
    if lines and "title" in lines[0].split("\t"):  # gather_cc.py's output: header row names the columns
        column = lines[0].split("\t").index("title")
        lines = lines[1:]
    captions = [line.split("\t")[column].strip() for line in lines]
    captions = [caption for caption in captions if caption]
    if not captions:
        raise ValueError(f"{path} has no captions (expected caption<TAB>url lines).")
    return captions[:max_captions] if max_captions is not None else captions


def imagenet_cc_reference(
    clip: ClipBundle,
    root: str | os.PathLike,
    captions_file: str | os.PathLike,
    max_images: int | None = None,
    max_captions: int | None = None,
) -> ReferenceSet:
    """ZSCL's MTIL reference set: ImageNet training images (``<root>/imagenet/train/<wnid>/``, as
    ``vision_datasets`` reads ImageNet) through the evaluation transform, and every caption of the
    Conceptual Captions validation file ``captions_file``. ``max_images`` keeps that many images evenly
    spaced over ImageFolder's (class-sorted) order, so every class keeps some (smaller runs; ZSCL uses
    all of them)."""
    root = Path(root).expanduser()
    images = read_image_folder("imagenet", root / DATASET_FOLDERS["imagenet"] / "train", root)
    sentences = read_cc_captions(captions_file, max_captions)
    total = len(images.paths)
    count = total if max_images is None else min(int(max_images), total)
    keep = [i * total // count for i in range(count)]
    files = ImageFiles(
        [images.paths[i] for i in keep], [images.labels[i] for i in keep], clip.preprocess_eval, "imagenet", root
    )
    return ReferenceSet(files, sentences)
