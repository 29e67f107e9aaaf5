"""The paper's COCO update tasks: MS-COCO 2014 object crops, one session per group of categories.

On-disk layout (``root`` = the COCO folder)::

    root/annotations/instances_train2014.json   root/train2014/COCO_train2014_*.jpg
    root/annotations/instances_val2014.json     root/val2014/COCO_val2014_*.jpg
    root/dataset_coco.json                      (Karpathy's split file)

Crops: every annotated box wider AND taller than ``min_size`` px is one sample, labelled with its
category's index in the annotation file's ``categories`` list (80 classes). Splits: ``train`` = all
boxes of train2014 images; ``test`` / ``val`` / ``restval`` = boxes of the val2014 images in that
Karpathy split. The index is cached as JSON under ``cache_dir`` (:mod:`.json_cache`). An annotation
file that is not valid JSON, or that names a category or image it does not define, fails naming it.
"""

from __future__ import annotations

import math
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from ..models import ClipBundle
from .errors import DataFormatError, DatasetMissing, open_image
from .folders import paper_train_transform
from .json_cache import cached, field, load_json, refetch
from .karpathy import COCO_KARPATHY_FILE
from .stages import Stage

# split -> (image folder / instances file year-split, Karpathy split or None for "every image")
SPLITS = {
    "train": ("train2014", None),
    "test": ("val2014", "test"),
    "val": ("val2014", "val"),
    "restval": ("val2014", "restval"),
}


# --------------------------------------------------------------------------- crop index
@dataclass(frozen=True, slots=True)
class CropRecord:
    image: str  # path relative to the COCO root, e.g. "val2014/COCO_val2014_000000391895.jpg"
    box: tuple[int, int, int, int]  # PIL crop box (left, upper, right, lower), pixels
    label: int  # index of the category in the annotation file's "categories" list
    category_id: int  # COCO category id
    annotation_id: int


@dataclass
class CropIndex:
    categories: list[str]  # names, in the annotation file's order (= label indices)
    category_ids: list[int]
    records: list[CropRecord]


BOX_ROUNDINGS = ("official", "cover")


def crop_box(bbox: Sequence[float], width: int, height: int, rounding: str = "official") -> tuple[int, int, int, int]:
    """COCO ``[x, y, w, h]`` (float pixels) -> an integer PIL crop box (left, upper, right, lower).

    ``official``: each of x, y, x + w, y + h rounded by Python's ``round`` (half to even), which
    is what ``PIL.Image.crop`` does to the float box CL-CLIP's data.py passes it (no clipping:
    COCO boxes lie inside their image). ``cover``: the smallest integer box covering the float
    box, clipped to the image (about +1 px per side).
    """
    if rounding not in BOX_ROUNDINGS:
        raise ValueError(f"tasks.box_rounding='{rounding}' is not one of {BOX_ROUNDINGS}.")
    x, y, w, h = (float(v) for v in bbox)
    if rounding == "official":
        return round(x), round(y), round(x + w), round(y + h)
    left, upper = max(0, math.floor(x)), max(0, math.floor(y))
    right, lower = min(int(width), math.ceil(x + w)), min(int(height), math.ceil(y + h))
    return left, upper, max(right, left + 1), max(lower, upper + 1)


def _karpathy_cocoid(entry: dict, path: Path, root: Path) -> int:
    if "cocoid" in entry:
        return int(entry["cocoid"])
    digits = re.findall(r"(\d+)", str(field(entry, "filename", path, "coco", root, "an image entry")))
    if not digits:
        raise DataFormatError(
            path,
            f"image entry {entry.get('filename')!r} has no cocoid and no number in its file name",
            refetch("coco", root),
        )
    return int(digits[-1])


def _karpathy_keep(root: Path, image_dir: str, karpathy_split: str) -> set[int]:
    """COCO ids of the ``image_dir`` images in Karpathy's ``karpathy_split``."""
    path = root / COCO_KARPATHY_FILE
    entries = field(load_json(path, "coco", root), "images", path, "coco", root, "the split file")
    return {
        _karpathy_cocoid(entry, path, root)
        for entry in entries
        if field(entry, "split", path, "coco", root, "an image entry") == karpathy_split
        and entry.get("filepath", image_dir) == image_dir
    }


