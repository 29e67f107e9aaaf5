"""Caltech-101 (101 classes, no BACKGROUND_Google): no official split, ZSCL's random 80/20 split (seed 42)."""

from collections.abc import Sequence
from pathlib import Path

from torchvision import datasets as tv

from ..folders import ImageFiles
from .readers import split_80_20, torchvision_set
from .registry import DatasetSpec, ReadResult, register, torchvision_hint

# Caltech-101 folder -> ZSCL's name; any folder not listed reads as itself with spaces.
CALTECH101_NAMES = {
    "Faces": "off-center face",
    "Faces_easy": "centered face",
    "Leopards": "leopard",
    "Motorbikes": "motorbike",
    "airplanes": "airplane",
    "car_side": "side of a car",
    "cougar_body": "body of a cougar cat",
    "cougar_face": "face of a cougar cat",
    "crocodile_head": "head of a crocodile",
    "flamingo_head": "head of a flamingo",
    "snoopy": "snoopy (cartoon beagle)",
    "yin_yang": "yin and yang symbol",
}

TEMPLATES = (
    "a photo of a {}.",
    "a painting of a {}.",
    "a plastic {}.",
    "a sculpture of a {}.",
    "a sketch of a {}.",
    "a tattoo of a {}.",
    "a toy {}.",
    "a rendition of a {}.",
    "a embroidered {}.",
    "a cartoon {}.",
    "a {} in a video game.",
    "a plushie {}.",
    "a origami {}.",
    "art of a {}.",
    "graffiti of a {}.",
    "a drawing of a {}.",
    "a doodle of a {}.",
    "a photo of the {}.",
    "a painting of the {}.",
    "the plastic {}.",
    "a sculpture of the {}.",
    "a sketch of the {}.",
    "a tattoo of the {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "the embroidered {}.",
    "the cartoon {}.",
    "the {} in a video game.",
    "the plushie {}.",
    "the origami {}.",
    "art of the {}.",
    "graffiti of the {}.",
    "a drawing of the {}.",
    "a doodle of the {}.",
)


def caltech101_names(folders: Sequence[str]) -> list[str]:
    return [CALTECH101_NAMES.get(folder, folder.replace("_", " ")) for folder in folders]


def read(root: Path) -> ReadResult:
    dataset = torchvision_set("caltech101", root, tv.Caltech101)
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
    train, test = split_80_20(ImageFiles(paths, labels, None, "caltech101", root))
    return train, test, categories


SPEC = register(
    DatasetSpec(
        name="caltech101",
        folder="caltech101/101_ObjectCategories",
        read=read,
        templates=TEMPLATES,
        clean_names=caltech101_names,
        download="Caltech101",
        split="ZSCL's random 80/20 (torch.Generator().manual_seed(42))",
        fetch_hint=torchvision_hint(
            "Caltech-101",
            "<root>/caltech101/101_ObjectCategories/<category>/image_0001.jpg",
            "fetch https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip, unzip it and untar the\n"
            "  101_ObjectCategories.tar.gz inside into <root>/caltech101/",
        ),
    )
)
