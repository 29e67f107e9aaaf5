"""The classification datasets of ZSCL's benchmarks: train and test images with readable class names.

MTIL's eleven datasets (aircraft, caltech101, cifar100, dtd, eurosat, flowers, food, mnist, oxford_pet,
stanford_cars, sun397), CIL's cifar100 and tinyimagenet, plus cifar10 and imagenet: each is one record
in :mod:`.datasets` (its folder, reader, split rule, class-name clean-up, templates and fetch hint).
``root`` is the folder that holds each dataset in torchvision's layout, so one data folder serves
them all. Nothing is downloaded here (``scripts/prepare_data.py`` does that); a missing dataset raises
:class:`DatasetMissing` naming what is missing and how to get it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import datasets
from .datasets.flowers import Flowers102 as _Flowers102  # noqa: F401 - tests stub its md5 check here
from .datasets.readers import (  # noqa: F401 - the public names this module has always had
    SPLIT_SEED,
    SPLIT_TRAIN_FRACTION,
    ArrayImages,
    Images,
    first_per_class,
    hidden,
    random_split_indices,
    read_image_folder,
    select_classes,
    take,
)
from .errors import DatasetMissing


class _Folders(Mapping):
    """dataset name -> its folder under ``root``, read from the registry (live: later registrations show)."""

    def __getitem__(self, name: str) -> str:
        spec = datasets.find(name)
        if spec is None:
            raise KeyError(name)
        return spec.folder

    def __iter__(self) -> Iterator[str]:
        return iter(datasets.names())

    def __len__(self) -> int:
        return len(datasets.names())


DATASET_FOLDERS: Mapping[str, str] = _Folders()
DATASETS = datasets.names()  # the built-in datasets


@dataclass
class ClassificationData:
    """One dataset: train and test images labelled 0..len(classnames)-1."""

    name: str
    classnames: list[str]
    train: Images
    test: Images


def load_vision_dataset(
    name: str,
    root: str | os.PathLike,
    train_transform: Callable | None = None,
    test_transform: Callable | None = None,
    max_train_per_class: int | None = None,
    max_test_per_class: int | None = None,
    raw_names: bool = False,
) -> ClassificationData:
    """Dataset ``name`` under ``root`` with its split rule; transforms apply to RGB PIL images.

    ``raw_names``: CIFAR's class names as its meta file stores them (``aquarium_fish``, as ZSCL's CIL
    code prompts them) instead of MTIL's spaced ones; the other datasets' names are the same either way.

    ``max_*_per_class`` keep the first N images of every class in the split's order (smoke runs;
    for the randomly split datasets that order is the split's random permutation).
    """
    spec = datasets.get(name)
    root = Path(root).expanduser()
    train, test, stored = spec.read(root)
    classnames = spec.class_names(stored, raw=raw_names)
    for part, images in (("train", train), ("test", test)):
        if len(images) == 0:
            raise DatasetMissing(name, root / spec.folder, root, f"no {part} images")
        if max(images.labels) >= len(classnames) or min(images.labels) < 0:
            raise ValueError(f"{name}: {part} labels outside 0..{len(classnames) - 1}")
    return ClassificationData(
        name,
        classnames,
        take(train, first_per_class(train.labels, max_train_per_class), transform=train_transform),
        take(test, first_per_class(test.labels, max_test_per_class), transform=test_transform),
    )
