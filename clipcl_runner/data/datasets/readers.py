"""What the dataset readers share: in-memory images, subsets, ZSCL's random split, torchvision adapters.

Where torchvision has a class for a dataset it parses the dataset's own annotation files
(``download=False``); we keep only its (image path, label) pairs and decode images through
:func:`errors.open_image`, so that every dataset yields RGB images, names a missing or corrupt file,
and pickles cheaply into DataLoader workers. Hidden entries (names starting with '.', e.g. a
``.ipynb_checkpoints`` folder or macOS ``._*`` files) are never classes or images in the readers that
list folders, where torchvision would count them.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets as tv
from torchvision.datasets import folder as tv_folder

from ..errors import DatasetMissing
from ..folders import ImageFiles
from . import registry

SPLIT_SEED, SPLIT_TRAIN_FRACTION = 42, 0.8  # ZSCL's split of datasets without an official one


class ArrayImages(Dataset):
    """uint8 images in memory, (N, H, W) grey or (N, H, W, 3) RGB; yields ``(transform(RGB PIL), label)``."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], transform: Callable | None = None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = np.ascontiguousarray(images, dtype=np.uint8)
        self.labels = [int(label) for label in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index]).convert("RGB")  # MNIST is grey: 3 equal channels
        return (self.transform(image) if self.transform is not None else image), self.labels[index]


Images = ImageFiles | ArrayImages


def take(
    images: Images, indices: Sequence[int], labels: Sequence[int] | None = None, transform: Callable | None = None
) -> Images:
    """The images at ``indices`` (with new ``labels`` if given) as a new dataset of the same kind."""
    indices = [int(i) for i in indices]
    labels = [images.labels[i] for i in indices] if labels is None else list(labels)
    if isinstance(images, ImageFiles):
        return ImageFiles([images.paths[i] for i in indices], labels, transform, images.dataset, images.root)
    return ArrayImages(images.images[indices], labels, transform)


def first_per_class(labels: Sequence[int], limit: int | None) -> list[int]:
    """Indices of the first ``limit`` images of every class, in dataset order (all when ``limit`` is None)."""
    if limit is None:
        return list(range(len(labels)))
    seen: dict[int, int] = {}
    keep = []
    for index, label in enumerate(labels):
        if seen.get(label, 0) < limit:
            seen[label] = seen.get(label, 0) + 1
            keep.append(index)
    return keep


def select_classes(
    images: Images, classes: Sequence[int], transform: Callable | None = None, limit: int | None = None
) -> Images:
    """The images of ``classes`` only, relabelled by position in ``classes`` (class-incremental steps)."""
    local = {int(c): i for i, c in enumerate(classes)}
    chosen = [i for i, label in enumerate(images.labels) if label in local]
    chosen = [chosen[i] for i in first_per_class([images.labels[i] for i in chosen], limit)]
    return take(images, chosen, [local[images.labels[i]] for i in chosen], transform)


def random_split_indices(count: int, train_fraction: float = SPLIT_TRAIN_FRACTION, seed: int = SPLIT_SEED):
    """ZSCL's ``torch.utils.data.random_split(d, [int(0.8 n), n - int(0.8 n)], Generator().manual_seed(42))``."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = int(train_fraction * count)
    return order[:cut], order[cut:]


def split_80_20(images: ImageFiles) -> tuple[ImageFiles, ImageFiles]:
    """ZSCL's split of a dataset without an official one: a seeded random 80 % train, the rest test."""
    train, test = random_split_indices(len(images))
    return cast(ImageFiles, take(images, train)), cast(ImageFiles, take(images, test))  # take keeps the kind


def hidden(path: Path, below: Path) -> bool:
    """Whether ``path`` or a folder between ``below`` and it is hidden (its name starts with '.')."""
    return any(part.startswith(".") for part in Path(path).relative_to(below).parts)


class VisibleFolders:
    """An ImageFolder whose classes and images skip hidden folders and files (torchvision lists them)."""

    def find_classes(self, directory):
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {name: index for index, name in enumerate(classes)}

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        samples = tv_folder.make_dataset(directory, class_to_idx, extensions, is_valid_file, allow_empty)
        return [(path, label) for path, label in samples if not hidden(Path(path), Path(directory))]


