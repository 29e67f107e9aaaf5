"""SUN397: no official split in torchvision; ZSCL's random 80/20 split (seed 42) of all images.

torchvision lists the files in file-system order, which made ZSCL's split depend on the machine; we sort
the paths first, so ours is the same everywhere. Hidden folders (``.ipynb_checkpoints``) are skipped,
not a KeyError."""

from pathlib import Path

from ..errors import DatasetMissing
from ..folders import ImageFiles
from .readers import dataset_folder, hidden, split_80_20
from .registry import DatasetSpec, ReadResult, register, torchvision_hint


def read(root: Path) -> ReadResult:
    """torchvision's SUN397 listing: classes of ClassName.txt, every ``sun_*.jpg`` below, labelled by its folders."""
    base = dataset_folder("sun397", root)
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
    return (*split_80_20(images), classes)


SPEC = register(
    DatasetSpec(
        name="sun397",
        folder="SUN397",
        read=read,
        templates=("a photo of a {}.", "a photo of the {}."),
        download="SUN397",
        split="ZSCL's random 80/20 (seed 42) of the sorted image paths",
        fetch_hint=torchvision_hint(
            "SUN397 (37 GB)",
            "<root>/SUN397/{ClassName.txt,a/abbey/sun_*.jpg,...}",
            "fetch http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz and untar it into <root>",
        ),
    )
)