def _build_index(root: Path, split: str, min_size: float, include_crowd: bool, box_rounding: str) -> dict:
    image_dir, karpathy_split = SPLITS[split]
    path = root / "annotations" / f"instances_{image_dir}.json"
    instances = load_json(path, "coco", root)
    keep = None if karpathy_split is None else _karpathy_keep(root, image_dir, karpathy_split)

    def get(record: dict, key: str, what: str):
        return field(record, key, path, "coco", root, what)

    categories: list[list] = [  # [id, name]: JSON-cached as lists
        [int(get(c, "id", "a category")), str(get(c, "name", "a category"))]
        for c in get(instances, "categories", "the file")
    ]
    label_of: dict[int, int] = {cid: index for index, (cid, _) in enumerate(categories)}
    images = {int(get(im, "id", "an image")): im for im in get(instances, "images", "the file")}
    records = []
    for ann in get(instances, "annotations", "the file"):
        image_id = int(get(ann, "image_id", "an annotation"))
        if keep is not None and image_id not in keep:
            continue
        if not include_crowd and ann.get("iscrowd", 0):
            continue
        _, _, w, h = get(ann, "bbox", "an annotation")
        if not (w > min_size and h > min_size):
            continue
        if image_id not in images:
            raise DataFormatError(
                path,
                f"annotation {ann.get('id')} refers to image id {image_id}, which its 'images' list does not define",
                refetch("coco", root),
            )
        category = int(get(ann, "category_id", "an annotation"))
        if category not in label_of:
            raise DataFormatError(
                path,
                f"annotation {ann.get('id')} has category id {category}, which its 'categories' list does not define "
                f"(it defines {sorted(label_of)})",
                "use the official annotations_trainval2014.zip (both instances files list the same 80 categories); "
                + refetch("coco", root),
            )
        image = images[image_id]
        box = crop_box(ann["bbox"], image["width"], image["height"], box_rounding)
        records.append([f"{image_dir}/{image['file_name']}", *box, label_of[category], category, int(ann["id"])])
    return {"categories": categories, "records": records}


def load_crop_index(
    root: str | os.PathLike,
    split: str,
    min_size: float = 4,
    cache_dir: str | os.PathLike | None = None,
    include_crowd: bool = True,
    box_rounding: str = "official",
) -> CropIndex:
    """Categories and crop records of one split (see the module docstring); cached under ``cache_dir``."""
    if split not in SPLITS:
        raise ValueError(f"COCO crop split '{split}' is not one of {sorted(SPLITS)}.")
    if box_rounding not in BOX_ROUNDINGS:
        raise ValueError(f"tasks.box_rounding='{box_rounding}' is not one of {BOX_ROUNDINGS}.")
    root = Path(root).expanduser()
    image_dir, karpathy_split = SPLITS[split]
    sources = [root / "annotations" / f"instances_{image_dir}.json"]
    if karpathy_split is not None:
        sources.append(root / COCO_KARPATHY_FILE)
    for source in sources:
        if not source.is_file():
            raise DatasetMissing("coco", source, root)
    params = {"split": split, "min_size": min_size, "include_crowd": include_crowd, "box_rounding": box_rounding}
    value = cached(
        cache_dir,
        f"coco_crops_{split}",
        sources,
        params,
        lambda: _build_index(root, split, min_size, include_crowd, box_rounding),
    )
    records = [CropRecord(r[0], (r[1], r[2], r[3], r[4]), r[5], r[6], r[7]) for r in value["records"]]
    return CropIndex([name for _, name in value["categories"]], [cid for cid, _ in value["categories"]], records)


def build_crop_index(
    root: str | os.PathLike,
    split: str,
    min_size: float = 4,
    cache_dir: str | os.PathLike | None = None,
    include_crowd: bool = True,
    box_rounding: str = "official",
) -> list[CropRecord]:
    """The crop records of ``split`` (``train`` | ``test`` | ``val`` | ``restval``)."""
    return load_crop_index(root, split, min_size, cache_dir, include_crowd, box_rounding).records


