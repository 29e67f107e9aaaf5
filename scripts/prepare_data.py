"""Check (and where possible fetch) the paper's datasets; print exactly what is missing and where to get it.

    python scripts/prepare_data.py coco --root data/coco
    python scripts/prepare_data.py flickr30k --root data/flickr30k
    python scripts/prepare_data.py tiered_imagenet --root data [--class-list FILE]
    python scripts/prepare_data.py eurosat --root data/eurosat_root [--download]

ZSCL's benchmark datasets (MTIL and CIL; one data folder holds them all in torchvision's layout), one
record each in clipcl_runner/data/datasets/ (a dataset registered there is checked here too):

    python scripts/prepare_data.py cifar100 --root data [--download]
    (aircraft caltech101 cifar10 cifar100 dtd flowers food mnist oxford_pet sun397: --download works;
     stanford_cars tinyimagenet imagenet: fetched by hand, the instructions are printed)
    python scripts/prepare_data.py imagenet_cc --root data
    (ZSCL's MTIL reference set: <data>/imagenet/train and the Conceptual Captions validation captions)

For imagenet, imagenet_cc, tiered_imagenet and the ZSCL datasets --root is the data folder (the runs'
paths.data_dir); when it is not the one the runs read, the override that points them at it is printed.

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

from clipcl_runner.data import datasets
from clipcl_runner.data.errors import DatasetMissing, fetch_hint, prepare_command
from clipcl_runner.data.folders import EUROSAT_CLASSNAMES, IMAGE_EXTENSIONS, read_class_list, resolve_class_list
from clipcl_runner.data.vision_datasets import load_vision_dataset

REPO = Path(__file__).resolve().parent.parent
PAPER_DATASETS = ("coco", "flickr30k", "tiered_imagenet", "eurosat", "imagenet_cc")
SHOW = 5  # missing image names printed per folder


def dataset_names() -> tuple[str, ...]:
    """Every dataset this script checks: the paper's, then every registered record (read now, so that a
    record registered after import is seen; eurosat: one check for both uses)."""
    return PAPER_DATASETS + tuple(name for name in datasets.names() if name not in PAPER_DATASETS)


def run_config(*overrides: str):
    """The runs' composed config (conf/, no instantiation): where they read their data."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose(config_name="config", overrides=list(overrides))


def runs_read(node: str, key: str, *overrides: str) -> Path:
    """``<node>.<key>`` of the composed config with ``overrides``, as a resolved path."""
    from omegaconf import OmegaConf

    cfg = run_config(*overrides)
    return Path(str(OmegaConf.select(cfg, f"{node}.{key}"))).expanduser().resolve()


def note_override(checked: Path, default: Path, override: str) -> None:
    """Say which override points the runs at ``checked`` when they read ``default`` unless told."""
    if checked.expanduser().resolve() != default:
        print(f"  note: runs read {default} by default; to read {checked} run with: {override}")


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


def _is_class_folder(folder: Path) -> bool:
    """Whether ``folder`` itself holds ImageNet class folders (``n01440764``, ...)."""
    return folder.is_dir() and any(e.is_dir() and e.name[:1] == "n" and e.name[1:].isdigit() for e in folder.iterdir())


def check_tiered_imagenet(root: Path, class_list: str) -> list[str]:
    """The class folder the zero-shot probe reads: ``eval.probes.tiered_imagenet.root`` with
    ``paths.data_dir=<root>`` (``<root>/imagenet/train``, the imagenet dataset's own). A ``--root`` of
    ``<data>/imagenet`` or of the class folder itself (this script's old meaning) is checked as given,
    with the override the runs need to read it."""
    probe = ("eval.probes.tiered_imagenet", "root")
    default = runs_read(*probe, "eval=paper")
    candidates = [
        (runs_read(*probe, "eval=paper", f"paths.data_dir='{root.resolve()}'"), f"paths.data_dir={root.resolve()}"),
        (root / "train", f"paths.data_dir={root.resolve().parent}"),  # --root <data>/imagenet
        (root, f"eval.probes.tiered_imagenet.root={root.resolve()}"),  # --root the class folder
    ]
    folder, override = next((c for c in candidates if _is_class_folder(c[0])), candidates[0])
    if folder != candidates[0][0]:
        print(
            f"  {folder} holds the class folders: checking it (--root is the data folder, which holds imagenet/train)"
        )
    note_override(folder, default, override)
    return check_folder_classes(folder, class_list)


def check_imagenet_cc(root: Path, quick: bool) -> list[str]:
    """ZSCL's MTIL reference set (reference=imagenet_cc): the ImageNet training images and the Conceptual
    Captions validation captions, at the paths the runs read with ``paths.data_dir=<root>``."""
    from clipcl_runner.data.reference import CC_GATHERED_CSV, read_cc_captions

    overrides = ("reference=imagenet_cc", f"paths.data_dir='{root.resolve()}'")
    images = runs_read("reference", "root", *overrides) / datasets.get("imagenet").folder / "train"
    captions = runs_read("reference", "captions_file", *overrides)
    note_override(root, runs_read("paths", "data_dir"), f"paths.data_dir={root.resolve()}")
    missing = []
    if not _is_class_folder(images):
        missing.append(f"{images} (ImageNet training images, one folder per class)")
    elif quick:
        print(f"  ok: {images} holds class folders")
    else:
        try:
            from clipcl_runner.data.datasets.readers import read_image_folder

            found = read_image_folder("imagenet", images, root)
            print(
                f"  ok: {len(found.paths)} images in {len({Path(p).parent for p in found.paths})} class folders of {images}"
            )
        except DatasetMissing as error:
            missing.append(f"{error.missing} ({error.detail})")
    gathered = captions.with_name(CC_GATHERED_CSV)
    if not captions.is_file() and gathered.is_file():
        print(
            f"  {captions.name} is absent but ZSCL's {gathered.name} is there: runs read it with reference.captions_file={gathered}"
        )
        captions = gathered
    if captions.is_file():
        print(f"  ok: {len(read_cc_captions(captions))} captions in {captions}")
    else:
        missing.append(f"{captions} (Conceptual Captions validation captions)")
    return missing


