"""Readable class names and prompt templates of ZSCL's benchmark datasets.

ZSCL (Zheng et al. 2023) evaluates every MTIL dataset with the template ensemble CLIP's authors
published for it, and trains with ONE template: the first of that ensemble (ZSCL's
``dataset.template`` is ``templates[0]``). Templates here are ``str.format`` strings with one ``{}``.

Class names: where a dataset's own labels are not readable (Caltech-101 folder names, EuroSAT's
CamelCase folders, Flowers-102's numeric labels, TinyImageNet's WordNet ids) the names are the ones
ZSCL / continual-CLIP use; elsewhere they are the dataset's own names with underscores as spaces
(ZSCL's ``process_labels``). ImageNet's names and 80 templates come from open_clip's copy of OpenAI's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

CLASS_NAME_DIR = Path(__file__).parent / "class_names"

_CIFAR = (
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

_CALTECH101 = (
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

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "aircraft": ("a photo of a {}, a type of aircraft.", "a photo of the {}, a type of aircraft."),
    "caltech101": _CALTECH101,
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    "dtd": (
        "a photo of a {} texture.",
        "a photo of a {} pattern.",
        "a photo of a {} thing.",
        "a photo of a {} object.",
        "a photo of the {} texture.",
        "a photo of the {} pattern.",
        "a photo of the {} thing.",
        "a photo of the {} object.",
    ),
    "eurosat": (
        "a centered satellite photo of {}.",
        "a centered satellite photo of a {}.",
        "a centered satellite photo of the {}.",
    ),
    "flowers": ("a photo of a {}, a type of flower.",),
    "food": ("a photo of a {}, a type of food.",),
    "mnist": ('a photo of the number: "{}".',),
    "oxford_pet": ("a photo of a {}, a type of pet.",),
    "stanford_cars": (
        "a photo of a {}, a type of car.",
        "a photo of a {}.",
        "a photo of the {}.",
        "a photo of my {}.",
        "i love my {}!",
        "a photo of my dirty {}.",
        "a photo of my clean {}.",
        "a photo of my new {}.",
        "a photo of my old {}.",
    ),
    "sun397": ("a photo of a {}.", "a photo of the {}."),
}
_IMAGENET_LIKE = ("imagenet", "tinyimagenet")  # OpenAI's 80 ImageNet templates (first: "a bad photo of a {}.")


def templates(dataset: str) -> list[str]:
    """The evaluation template ensemble of ``dataset``."""
    if dataset in _IMAGENET_LIKE:
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        return [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]
    if dataset not in _TEMPLATES:
        raise KeyError(f"no templates for dataset '{dataset}' (known: {sorted([*_TEMPLATES, *_IMAGENET_LIKE])})")
    return list(_TEMPLATES[dataset])


def train_template(dataset: str) -> str:
    """ZSCL's single training prompt: the first template of the ensemble."""
    return templates(dataset)[0]


# --------------------------------------------------------------------------- class names
def spaced(names: Sequence[str]) -> list[str]:
    """ZSCL's ``process_labels``: underscores become spaces (``aquarium_fish`` -> ``aquarium fish``)."""
    return [str(name).replace("_", " ") for name in names]


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

# Flowers-102 label k (0-based, the order of imagelabels.mat) -> name.
FLOWERS_NAMES = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon",
    "colt's foot", "king protea", "spear thistle", "yellow iris", "globe-flower", "purple coneflower",
    "peruvian lily", "balloon flower", "giant white arum lily", "fire lily", "pincushion flower",
    "fritillary", "red ginger", "grape hyacinth", "corn poppy", "prince of wales feathers",
    "stemless gentian", "artichoke", "sweet william", "carnation", "garden phlox", "love in the mist",
    "mexican aster", "alpine sea holly", "ruby-lipped cattleya", "cape flower", "great masterwort",
    "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia",
    "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion",
    "petunia", "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura",
    "geranium", "orange dahlia", "pink-yellow dahlia", "cautleya spicata", "japanese anemone",
    "black-eyed susan", "silverbush", "californian poppy", "osteospermum", "spring crocus",
    "bearded iris", "windflower", "tree poppy", "gazania", "azalea", "water lily", "rose",
    "thorn apple", "morning glory", "passion flower", "lotus", "toad lily", "anthurium", "frangipani",
    "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow", "magnolia", "cyclamen",
    "watercress", "canna lily", "hippeastrum", "bee balm", "ball moss", "foxglove", "bougainvillea",
    "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower", "trumpet creeper",
    "blackberry lily",
)


def caltech101_names(folders: Sequence[str]) -> list[str]:
    return [CALTECH101_NAMES.get(folder, folder.replace("_", " ")) for folder in folders]


def eurosat_names(folders: Sequence[str]) -> list[str]:
    return [EUROSAT_NAMES.get(folder, folder) for folder in folders]


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


def imagenet_names() -> list[str]:
    """OpenAI's readable names of the 1000 ILSVRC-2012 classes, in sorted-wnid order."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)
