"""Karpathy-split image-text retrieval probes: COCO-1k (5 folds of the test 5k), COCO-5k and Flickr30K-1k,
and the paper's probe list (these plus tiered-ImageNet zero-shot).

On-disk layout: ``<coco root>/dataset_coco.json`` with ``<coco root>/val2014/*.jpg``;
``<flickr root>/dataset_flickr30k.json`` with ``<flickr root>/flickr30k-images/*.jpg``. The split files
are parsed once and cached under ``cache_dir`` (:mod:`.json_cache`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..models import ClipBundle
from .errors import DatasetMissing
from .folders import ImageFiles, imagenet_folder_probe
from .json_cache import cached, field, load_json
from .stages import RetrievalProbe

log = logging.getLogger(__name__)

COCO_KARPATHY_FILE = "dataset_coco.json"
FLICKR_KARPATHY_FILE = "dataset_flickr30k.json"
FLICKR_IMAGES_DIR = "flickr30k-images"


def read_karpathy(
    root: str | os.PathLike,
    karpathy_file: str | os.PathLike,
    split: str = "test",
    captions_per_image: int = 5,
    dataset: str = "coco",
    cache_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """Images of ``split`` in file order: ``{"filepath", "filename", "captions"}``, captions = the first
    ``captions_per_image`` sentences' ``raw`` text, lower-cased and stripped."""
    root = Path(root).expanduser()
    path = root / karpathy_file
    if not path.is_file():
        raise DatasetMissing(dataset, path, root, "Karpathy split file")

    def build():
        entries = []
        for entry in field(load_json(path, dataset, root), "images", path, dataset, root, "the split file"):
            if field(entry, "split", path, dataset, root, "an image entry") != split:
                continue
            sentences = field(entry, "sentences", path, dataset, root, "an image entry")[:captions_per_image]
            captions = [field(s, "raw", path, dataset, root, "a sentence").lower().strip() for s in sentences]
            filename = field(entry, "filename", path, dataset, root, "an image entry")
            entries.append({"filepath": entry.get("filepath", ""), "filename": filename, "captions": captions})
        return entries

    params = {"split": split, "captions_per_image": captions_per_image}
    return cached(cache_dir, f"karpathy_{Path(karpathy_file).stem}_{split}", [path], params, build)


def karpathy_retrieval_probe(
    clip: ClipBundle,
    name: str,
    root: str | os.PathLike,
    karpathy_file: str | os.PathLike,
    images_subdir_by_filepath: bool,
    split: str = "test",
    max_images: int | None = None,
    folds: int = 1,
    images_dir: str = "",
    captions_per_image: int = 5,
    cache_dir: str | os.PathLike | None = None,
    dataset: str | None = None,
) -> RetrievalProbe:
    """Image<->text retrieval on a Karpathy split: images in file order, 5 captions each.

    Image paths: ``root/<entry filepath>/<filename>`` when ``images_subdir_by_filepath`` (COCO),
    else ``root/images_dir/<filename>`` (Flickr30K: ``flickr30k-images``). ``max_images`` keeps the
    first N images; ``folds`` = 5 gives COCO's 1k protocol (5 folds of 1k), 1 the full set.
    Captions are not truncated here: open_clip's tokenizer cuts every text to the model's context
    length (77 for the OpenAI models: SOT + at most 75 tokens + EOT).
    """
    root = Path(root).expanduser()
    dataset = dataset or ("flickr30k" if "flickr" in str(karpathy_file).lower() else "coco")
    entries = read_karpathy(root, karpathy_file, split, captions_per_image, dataset, cache_dir)
    if max_images is not None:
        entries = entries[:max_images]
    if not entries:
        raise ValueError(f"{root / karpathy_file} has no images in split '{split}'.")
    if folds < 1 or len(entries) % folds:
        raise ValueError(f"{len(entries)} images of {name} cannot be split into {folds} equal folds.")
    paths, captions, text_to_image = [], [], []
    for index, entry in enumerate(entries):
        if not entry["captions"]:
            raise ValueError(f"{entry['filename']} has no caption in {root / karpathy_file}.")
        if len(entry["captions"]) < captions_per_image:
            log.warning("%s has only %d captions", entry["filename"], len(entry["captions"]))
        folder = entry["filepath"] if images_subdir_by_filepath else images_dir
        paths.append(root / folder / entry["filename"])
        captions.extend(entry["captions"])
        text_to_image.extend([index] * len(entry["captions"]))
    for folder in {p.parent for p in paths}:
        if not folder.is_dir():
            raise DatasetMissing(dataset, folder, root, "image folder")
    images = ImageFiles(paths, [0] * len(paths), clip.preprocess_eval, dataset, root)
    return RetrievalProbe(name, images, captions, torch.tensor(text_to_image, dtype=torch.long), folds)


def coco_retrieval_probe(
    clip: ClipBundle,
    root: str | os.PathLike,
    name: str = "coco1k",
    folds: int = 5,
    split: str = "test",
    max_images: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> RetrievalProbe:
    """COCO Karpathy test-5k: ``folds=5`` = COCO-1k (5 folds of 1k, averaged), ``folds=1`` = COCO-5k."""
    return karpathy_retrieval_probe(
        clip, name, root, COCO_KARPATHY_FILE, True, split, max_images, folds, cache_dir=cache_dir, dataset="coco"
    )


def flickr30k_retrieval_probe(
    clip: ClipBundle,
    root: str | os.PathLike,
    name: str = "flickr30k",
    split: str = "test",
    max_images: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> RetrievalProbe:
    """Flickr30K Karpathy test-1k (1000 images, 5 captions each), images in ``root/flickr30k-images/``."""
    return karpathy_retrieval_probe(
        clip,
        name,
        root,
        FLICKR_KARPATHY_FILE,
        False,
        split,
        max_images,
        1,
        FLICKR_IMAGES_DIR,
        cache_dir=cache_dir,
        dataset="flickr30k",
    )


def paper_probes(
    clip: ClipBundle,
    coco_root: str | os.PathLike | None = None,
    flickr_root: str | os.PathLike | None = None,
    imagenet_root: str | os.PathLike | None = None,
    class_list: str | os.PathLike = "tiered_imagenet_test",
    zero_shot_templates: Sequence[str] = ("this is a photo of {} .",),
    imagenet_split_dir: str | None = None,
    max_per_class: int | None = None,
    coco_folds: int = 5,
    cache_dir: str | os.PathLike | None = None,
) -> list:
    """The paper's forgetting probes as one list (a root left ``None`` skips that probe):
    zero-shot on tiered-ImageNet's test classes, COCO retrieval (1k folds or 5k), Flickr30K 1k."""
    probes: list = []
    if imagenet_root is not None:
        probes.append(
            imagenet_folder_probe(
                clip,
                "tiered_imagenet",
                imagenet_root,
                class_list,
                list(zero_shot_templates),
                imagenet_split_dir,
                max_per_class,
            )
        )
    if coco_root is not None:
        coco_name = "coco1k" if coco_folds > 1 else "coco5k"
        probes.append(coco_retrieval_probe(clip, coco_root, coco_name, coco_folds, cache_dir=cache_dir))
    if flickr_root is not None:
        probes.append(flickr30k_retrieval_probe(clip, flickr_root, cache_dir=cache_dir))
    return probes
