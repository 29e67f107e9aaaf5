"""An optional pre-decoded image cache: decode (and resize) every image once, keep uint8 tensors in memory.

Real datasets decode a JPEG and resize it at every epoch and every evaluation; for a small
dataset that CPU work repeats many times (MTIL trains ~6 epochs per dataset and evaluates
every test set after every stage). :class:`DecodedImages` runs the deterministic head of the
dataset's transform (resizes, centre crops, RGB conversion) once per image and stores the result
as a uint8 tensor (3 bytes per pixel: 150 KB at 224 px); the rest of the transform (random
crops, flips, then the float conversion and normalisation) runs per sample on the tensor. With
crop/flip augmentations the output equals the original pipeline's for the same random draws.

Memory is the caller's choice: ``trainer.decoded_cache`` / ``eval.decoded_cache`` are off by
default and meant for small datasets.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.transforms.functional import pil_to_tensor

from ..preemption import ignore_stop_signals

log = logging.getLogger(__name__)
DETERMINISTIC = (T.Resize, T.CenterCrop)


def _is_rgb_conversion(step: Callable) -> bool:
    # open_clip's pipelines call image.convert("RGB") through a function named _convert_to_rgb;
    # our datasets already open every image as RGB.
    return "convert_to_rgb" in getattr(step, "__name__", "")


def split_transform(transform: Callable | None) -> tuple[list[Callable], list[Callable]]:
    """(deterministic PIL head, per-sample tensor tail) of a ``transforms.Compose`` (or a single step)."""
    steps = list(getattr(transform, "transforms", [transform] if transform is not None else []))
    head: list[Callable] = []
    while steps and (isinstance(steps[0], DETERMINISTIC) or _is_rgb_conversion(steps[0])):
        head.append(steps.pop(0))
    tail: list[Callable] = []
    for step in steps:
        if _is_rgb_conversion(step) or isinstance(step, T.PILToTensor):
            continue
        tail.append(T.ConvertImageDtype(torch.float32) if isinstance(step, T.ToTensor) else step)
    if not any(isinstance(step, T.ConvertImageDtype) for step in tail):
        tail.append(T.ConvertImageDtype(torch.float32))  # a transform without ToTensor still yields floats
    return head, tail


class _DecodeHead(Dataset):
    """The source's images through the deterministic head, as uint8 tensors (run in loader workers)."""

    def __init__(self, raw: Dataset, head: list[Callable]):
        self.raw, self.head = raw, T.Compose(head)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: int):
        image, label = self.raw[index]
        return pil_to_tensor(self.head(image)), int(label)


def decoded(dataset: Dataset, num_workers: int = 0) -> Dataset:
    """``dataset`` pre-decoded when it decodes images through a transform; else itself (tensors in memory,
    merged stages)."""
    if getattr(dataset, "transform", None) is None:
        return dataset
    return DecodedImages(dataset, num_workers)


class DecodedImages(Dataset):
    """``dataset`` (any image dataset with a ``transform`` attribute) with its images decoded once."""

    def __init__(self, dataset: Dataset, num_workers: int = 0):
        if not hasattr(dataset, "transform"):
            raise TypeError(f"{type(dataset).__name__} has no `transform`: it cannot be pre-decoded.")
        head, tail = split_transform(dataset.transform)
        raw = copy.copy(dataset)
        raw.transform = None  # the PIL image as the dataset opens it
        # Images differ in size before the head resizes them: decode one at a time (several workers).
        loader = DataLoader(
            _DecodeHead(raw, head), batch_size=None, num_workers=num_workers, worker_init_fn=ignore_stop_signals
        )  # the main process owns SIGTERM/SIGINT
        self.images, labels = [], []
        for image, label in loader:
            self.images.append(image)
            labels.append(label)
        self.labels = torch.tensor(labels)
        self.tail = T.Compose(tail)
        self.cache_key = ("decoded", getattr(dataset, "cache_key", id(dataset)))
        megabytes = sum(image.numel() for image in self.images) / 2**20
        log.info("decoded %d images once (%.0f MB of uint8 in memory)", len(self.images), megabytes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.tail(self.images[index]), int(self.labels[index])
