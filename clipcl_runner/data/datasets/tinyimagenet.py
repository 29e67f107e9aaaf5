"""TinyImageNet-200 as distributed (tiny-imagenet-200.zip; torchvision has no class for it):
``train/<wnid>/images`` / ``val`` (val_annotations.txt) as test; labels in wnids.txt order."""

from collections.abc import Sequence
from pathlib import Path

from ..errors import DatasetMissing
from ..folders import ImageFiles, list_images
from .imagenet import openai_imagenet_templates
from .readers import dataset_folder
from .registry import DatasetSpec, ReadResult, as_is, register

CLASS_NAME_DIR = Path(__file__).resolve().parent.parent / "class_names"


def read_wnid_names(path: str | Path) -> dict[str, str]:
    """``wnid<TAB>name`` per line (``#`` lines skipped): continual-CLIP's readable TinyImageNet names."""
    names = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            wnid, name = line.split("\t", 1)
            names[wnid.strip()] = name.strip()
    return names


def tinyimagenet_names(wnids: Sequence[str], words: dict[str, str] | None = None) -> list[str]:
    """Readable names of TinyImageNet's classes: the shipped list, else the first synonym of words.txt."""
    shipped = read_wnid_names(CLASS_NAME_DIR / "tinyimagenet.tsv")
    words = words or {}
    return [shipped.get(w) or words.get(w, w).split(",")[0].strip() for w in wnids]


def read(root: Path) -> ReadResult:
    base = dataset_folder("tinyimagenet", root)
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
        tinyimagenet_names(wnids, words),  # words.txt sits next to the images: named while reading
    )


SPEC = register(
    DatasetSpec(
        name="tinyimagenet",
        folder="tiny-imagenet-200",
        read=read,
        templates=openai_imagenet_templates,
        clean_names=as_is,
        download=None,
        split="train/<wnid>/images / val (val_annotations.txt) as test",
        fetch_hint=(
            "TinyImageNet-200 is not downloaded automatically. Fetch http://cs231n.stanford.edu/tiny-imagenet-200.zip\n"
            "  and unzip it into <root>, so that <root>/tiny-imagenet-200/{wnids.txt,words.txt,train/<wnid>/images/,\n"
            "  val/val_annotations.txt,val/images/} exist (keep the layout of the zip)."
        ),
    )
)
