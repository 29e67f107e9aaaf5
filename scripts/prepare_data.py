"""Check (and where possible fetch) the paper's datasets; print exactly what is missing and where to get it.

    python scripts/prepare_data.py coco --root data/coco
    python scripts/prepare_data.py flickr30k --root data/flickr30k
    python scripts/prepare_data.py tiered_imagenet --root data/imagenet/train [--class-list FILE]
    python scripts/prepare_data.py eurosat --root data/eurosat_root [--download]

ZSCL's benchmark datasets (MTIL and CIL; one data folder holds them all in torchvision's layout):

    python scripts/prepare_data.py cifar100 --root data [--download]
    (aircraft caltech101 cifar10 cifar100 dtd flowers food mnist oxford_pet sun397: --download works;
     stanford_cars tinyimagenet imagenet: fetched by hand, the instructions are printed)

Exit status 0 when the dataset is complete, 1 otherwise. Nothing is downloaded unless
``--download`` is given (torchvision's own downloads; coco, flickr30k, tiered_imagenet, stanford_cars,
tinyimagenet and imagenet need registration, a request to their authors or a mirror).
``--quick`` checks only the files and folders, not every listed image.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clipcl_runner.data.errors import FETCH_HINTS, DatasetMissing, prepare_command
from clipcl_runner.data.folders import EUROSAT_CLASSNAMES, IMAGE_EXTENSIONS, read_class_list, resolve_class_list
from clipcl_runner.data.vision_datasets import DATASET_FOLDERS, load_vision_dataset

PAPER_DATASETS = ("coco", "flickr30k", "tiered_imagenet", "eurosat")
VISION_DATASETS = tuple(name for name in DATASET_FOLDERS if name != "eurosat")  # eurosat: one check for both uses
DATASETS = PAPER_DATASETS + VISION_DATASETS
SHOW = 5  # missing image names printed per folder


def _files_in(folder: Path) -> set[str]:
    return {entry.name for entry in folder.iterdir()} if folder.is_dir() else set()


def _missing_images(folder: Path, names: list[str], what: str) -> list[str]:
    present = _files_in(folder)
    absent = [name for name in names if name not in present]
    if not absent:
        print(f"  ok: {len(names)} images of {what} in {folder}")
        return []
    shown = ", ".join(absent[:SHOW]) + (", ..." if len(absent) > SHOW else "")
    return [f"{len(absent)} of {len(names)} images of {what} are not in {folder} (e.g. {shown})"]


def _need_files(paths: list[Path]) -> list[str]:
    missing = []
    for path in paths:
        if path.exists():
            print(f"  ok: {path}")
        else:
            missing.append(f"{path}")
    return missing


def check_coco(root: Path, quick: bool) -> list[str]:
    annotations = [root / "annotations" / f"instances_{part}.json" for part in ("train2014", "val2014")]
    missing = _need_files([*annotations, root / "train2014", root / "val2014", root / "dataset_coco.json"])
    if missing or quick:
        return missing
    for path in annotations:
        print(f"  reading {path} ...", flush=True)
        with open(path) as handle:
            names = [image["file_name"] for image in json.load(handle)["images"]]
        missing += _missing_images(root / path.stem.split("_")[1], names, path.name)
    with open(root / "dataset_coco.json") as handle:
        entries = [e for e in json.load(handle)["images"] if e["split"] in ("test", "val")]
    for folder in sorted({e["filepath"] for e in entries}):
        names = [e["filename"] for e in entries if e["filepath"] == folder]
        missing += _missing_images(root / folder, names, "the Karpathy test/val splits")
    return missing


def check_flickr30k(root: Path, quick: bool) -> list[str]:
    missing = _need_files([root / "flickr30k-images", root / "dataset_flickr30k.json"])
    if missing or quick:
        return missing
    with open(root / "dataset_flickr30k.json") as handle:
        names = [e["filename"] for e in json.load(handle)["images"]]
    return _missing_images(root / "flickr30k-images", names, "dataset_flickr30k.json")


def check_folder_classes(root: Path, class_list: str) -> list[str]:
    if not root.is_dir():
        return [f"{root} (an ImageNet folder with one sub-folder per class)"]
    print(f"  class list: {resolve_class_list(class_list)}")
    missing = []
    classes = read_class_list(class_list)
    for wnid, name in classes:
        folder = root / wnid
        if not folder.is_dir():
            missing.append(f"{folder} (class '{name}')")
        elif not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in folder.iterdir()):
            missing.append(f"{folder} has no images (class '{name}')")
    if not missing:
        print(f"  ok: all {len(classes)} class folders in {root}")
    return missing


def check_eurosat(root: Path, download: bool) -> list[str]:
    data = root / "eurosat" / "2750"
    if not data.is_dir() and download:
        from torchvision.datasets import EuroSAT

        print(f"  downloading EuroSAT into {root} (torchvision.datasets.EuroSAT(download=True)) ...", flush=True)
        downloading("EuroSAT", lambda: EuroSAT(str(root), download=True))
    if not data.is_dir():
        return [f"{data}"]
    missing = []
    for folder in EUROSAT_CLASSNAMES:
        count = sum(1 for f in (data / folder).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS) if (data / folder).is_dir() else 0
        if count == 0:
            missing.append(f"{data / folder} (class folder, no images)")
        else:
            print(f"  ok: {count} images in {data / folder}")
    return missing


def _torchvision_download(name: str, root: Path) -> None:
    """torchvision's own download (and extraction) of the whole of ``name`` into ``root``; needs internet."""
    from torchvision import datasets as tv

    classes = {
        "aircraft": tv.FGVCAircraft, "caltech101": tv.Caltech101, "cifar10": tv.CIFAR10, "cifar100": tv.CIFAR100,
        "dtd": tv.DTD, "flowers": tv.Flowers102, "food": tv.Food101, "mnist": tv.MNIST,
        "oxford_pet": tv.OxfordIIITPet, "sun397": tv.SUN397,
    }
    if name not in classes:
        print(f"  {name} cannot be downloaded automatically; see the instructions below.")
        return
    root.mkdir(parents=True, exist_ok=True)
    print(f"  downloading {name} into {root} (torchvision.datasets.{classes[name].__name__}(download=True)) ...", flush=True)
    downloading(name, lambda: classes[name](str(root), download=True))


