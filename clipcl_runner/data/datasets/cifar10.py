"""CIFAR-10: the official train / test batches, read from the pickles (torchvision's class insists on
the official files' md5 sums). Also what CIFAR-100 shares: the reader and CLIP's CIFAR templates."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .readers import ArrayImages, dataset_folder, unpickle
from .registry import DatasetSpec, ReadResult, register, torchvision_hint

CIFAR_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)


def cifar_reader(name: str, batches: dict[str, Sequence[str]], label_key: str, meta: str, names_key: str):
    """A reader of CIFAR's python pickles: rows of 1024 R, 1024 G, 1024 B bytes."""

    def read(root: Path) -> ReadResult:
        folder = dataset_folder(name, root)

        def images(files: Sequence[str]) -> ArrayImages:
            entries = [unpickle(name, root, folder / f) for f in files]
            data = np.concatenate([np.asarray(e["data"], dtype=np.uint8) for e in entries])
            labels = [y for e in entries for y in e[label_key]]
            return ArrayImages(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels)

        classes = list(unpickle(name, root, folder / meta)[names_key])
        return images(batches["train"]), images(batches["test"]), classes

    return read


SPEC = register(
    DatasetSpec(
        name="cifar10",
        folder="cifar-10-batches-py",
        read=cifar_reader(
            "cifar10",
            {"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]},
            "labels",
            "batches.meta",
            "label_names",
        ),
        templates=CIFAR_TEMPLATES,
        raw_names=True,
        download="CIFAR10",
        split="official train / test batches",
        fetch_hint=torchvision_hint(
            "CIFAR-10",
            "<root>/cifar-10-batches-py/data_batch_1 ... test_batch, batches.meta",
            "fetch https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and untar it into <root>",
        ),
    )
)
