"""The paper's COCO data: MS-COCO 2014 object crops as update stages, and the Karpathy-split
image-text retrieval probes (COCO 1k/5k, Flickr30K 1k).

On-disk layout (``root`` = the COCO folder)::

    root/annotations/instances_train2014.json   root/train2014/COCO_train2014_*.jpg
    root/annotations/instances_val2014.json     root/val2014/COCO_val2014_*.jpg
    root/dataset_coco.json                      (Karpathy's split file)

Crops: every annotated box wider AND taller than ``min_size`` px is one sample, labelled with its
category's index in the annotation file's ``categories`` list (80 classes). Splits: ``train`` = all
boxes of train2014 images; ``test`` / ``val`` / ``restval`` = boxes of the val2014 images in that
Karpathy split. Parsing the instances JSON is slow (the train file is ~450 MB), so the index is
cached as JSON under ``cache_dir``, keyed by the source files' paths, sizes and mtimes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from ..models import ClipBundle
from .errors import DatasetMissing, open_image
from .folders import ImageFiles, imagenet_folder_probe, paper_train_transform
from .stages import RetrievalProbe, Stage

log = logging.getLogger(__name__)

INDEX_VERSION = 1
# split -> (image folder / instances file year-split, Karpathy split or None for "every image")
SPLITS = {
    "train": ("train2014", None),
    "test": ("val2014", "test"),
    "val": ("val2014", "val"),
    "restval": ("val2014", "restval"),
}
COCO_KARPATHY_FILE = "dataset_coco.json"
FLICKR_KARPATHY_FILE = "dataset_flickr30k.json"
FLICKR_IMAGES_DIR = "flickr30k-images"


# --------------------------------------------------------------------------- JSON cache
def _stamp(path: Path) -> list:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _cached(cache_dir, tag: str, sources: Sequence[Path], params: dict, build: Callable[[], object]):
    """``build()``'s JSON-able value, cached in ``cache_dir/<tag>_<hash>.json`` for these source files."""
    if cache_dir is None:
        return build()
    key = {"version": INDEX_VERSION, "tag": tag, "sources": [_stamp(p) for p in sources], "params": params}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir).expanduser() / f"{tag}_{digest}.json"
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            if stored.get("key") == key:
                return stored["value"]
        except (OSError, ValueError, AttributeError):
            log.warning("ignoring unreadable cache file %s", path)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "value": value}))
    os.replace(tmp, path)
    return value


def _load_json(path: Path, dataset: str, root: Path) -> dict:
    if not path.is_file():
        raise DatasetMissing(dataset, path, root)
    log.info("parsing %s", path)
    with open(path) as handle:
        return json.load(handle)


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


def _karpathy_cocoid(entry: dict) -> int:
    if "cocoid" in entry:
        return int(entry["cocoid"])
    return int(re.findall(r"(\d+)", entry["filename"])[-1])


def _build_index(root: Path, split: str, min_size: float, include_crowd: bool, box_rounding: str) -> dict:
    image_dir, karpathy_split = SPLITS[split]
    instances = _load_json(root / "annotations" / f"instances_{image_dir}.json", "coco", root)
    keep = None
    if karpathy_split is not None:
        karpathy = _load_json(root / COCO_KARPATHY_FILE, "coco", root)
        keep = {
            _karpathy_cocoid(entry)
            for entry in karpathy["images"]
            if entry["split"] == karpathy_split and entry.get("filepath", image_dir) == image_dir
        }
    categories = [[int(c["id"]), str(c["name"])] for c in instances["categories"]]
    label_of = {cid: index for index, (cid, _) in enumerate(categories)}
    images = {int(im["id"]): im for im in instances["images"]}
    records = []
    for ann in instances["annotations"]:
        image_id = int(ann["image_id"])
        if keep is not None and image_id not in keep:
            continue
        if not include_crowd and ann.get("iscrowd", 0):
            continue
        _, _, w, h = ann["bbox"]
        if not (w > min_size and h > min_size):
            continue
        image = images[image_id]
        box = crop_box(ann["bbox"], image["width"], image["height"], box_rounding)
        category = int(ann["category_id"])
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
    value = _cached(
        cache_dir, f"coco_crops_{split}", sources, params,
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
        p for positions in by_label.values() for p in (positions if len(positions) <= cap else rng.sample(positions, cap))
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
    stages = []
    for t in range(sessions):
        first = t * classes_per_session
        chosen = range(first, first + classes_per_session)

        def session_set(index: CropIndex, cap: int | None, transform) -> CocoCrops:
            records = _cap_per_class([r for r in index.records if r.label in chosen], cap, seed + t)
            return CocoCrops(root, records, transform, [r.label - first for r in records])

        stages.append(
            Stage(
                name=f"{name}_s{t + 1}",
                classnames=train.categories[first : first + classes_per_session],
                train=session_set(train, max_per_class, train_tf),
                test=session_set(test, max_test_per_class, test_tf),
                train_templates=[prompt],
                epochs=epochs,
                iterations=iterations,
            )
        )
    return stages


# --------------------------------------------------------------------------- Karpathy retrieval
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
        for entry in _load_json(path, dataset, root)["images"]:
            if entry["split"] != split:
                continue
            captions = [s["raw"].lower().strip() for s in entry["sentences"][:captions_per_image]]
            entries.append({"filepath": entry.get("filepath", ""), "filename": entry["filename"], "captions": captions})
        return entries

    params = {"split": split, "captions_per_image": captions_per_image}
    return _cached(cache_dir, f"karpathy_{Path(karpathy_file).stem}_{split}", [path], params, build)


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
        clip, name, root, FLICKR_KARPATHY_FILE, False, split, max_images, 1, FLICKR_IMAGES_DIR,
        cache_dir=cache_dir, dataset="flickr30k",
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
                clip, "tiered_imagenet", imagenet_root, class_list, list(zero_shot_templates),
                imagenet_split_dir, max_per_class,
            )
        )
    if coco_root is not None:
        coco_name = "coco1k" if coco_folds > 1 else "coco5k"
        probes.append(coco_retrieval_probe(clip, coco_root, coco_name, coco_folds, cache_dir=cache_dir))
    if flickr_root is not None:
        probes.append(flickr30k_retrieval_probe(clip, flickr_root, cache_dir=cache_dir))
    return probes