def check_vision(name: str, root: Path, download: bool) -> list[str]:
    """Open the dataset exactly as the runner will (ZSCL's split); report what is missing."""
    if download and not (root / DATASET_FOLDERS[name]).is_dir():
        _torchvision_download(name, root)
    try:
        data = load_vision_dataset(name, root)
    except DatasetMissing as error:
        return [error.missing + (f" ({error.detail})" if error.detail else "")]
    print(f"  ok: {len(data.classnames)} classes, {len(data.train)} train / {len(data.test)} test images in {root / DATASET_FOLDERS[name]}")
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=DATASETS)
    parser.add_argument(
        "--root", required=True,
        help="the dataset's folder (tiered_imagenet: the ImageNet class folder; ZSCL's datasets: the folder holding them in torchvision's layout)",
    )
    parser.add_argument("--download", action="store_true", help="download with torchvision where it can (not coco/flickr30k/tiered_imagenet/stanford_cars/tinyimagenet/imagenet)")
    parser.add_argument("--class-list", default="tiered_imagenet_test", help="tiered_imagenet: class list file or shipped name")
    parser.add_argument("--quick", action="store_true", help="check files and folders only, not every listed image")
    args = parser.parse_args(argv)
    root = Path(args.root).expanduser()
    print(f"Checking {args.name} in {root}")
    try:
        missing = check(args, root)
    except DownloadFailed as error:
        print(f"DOWNLOAD FAILED for {args.name}: {error}", file=sys.stderr)
        print(FETCH_HINTS.get(args.name, "").replace("<root>", str(root)), file=sys.stderr)
        return 1
    if not missing:
        print(f"OK: {args.name} is complete in {root}.")
        return 0
    print(f"MISSING for {args.name}:")
    for item in missing:
        print(f"  - {item}")
    print(FETCH_HINTS[args.name].replace("<root>", str(root)))
    print(f"Then run again: {prepare_command(args.name, root)}")
    return 1


class DownloadFailed(RuntimeError):
    """A torchvision download that could not reach its server (offline machine, moved file)."""


def downloading(what: str, fetch) -> None:
    """Run a download; a network error becomes one line naming the dataset, not urllib's traceback."""
    import urllib.error

    try:
        fetch()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadFailed(f"{reason} (is this machine offline? fetch it by hand as below)") from None


def check(args, root: Path) -> list[str]:
    if args.name == "coco":
        missing = check_coco(root, args.quick)
    elif args.name == "flickr30k":
        missing = check_flickr30k(root, args.quick)
    elif args.name == "tiered_imagenet":
        missing = check_folder_classes(root, args.class_list)
    elif args.name == "eurosat":
        missing = check_eurosat(root, args.download)
    else:
        missing = check_vision(args.name, root, args.download)
    return missing


if __name__ == "__main__":
    sys.exit(main())
