"""DTD (Describable Textures), partition 1: ``train1`` / ``test1`` (ZSCL trains on train only, not train+val)."""

from torchvision import datasets as tv

from .readers import two_splits
from .registry import DatasetSpec, register, torchvision_hint

SPEC = register(
    DatasetSpec(
        name="dtd",
        folder="dtd/dtd",
        read=two_splits("dtd", tv.DTD, {"split": "train", "partition": 1}, {"split": "test", "partition": 1}),
        templates=(
            "a photo of a {} texture.",
            "a photo of a {} pattern.",
            "a photo of a {} thing.",
            "a photo of a {} object.",
            "a photo of the {} texture.",
            "a photo of the {} pattern.",
            "a photo of the {} thing.",
            "a photo of the {} object.",
        ),
        download="DTD",
        split="partition 1: train1 / test1",
        fetch_hint=torchvision_hint(
            "DTD (Describable Textures)",
            "<root>/dtd/dtd/labels/train1.txt and <root>/dtd/dtd/images/<class>/",
            "fetch https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz and untar it into <root>/dtd/",
        ),
    )
)