class VisibleImageFolder(VisibleFolders, tv.ImageFolder):
    pass


# --------------------------------------------------------------------------- reader pieces
def dataset_folder(name: str, root: Path) -> Path:
    """``root / <the spec's folder>``; DatasetMissing when it is not there."""
    folder = root / registry.get(name).folder
    if not folder.is_dir():
        raise DatasetMissing(name, folder, root)
    return folder


def torchvision_set(name: str, root: Path, factory: Callable, **kwargs):
    """A torchvision dataset class on ``root`` without download; its errors become DatasetMissing."""
    dataset_folder(name, root)
    try:
        return factory(str(root), download=False, **kwargs)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise DatasetMissing(name, root / registry.get(name).folder, root, f"torchvision: {error}") from None
    except FileNotFoundError as error:  # a split or annotation file the class opens
        raise DatasetMissing(
            name, error.filename or root / registry.get(name).folder, root, "annotation file"
        ) from None


def files_of(name: str, root: Path, dataset) -> ImageFiles:
    """The (path, label) pairs a torchvision dataset parsed (attribute names of torchvision >= 0.13)."""
    if hasattr(dataset, "samples"):  # ImageFolder family: EuroSAT, ImageNet
        pairs = list(dataset.samples)
    elif hasattr(dataset, "_samples"):  # StanfordCars
        pairs = list(dataset._samples)
    elif hasattr(dataset, "_image_files"):  # FGVCAircraft, DTD, Flowers102, Food101, SUN397
        pairs = list(zip(dataset._image_files, dataset._labels, strict=True))
    elif hasattr(dataset, "_images"):  # OxfordIIITPet
        pairs = list(zip(dataset._images, dataset._labels, strict=True))
    else:
        raise TypeError(f"cannot read the image list of torchvision's {type(dataset).__name__}")
    return ImageFiles([p for p, _ in pairs], [int(y) for _, y in pairs], None, name, root)


def two_splits(name: str, factory: Callable, train: dict, test: dict) -> Callable[[Path], registry.ReadResult]:
    """A reader for a torchvision class with an official split: ``factory(**train)`` / ``factory(**test)``."""

    def read(root: Path) -> registry.ReadResult:
        sets = [torchvision_set(name, root, factory, **kwargs) for kwargs in (train, test)]
        if list(sets[0].classes) != list(sets[1].classes):
            raise ValueError(f"{name}: the train and test splits list different classes")
        return files_of(name, root, sets[0]), files_of(name, root, sets[1]), list(sets[0].classes)

    return read


def read_image_folder(name: str, folder: Path, root: Path) -> ImageFiles:
    """One ImageFolder split (``folder/<class>/<image>``, hidden entries skipped) as ImageFiles."""
    if not folder.is_dir():
        raise DatasetMissing(name, folder, root, "one folder per class")
    try:
        return files_of(name, root, VisibleImageFolder(str(folder)))
    except FileNotFoundError as error:  # no class folder / no image
        raise DatasetMissing(name, folder, root, str(error)) from None


def train_test_folders(name: str, train: str = "train", test: str = "test") -> Callable[[Path], registry.ReadResult]:
    """A reader for ``<folder>/<train>/<class>/*`` and ``<folder>/<test>/<class>/*`` (sorted class folders,
    the same in both): the simplest layout for a new dataset."""

    def read(root: Path) -> registry.ReadResult:
        base = dataset_folder(name, root)
        splits = [read_image_folder(name, base / part, root) for part in (train, test)]
        classes = [sorted({Path(p).parent.name for p in split.paths}) for split in splits]
        if classes[0] != classes[1]:
            raise DatasetMissing(name, base / test, root, f"its class folders differ from those of {base / train}")
        return splits[0], splits[1], classes[0]

    return read


def unpickle(name: str, root: Path, path: Path) -> dict:
    if not path.is_file():
        raise DatasetMissing(name, path, root)
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise DatasetMissing(name, path, root, f"unreadable: {error}") from None