def imagenet_cc_hint(root: Path, missing: list[str]) -> str:
    """Where to get each missing part of the imagenet_cc reference set."""
    from clipcl_runner.data.reference import CC_HINT

    hints = []
    for item in missing:
        path = Path(item.split(" (", 1)[0])
        if "ImageNet" in item:
            hints.append(fetch_hint("imagenet").replace("<root>", str(root)))
        else:
            hints.append(CC_HINT.format(name=path.name, path=path))
    return "\n".join(hints)


def check_eurosat(root: Path, download: bool) -> list[str]:
    """<root>/eurosat/2750/<ClassName>/ (torchvision's layout), which both uses read: MTIL's eurosat with
    paths.data_dir=<root>, tasks=eurosat_mst with tasks.root=<root>; the overrides are printed."""
    spec = datasets.get("eurosat")
    data = root / spec.folder
    if not data.is_dir() and download:
        _torchvision_download("eurosat", root)
    note_override(root, runs_read("paths", "data_dir"), f"paths.data_dir={root.resolve()} (MTIL's eurosat)")
    note_override(
        root, runs_read("tasks", "root", "tasks=eurosat_mst"), f"tasks.root={root.resolve()} (tasks=eurosat_mst)"
    )
    if not data.is_dir():
        return [f"{data}"]
    missing = []
    for folder in EUROSAT_CLASSNAMES:
        count = (
            sum(1 for f in (data / folder).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
            if (data / folder).is_dir()
            else 0
        )
        if count == 0:
            missing.append(f"{data / folder} (class folder, no images)")
        else:
            print(f"  ok: {count} images in {data / folder}")
    return missing


def _torchvision_download(name: str, root: Path) -> None:
    """torchvision's own download (and extraction) of the whole of ``name`` into ``root``; needs internet.
    The class is the dataset record's ``download``."""
    factory = datasets.get(name).torchvision_class()
    if factory is None:
        print(f"  {name} cannot be downloaded automatically; see the instructions below.")
        return
    root.mkdir(parents=True, exist_ok=True)
    print(f"  downloading {name} into {root} (torchvision.datasets.{factory.__name__}(download=True)) ...", flush=True)
    downloading(name, lambda: factory(str(root), download=True))


def check_vision(name: str, root: Path, download: bool) -> list[str]:
    """Open the dataset exactly as the runner will (ZSCL's split); report what is missing."""
    spec = datasets.get(name)
    if download and not (root / spec.folder).is_dir():
        _torchvision_download(name, root)
    note_override(root, runs_read("paths", "data_dir"), f"paths.data_dir={root.resolve()}")
    try:
        data = load_vision_dataset(name, root)
    except DatasetMissing as error:
        return [error.missing + (f" ({error.detail})" if error.detail else "")]
    print(
        f"  ok: {len(data.classnames)} classes, {len(data.train)} train / {len(data.test)} test images in {root / spec.folder}"
        + (f" (split: {spec.split})" if spec.split else "")
    )
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=dataset_names())
    parser.add_argument(
        "--root",
        required=True,
        help="the data folder (paths.data_dir) for imagenet_cc, tiered_imagenet and the registered datasets; "
        "the dataset's own folder for coco, flickr30k and eurosat",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="download with torchvision where the dataset's record allows (not coco/flickr30k/tiered_imagenet/imagenet_cc/stanford_cars/tinyimagenet/imagenet)",
    )
    parser.add_argument(
        "--class-list", default="tiered_imagenet_test", help="tiered_imagenet: class list file or shipped name"
    )
    parser.add_argument("--quick", action="store_true", help="check files and folders only, not every listed image")
    args = parser.parse_args(argv)
    root = Path(args.root).expanduser()
    print(f"Checking {args.name} in {root}")
    try:
        missing = check(args, root)
    except DownloadFailed as error:
        print(f"DOWNLOAD FAILED for {args.name}: {error}", file=sys.stderr)
        print((fetch_hint(args.name) or "").replace("<root>", str(root)), file=sys.stderr)
        return 1
    if not missing:
        print(f"OK: {args.name} is complete in {root}.")
        return 0
    print(f"MISSING for {args.name}:")
    for item in missing:
        print(f"  - {item}")
    if args.name == "imagenet_cc":
        print(imagenet_cc_hint(root, missing))
    else:
        print((fetch_hint(args.name) or "").replace("<root>", str(root)))
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
        missing = check_tiered_imagenet(root, args.class_list)
    elif args.name == "imagenet_cc":
        missing = check_imagenet_cc(root, args.quick)
    elif args.name == "eurosat":
        missing = check_eurosat(root, args.download)
    else:
        missing = check_vision(args.name, root, args.download)
    return missing


if __name__ == "__main__":
    sys.exit(main())
