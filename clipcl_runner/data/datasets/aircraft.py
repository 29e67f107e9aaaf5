"""FGVC-Aircraft 2013b, variant level (100 classes): the official ``train`` / ``test`` split."""

from torchvision import datasets as tv

from .readers import two_splits
from .registry import DatasetSpec, register, torchvision_hint

SPEC = register(
    DatasetSpec(
        name="aircraft",
        folder="fgvc-aircraft-2013b",
        read=two_splits("aircraft", tv.FGVCAircraft, {"split": "train"}, {"split": "test"}),
        templates=("a photo of a {}, a type of aircraft.", "a photo of the {}, a type of aircraft."),
        download="FGVCAircraft",
        split="official train / test (variant level, 100 classes)",
        fetch_hint=torchvision_hint(
            "FGVC-Aircraft 2013b",
            "<root>/fgvc-aircraft-2013b/data/images_variant_train.txt",
            "fetch https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz and untar it into <root>",
        ),
    )
)
