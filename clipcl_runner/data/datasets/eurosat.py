"""EuroSAT (RGB), torchvision's layout (sorted folders and files): ZSCL's random 80/20 split, seed 42
(not the paper protocol's last-500-per-class split of ``folders.eurosat_sessions``, which reads the same folder)."""

from collections.abc import Sequence
from pathlib import Path

from torchvision import datasets as tv

from .readers import VisibleFolders, files_of, split_80_20, torchvision_set
from .registry import DatasetSpec, ReadResult, register

# EuroSAT folder -> ZSCL's name (not the paper protocol's names in folders.EUROSAT_CLASSNAMES).
EUROSAT_NAMES = {
    "AnnualCrop": "annual crop land",
    "Forest": "forest",
    "HerbaceousVegetation": "brushland or shrubland",
    "Highway": "highway or road",
    "Industrial": "industrial buildings or commercial buildings",
    "Pasture": "pasture land",
    "PermanentCrop": "permanent crop land",
    "Residential": "residential buildings or homes or apartments",
    "River": "river",
    "SeaLake": "lake or sea",
}


class VisibleEuroSAT(VisibleFolders, tv.EuroSAT):
    pass


def eurosat_names(folders: Sequence[str]) -> list[str]:
    return [EUROSAT_NAMES.get(folder, folder) for folder in folders]


def read(root: Path) -> ReadResult:
    dataset = torchvision_set("eurosat", root, VisibleEuroSAT)  # an ImageFolder: sorted folders, sorted files
    return (*split_80_20(files_of("eurosat", root, dataset)), list(dataset.classes))


SPEC = register(
    DatasetSpec(
        name="eurosat",
        folder="eurosat/2750",
        read=read,
        templates=(
            "a centered satellite photo of {}.",
            "a centered satellite photo of a {}.",
            "a centered satellite photo of the {}.",
        ),
        clean_names=eurosat_names,
        download="EuroSAT",
        split="ZSCL's random 80/20 (seed 42)",
        fetch_hint=(
            "EuroSAT (RGB) can be downloaded with `python scripts/prepare_data.py eurosat --root <root> --download`\n"
            "  (torchvision.datasets.EuroSAT(root, download=True)); by hand: fetch EuroSAT.zip\n"
            "  (https://zenodo.org/records/7711810/files/EuroSAT_RGB.zip or\n"
            "  https://huggingface.co/datasets/torchgeo/eurosat/resolve/main/EuroSAT.zip) and unzip it so that\n"
            "  <root>/eurosat/2750/<ClassName>/<ClassName>_<n>.jpg exists."
        ),
    )
)