class CocoCrops(Dataset):
    """Object crops cut lazily from their COCO image; returns ``(transform(crop), label)``.

    ``labels`` overrides the records' (global) labels, e.g. with session-local ones;
    ``transform=None`` returns the PIL crop.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        records: Sequence[CropRecord],
        transform: Callable | None = None,
        labels: Sequence[int] | None = None,
    ):
        self.root = Path(root).expanduser()
        self.records = list(records)
        self.labels = [r.label for r in self.records] if labels is None else [int(v) for v in labels]
        if len(self.labels) != len(self.records):
            raise ValueError(f"{len(self.records)} records but {len(self.labels)} labels")
        self.transform = transform
        for folder in {record.image.split("/", 1)[0] for record in self.records}:
            if not (self.root / folder).is_dir():
                raise DatasetMissing("coco", self.root / folder, self.root, "image folder")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        crop = open_image(self.root / record.image, "coco", self.root).crop(record.box)
        return (self.transform(crop) if self.transform is not None else crop), self.labels[index]


def _cap_per_class(records: list[CropRecord], cap: int | None, seed: int) -> list[CropRecord]:
    """At most ``cap`` records per label: a seeded random subset, kept in index order."""
    if cap is None:
        return records
    by_label: dict[int, list[int]] = {}
    for position, record in enumerate(records):
        by_label.setdefault(record.label, []).append(position)
    rng = random.Random(seed)
    kept = sorted(
        p
        for positions in by_label.values()
        for p in (positions if len(positions) <= cap else rng.sample(positions, cap))
    )
    return [records[p] for p in kept]


def coco_sessions(
    clip: ClipBundle,
    root: str | os.PathLike,
    sessions: int = 8,
    classes_per_session: int | None = None,
    epochs: int | None = 15,
    iterations: int | None = None,
    prompt: str = "this is a photo of {} in the scene .",
    cache_dir: str | os.PathLike | None = None,
    max_per_class: int | None = None,
    max_test_per_class: int | None = None,
    eval_split: str = "test",
    min_size: float = 4,
    include_crowd: bool = True,
    seed: int = 0,
    name: str = "coco",
    box_rounding: str = "official",
) -> list[Stage]:
    """COCO object crops as update stages: session t = categories ``t*k .. t*k+k-1`` in annotation-file order.

    ``classes_per_session`` defaults to all categories / ``sessions`` (8 -> 10 each; ``sessions=1`` is
    the OST stage with all 80). Train and test labels are local to the session (0..k-1); the
    test set is the ``eval_split`` (Karpathy ``test``; ``val`` for validation) crops of the
    session's classes. ``max_per_class`` / ``max_test_per_class`` cap the crops per class with a
    seeded random subset (smoke runs). Train transform: :func:`paper_train_transform`; test:
    ``clip.preprocess_eval``. ``box_rounding``: see :func:`crop_box`.
    """
    root = Path(root).expanduser()
    train = load_crop_index(root, "train", min_size, cache_dir, include_crowd, box_rounding)
    test = load_crop_index(root, eval_split, min_size, cache_dir, include_crowd, box_rounding)
    if train.category_ids != test.category_ids:
        raise ValueError("the category lists of instances_train2014.json and instances_val2014.json differ.")
    total = len(train.categories)
    if sessions < 1:
        raise ValueError(f"sessions={sessions} must be >= 1.")
    if classes_per_session is None:
        if total % sessions:
            raise ValueError(
                f"{total} COCO categories cannot be split into {sessions} equal sessions; set classes_per_session."
            )
        classes_per_session = total // sessions
    if sessions * classes_per_session > total:
        raise ValueError(f"{sessions} sessions x {classes_per_session} classes > {total} COCO categories.")
    train_tf, test_tf = paper_train_transform(clip), clip.preprocess_eval

    def session_set(index: CropIndex, t: int, cap: int | None, transform) -> CocoCrops:
        """Session ``t``'s crops of ``index``, at most ``cap`` per class, labelled 0..k-1."""
        first = t * classes_per_session
        chosen = range(first, first + classes_per_session)
        records = _cap_per_class([r for r in index.records if r.label in chosen], cap, seed + t)
        return CocoCrops(root, records, transform, [r.label - first for r in records])

    stages = []
    for t in range(sessions):
        first = t * classes_per_session
        stages.append(
            Stage(
                name=f"{name}_s{t + 1}",
                classnames=train.categories[first : first + classes_per_session],
                train=session_set(train, t, max_per_class, train_tf),
                test=session_set(test, t, max_test_per_class, test_tf),
                train_templates=[prompt],
                epochs=epochs,
                iterations=iterations,
            )
        )
    return stages
