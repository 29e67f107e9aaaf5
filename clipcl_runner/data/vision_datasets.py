"""The classification datasets of ZSCL's benchmarks: train and test images with readable class names.

MTIL's eleven datasets (aircraft, caltech101, cifar100, dtd, eurosat, flowers, food, mnist, oxford_pet,
stanford_cars, sun397), CIL's cifar100 and tinyimagenet, plus cifar10 and imagenet. ``root`` is the
folder that holds each dataset in torchvision's layout (``DATASET_FOLDERS``), so one data folder serves
them all. Nothing is downloaded here (``scripts/prepare_data.py`` does that); a missing dataset raises
:class:`DatasetMissing` naming what is missing and how to get it.

Where torchvision has a class for a dataset it parses the dataset's own annotation files
(``download=False``); we keep only its (image path, label) pairs and decode images through
:func:`errors.open_image`, so that every dataset yields RGB images (Caltech-101 and SUN397 have
grayscale ones), names a missing or corrupt file, and pickles cheaply into DataLoader workers.
CIFAR and MNIST live in memory as uint8 arrays (:class:`ArrayImages`); CIFAR's pickles are read
directly because torchvision's CIFAR classes insist on the official files' md5 sums.

Splits (ZSCL's, from its ``datasets/collections.py``):
  aircraft      torchvision FGVCAircraft, variant level (100 classes): split ``train`` / ``test``
  caltech101    torchvision Caltech101 (101 classes, no BACKGROUND_Google): no official split; ZSCL's
                random 80/20 split (``random_split`` with ``torch.Generator().manual_seed(42)``)
  cifar10/100   the official train / test batches
  dtd           partition 1: ``train1`` / ``test1`` (ZSCL trains on train only, not train+val)
  eurosat       torchvision EuroSAT (sorted folders and files): ZSCL's random 80/20 split, seed 42
                (not the paper protocol's last-500-per-class split of ``folders.eurosat_sessions``)
  flowers       the official ``train`` (10 per class) / ``test`` split of setid.mat
  food          the official ``train`` / ``test`` lists
  mnist         the official train / test files
  oxford_pet    ``trainval`` / ``test``
  stanford_cars the official ``train`` / ``test`` (cars_test_annos_withlabels.mat)
  sun397        no official split in torchvision; ZSCL's random 80/20 split, seed 42, of all images.
                torchvision lists the files in file-system order, which made ZSCL's split depend on the
                machine; we sort the paths first, so ours is the same everywhere.
  tinyimagenet  ``train/<wnid>/images`` / ``val`` (val_annotations.txt) as test; labels in wnids.txt order
  imagenet      ``imagenet/train/<wnid>`` / ``imagenet/val/<wnid>`` (val sorted into class folders)

Hidden entries (names starting with '.', e.g. a ``.ipynb_checkpoints`` folder or macOS ``._*`` files)
are never classes or images in the readers that list folders (caltech101, eurosat, sun397,
tinyimagenet, imagenet), where torchvision would count them.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets as tv
from torchvision.datasets import folder as tv_folder

from . import prompts
from .errors import DatasetMissing
from .folders import ImageFiles, list_images

# Folder (under ``root``) whose presence says the dataset is there: torchvision's own layout.
DATASET_FOLDERS: dict[str, str] = {
    "aircraft": "fgvc-aircraft-2013b",
    "caltech101": "caltech101/101_ObjectCategories",
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "dtd": "dtd/dtd",
    "eurosat": "eurosat/2750",
    "flowers": "flowers-102",
    "food": "food-101",
    "mnist": "MNIST/raw",
    "oxford_pet": "oxford-iiit-pet",
    "stanford_cars": "stanford_cars",
    "sun397": "SUN397",
    "tinyimagenet": "tiny-imagenet-200",
    "imagenet": "imagenet",
}
DATASETS = tuple(DATASET_FOLDERS)
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


@dataclass
class ClassificationData:
    """One dataset: train and test images labelled 0..len(classnames)-1."""

    name: str
    classnames: list[str]
    train: Images
    test: Images


def take(images: Images, indices: Sequence[int], labels: Sequence[int] | None = None, transform: Callable | None = None) -> Images:
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


def select_classes(images: Images, classes: Sequence[int], transform: Callable | None = None, limit: int | None = None) -> Images:
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


def hidden(path: Path, below: Path) -> bool:
    """Whether ``path`` or a folder between ``below`` and it is hidden (its name starts with '.')."""
    return any(part.startswith(".") for part in Path(path).relative_to(below).parts)


class _VisibleFolders:
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


class _ImageFolder(_VisibleFolders, tv.ImageFolder):
    pass


class _EuroSAT(_VisibleFolders, tv.EuroSAT):
    pass


# --------------------------------------------------------------------------- readers (no transforms)
def _base(name: str, root: Path) -> Path:
    folder = root / DATASET_FOLDERS[name]
    if not folder.is_dir():
        raise DatasetMissing(name, folder, root)
    return folder


def _torchvision(name: str, root: Path, factory: Callable, **kwargs):
    """A torchvision dataset class on ``root`` without download; its errors become DatasetMissing."""
    _base(name, root)
    try:
        return factory(str(root), download=False, **kwargs)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise DatasetMissing(name, root / DATASET_FOLDERS[name], root, f"torchvision: {error}") from None
    except FileNotFoundError as error:  # a split or annotation file the class opens
        raise DatasetMissing(name, error.filename or root / DATASET_FOLDERS[name], root, "annotation file") from None


def _files(name: str, root: Path, dataset) -> ImageFiles:
    """The (path, label) pairs a torchvision dataset parsed (attribute names of torchvision >= 0.13)."""
    if hasattr(dataset, "samples"):  # ImageFolder family: EuroSAT, ImageNet
        pairs = list(dataset.samples)
    elif hasattr(dataset, "_samples"):  # StanfordCars
        pairs = list(dataset._samples)
    elif hasattr(dataset, "_image_files"):  # FGVCAircraft, DTD, Flowers102, Food101, SUN397
        pairs = list(zip(dataset._image_files, dataset._labels))
    elif hasattr(dataset, "_images"):  # OxfordIIITPet
        pairs = list(zip(dataset._images, dataset._labels))
    else:
        raise TypeError(f"cannot read the image list of torchvision's {type(dataset).__name__}")
    return ImageFiles([p for p, _ in pairs], [int(y) for _, y in pairs], None, name, root)


def _two_splits(name: str, root: Path, factory: Callable, train: dict, test: dict):
    sets = [_torchvision(name, root, factory, **kwargs) for kwargs in (train, test)]
    if list(sets[0].classes) != list(sets[1].classes):
        raise ValueError(f"{name}: the train and test splits list different classes")
    return _files(name, root, sets[0]), _files(name, root, sets[1]), list(sets[0].classes)


def _split_80_20(images: ImageFiles) -> tuple[ImageFiles, ImageFiles]:
    train, test = random_split_indices(len(images))
    return take(images, train), take(images, test)


def _read_aircraft(root):
    train, test, classes = _two_splits("aircraft", root, tv.FGVCAircraft, {"split": "train"}, {"split": "test"})
    return train, test, prompts.spaced(classes)


def _read_caltech101(root):
    dataset = _torchvision("caltech101", root, tv.Caltech101)
    folder = Path(dataset.root) / "101_ObjectCategories"
    # torchvision's listing (sorted folders; files image_0001.jpg .. image_<n>.jpg, n = entries in the
    # folder), with hidden folders and files left out
    categories = sorted(
        d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name != "BACKGROUND_Google"
    )
    paths, labels = [], []
    for label, category in enumerate(categories):
        files = sorted(f.name for f in (folder / category).iterdir() if not f.name.startswith("."))
        paths += [folder / category / f"image_{i:04d}.jpg" for i in range(1, len(files) + 1)]
        labels += [label] * len(files)
    train, test = _split_80_20(ImageFiles(paths, labels, None, "caltech101", root))
    return train, test, prompts.caltech101_names(categories)


def _unpickle(name: str, root: Path, path: Path) -> dict:
    if not path.is_file():
        raise DatasetMissing(name, path, root)
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise DatasetMissing(name, path, root, f"unreadable: {error}") from None


def _read_cifar(name: str, root: Path, batches: dict, label_key: str, meta: str, names_key: str, raw: bool = False):
    folder = _base(name, root)

    def read(files: Sequence[str]) -> ArrayImages:
        entries = [_unpickle(name, root, folder / f) for f in files]
        data = np.concatenate([np.asarray(e["data"], dtype=np.uint8) for e in entries])
        labels = [y for e in entries for y in e[label_key]]
        return ArrayImages(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels)

    classes = list(_unpickle(name, root, folder / meta)[names_key])
    return read(batches["train"]), read(batches["test"]), classes if raw else prompts.spaced(classes)


def _read_cifar10(root, raw: bool = False):
    batches = {"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]}
    return _read_cifar("cifar10", root, batches, "labels", "batches.meta", "label_names", raw)


def _read_cifar100(root, raw: bool = False):
    return _read_cifar("cifar100", root, {"train": ["train"], "test": ["test"]}, "fine_labels", "meta",
                       "fine_label_names", raw)


def _read_dtd(root):
    train, test, classes = _two_splits("dtd", root, tv.DTD, {"split": "train", "partition": 1}, {"split": "test", "partition": 1})
    return train, test, prompts.spaced(classes)


def _read_eurosat(root):
    dataset = _torchvision("eurosat", root, _EuroSAT)  # an ImageFolder: sorted folders, sorted files
    return (*_split_80_20(_files("eurosat", root, dataset)), prompts.eurosat_names(dataset.classes))


class _Flowers102(tv.Flowers102):
    classes = prompts.FLOWERS_NAMES  # ZSCL's names (torchvision >= 0.18 has them, with a stray "?")


def _read_flowers(root):
    train, test, classes = _two_splits("flowers", root, _Flowers102, {"split": "train"}, {"split": "test"})
    return train, test, list(classes)


def _read_food(root):
    train, test, classes = _two_splits("food", root, tv.Food101, {"split": "train"}, {"split": "test"})
    return train, test, prompts.spaced(classes)


def _read_mnist(root):
    def read(train: bool) -> ArrayImages:
        dataset = _torchvision("mnist", root, tv.MNIST, train=train)
        return ArrayImages(dataset.data.numpy(), dataset.targets.tolist())

    return read(True), read(False), prompts.spaced(tv.MNIST.classes)


def _read_oxford_pet(root):
    train, test, classes = _two_splits("oxford_pet", root, tv.OxfordIIITPet, {"split": "trainval"}, {"split": "test"})
    return train, test, prompts.spaced(classes)


def _read_stanford_cars(root):
    train, test, classes = _two_splits("stanford_cars", root, tv.StanfordCars, {"split": "train"}, {"split": "test"})
    return train, test, prompts.spaced(classes)


def _read_sun397(root):
    """torchvision's SUN397 listing (classes of ClassName.txt; every ``sun_*.jpg`` below, labelled by its
    folders), read here so that hidden folders (``.ipynb_checkpoints``) are skipped, not a KeyError."""
    base = _base("sun397", root)
    names_file = base / "ClassName.txt"
    if not names_file.is_file():
        raise DatasetMissing("sun397", names_file, root)
    classes = [line[3:].strip() for line in names_file.read_text().splitlines() if line.strip()]
    label_of = {name: label for label, name in enumerate(classes)}
    pairs = []
    for path in base.rglob("sun_*.jpg"):
        if hidden(path, base):
            continue
        folder = "/".join(path.relative_to(base).parts[1:-1])
        if folder not in label_of:
            raise ValueError(f"sun397: {path} is in folder '{folder}', which {names_file} does not list.")
        pairs.append((str(path), label_of[folder]))
    pairs.sort()  # file-system order -> sorted
    images = ImageFiles([p for p, _ in pairs], [y for _, y in pairs], None, "sun397", root)
    return (*_split_80_20(images), prompts.spaced(classes))


def _read_tinyimagenet(root):
    """TinyImageNet-200 as distributed (tiny-imagenet-200.zip); torchvision has no class for it."""
    base = _base("tinyimagenet", root)
    wnids_file = base / "wnids.txt"
    if not wnids_file.is_file():
        raise DatasetMissing("tinyimagenet", wnids_file, root)
    wnids = [line.strip() for line in wnids_file.read_text().splitlines() if line.strip()]
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    paths, labels = [], []
    for label, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        files = [f for f in list_images(folder) if not f.name.startswith(".")] if folder.is_dir() else []
        if not files:
            raise DatasetMissing("tinyimagenet", folder, root, f"training images of {wnid}")
        paths += files
        labels += [label] * len(files)
    annotations = base / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise DatasetMissing("tinyimagenet", annotations, root)
    test_paths, test_labels = [], []
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of:
            raise ValueError(f"{annotations}:{number}: expected '<file>\\t<wnid of wnids.txt>...', got {line!r}")
        test_paths.append(base / "val" / "images" / fields[0])
        test_labels.append(label_of[fields[1]])
    words = {}
    if (base / "words.txt").is_file():
        words = dict(line.split("\t", 1) for line in (base / "words.txt").read_text().splitlines() if "\t" in line)
    return (
        ImageFiles(paths, labels, None, "tinyimagenet", root),
        ImageFiles(test_paths, test_labels, None, "tinyimagenet", root),
        prompts.tinyimagenet_names(wnids, words),
    )


def _read_imagenet(root):
    base = _base("imagenet", root)
    train, val = (read_image_folder("imagenet", base / split, root) for split in ("train", "val"))
    folders = [sorted({Path(p).parent.name for p in split.paths}) for split in (train, val)]
    if folders[0] != folders[1] or len(folders[0]) != 1000:
        raise DatasetMissing(
            "imagenet", base, root, f"train/val have {len(folders[0])}/{len(folders[1])} class folders, not the same 1000"
        )
    return train, val, prompts.imagenet_names()


def read_image_folder(name: str, folder: Path, root: Path) -> ImageFiles:
    """One ImageFolder split (``folder/<class>/<image>``, hidden entries skipped) as ImageFiles."""
    if not folder.is_dir():
        raise DatasetMissing(name, folder, root, "one folder per class")
    try:
        return _files(name, root, _ImageFolder(str(folder)))
    except FileNotFoundError as error:  # no class folder / no image
        raise DatasetMissing(name, folder, root, str(error)) from None


_READERS: dict[str, Callable] = {
    "aircraft": _read_aircraft,
    "caltech101": _read_caltech101,
    "cifar10": _read_cifar10,
    "cifar100": _read_cifar100,
    "dtd": _read_dtd,
    "eurosat": _read_eurosat,
    "flowers": _read_flowers,
    "food": _read_food,
    "mnist": _read_mnist,
    "oxford_pet": _read_oxford_pet,
    "stanford_cars": _read_stanford_cars,
    "sun397": _read_sun397,
    "tinyimagenet": _read_tinyimagenet,
    "imagenet": _read_imagenet,
}


RAW_NAMES = ("cifar10", "cifar100")  # readers whose class names differ with raw_names


def load_vision_dataset(
    name: str,
    root: str | os.PathLike,
    train_transform: Callable | None = None,
    test_transform: Callable | None = None,
    max_train_per_class: int | None = None,
    max_test_per_class: int | None = None,
    raw_names: bool = False,
) -> ClassificationData:
    """Dataset ``name`` under ``root`` with ZSCL's split; transforms apply to RGB PIL images.

    ``raw_names``: CIFAR's class names as its meta file stores them (``aquarium_fish``, as ZSCL's CIL
    code prompts them) instead of MTIL's spaced ones; the other datasets' names are the same either way.

    ``max_*_per_class`` keep the first N images of every class in the split's order (smoke runs;
    for the randomly split datasets that order is the split's random permutation).
    """
    if name not in _READERS:
        raise KeyError(f"unknown dataset '{name}'; known: {', '.join(DATASETS)}")
    root = Path(root).expanduser()
    train, test, classnames = _READERS[name](root, raw=True) if raw_names and name in RAW_NAMES else _READERS[name](root)
    for part, images in (("train", train), ("test", test)):
        if len(images) == 0:
            raise DatasetMissing(name, root / DATASET_FOLDERS[name], root, f"no {part} images")
        if max(images.labels) >= len(classnames) or min(images.labels) < 0:
            raise ValueError(f"{name}: {part} labels outside 0..{len(classnames) - 1}")
    return ClassificationData(
        name,
        classnames,
        take(train, first_per_class(train.labels, max_train_per_class), transform=train_transform),
        take(test, first_per_class(test.labels, max_test_per_class), transform=test_transform),
    )
