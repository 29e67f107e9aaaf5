"""Errors of the real datasets, and the one image opener every real dataset uses.

A missing dataset fails with :class:`DatasetMissing`: what is missing, the command that checks
and prepares the dataset, and what to fetch by hand when it cannot be downloaded. A corrupt
or unreadable image fails with :class:`CorruptImage`, naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from PIL import Image

PREPARE_COMMAND = "python scripts/prepare_data.py {name} --root {root}"

# What to fetch by hand for the datasets that are not classification records of .datasets (whose
# records carry their own hints); all are printed by scripts/prepare_data.py.
OTHER_HINTS: dict[str, str] = {
    "coco": (
        "MS-COCO 2014 is not downloaded automatically. Fetch, into <root>:\n"
        "  - http://images.cocodataset.org/zips/train2014.zip  -> unzip to <root>/train2014/\n"
        "  - http://images.cocodataset.org/zips/val2014.zip    -> unzip to <root>/val2014/\n"
        "  - http://images.cocodataset.org/annotations/annotations_trainval2014.zip\n"
        "      -> <root>/annotations/instances_train2014.json and instances_val2014.json\n"
        "  - Karpathy's split file dataset_coco.json (inside caption_datasets.zip,\n"
        "      https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip) -> <root>/dataset_coco.json"
    ),
    "flickr30k": (
        "Flickr30K images are distributed by their authors on request\n"
        "  (https://shannon.cs.illinois.edu/DenotationGraph/ , form 'Flickr30k images'):\n"
        "  - flickr30k-images.tar.gz -> untar to <root>/flickr30k-images/*.jpg\n"
        "  - Karpathy's split file dataset_flickr30k.json (inside caption_datasets.zip,\n"
        "      https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip) -> <root>/dataset_flickr30k.json"
    ),
    "tiered_imagenet": (
        "tiered-ImageNet classes are ImageNet-1k (ILSVRC-2012) classes, read from an ImageNet class folder with\n"
        "  one sub-folder per class, <wnid>/*.JPEG: by default <root>/imagenet/train, the imagenet dataset's own\n"
        "  (eval.probes.tiered_imagenet.root moves it). Fetch ILSVRC2012_img_train.tar from\n"
        "  https://image-net.org/download-images.php (after registration) and extract it there. Only the classes of\n"
        "  the class list (default clipcl_runner/data/class_lists/tiered_imagenet_test.txt) are read."
    ),
}


def fetch_hint(name: str) -> str | None:
    """What to fetch by hand for ``name`` (``<root>`` stands for the folder given), or None."""
    if name in OTHER_HINTS:
        return OTHER_HINTS[name]
    from .datasets import registry  # the records load torchvision: only when a hint is needed

    spec = registry.find(name)
    return spec.hint() if spec is not None else None


class _Hints(Mapping):
    """``FETCH_HINTS[name]``: the other hints, then every dataset record's (live, read on use)."""

    def __getitem__(self, name: str) -> str:
        hint = fetch_hint(name)
        if hint is None:
            raise KeyError(name)
        return hint

    def __iter__(self) -> Iterator[str]:
        from .datasets import registry

        return iter([*OTHER_HINTS, *registry.names()])

    def __len__(self) -> int:
        return len(list(iter(self)))


FETCH_HINTS: Mapping[str, str] = _Hints()


def prepare_command(name: str, root: str | os.PathLike) -> str:
    return PREPARE_COMMAND.format(name=name, root=root)


class DatasetMissing(FileNotFoundError):
    """A dataset (or a part of it) is not where the config says it is."""

    def __init__(self, dataset: str, missing: str | os.PathLike, root: str | os.PathLike, detail: str = ""):
        self.dataset, self.missing, self.root, self.detail = dataset, str(missing), str(root), detail
        lines = [f"Dataset '{dataset}' is not ready: missing {missing}" + (f" ({detail})" if detail else "") + "."]
        lines.append(f"Check and prepare it with: {prepare_command(dataset, root)}")
        hint = fetch_hint(dataset)
        if hint:
            lines.append(hint.replace("<root>", str(root)))
        super().__init__("\n".join(lines))
        self.filename = str(missing)

    def __str__(self) -> str:  # FileNotFoundError would otherwise print "[Errno ...]" forms for some arg shapes
        return self.args[0]

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.dataset, self.missing, self.root, self.detail))


class DataFormatError(ValueError):
    """A data file exists but does not hold what it should (truncated JSON, an id it does not define)."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str):
        self.path, self.problem, self.fix = str(path), problem, fix
        super().__init__(f"{path}: {problem}.\nFix: {fix}")
        self.filename = str(path)

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return (type(self), (self.path, self.problem, self.fix))


class CorruptImage(OSError):
    """An image file exists but cannot be decoded."""

    def __init__(self, path: str | os.PathLike, reason: str = ""):
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot read image {path}: {reason}" if reason else f"cannot read image {path}")
        self.filename = str(path)

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


def open_image(
    path: str | os.PathLike, dataset: str | None = None, root: str | os.PathLike | None = None
) -> Image.Image:
    """Open and fully decode ``path`` as an RGB PIL image.

    A missing file raises :class:`DatasetMissing` when ``dataset`` and ``root`` are given (else a
    FileNotFoundError naming the file); a file PIL cannot decode raises :class:`CorruptImage` naming it.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert() loads the pixels: truncated files fail here
    except FileNotFoundError:
        if dataset is not None and root is not None:
            raise DatasetMissing(dataset, path, root, "image file") from None
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise CorruptImage(path, f"{type(error).__name__}: {error}") from error
