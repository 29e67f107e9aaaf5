"""Food-101: the official ``train`` / ``test`` lists."""

from torchvision import datasets as tv

from .readers import two_splits
from .registry import DatasetSpec, register, torchvision_hint

SPEC = register(
    DatasetSpec(
        name="food",
        folder="food-101",
        read=two_splits("food", tv.Food101, {"split": "train"}, {"split": "test"}),
        templates=("a photo of a {}, a type of food.",),
        download="Food101",
        split="official train / test lists",
        fetch_hint=torchvision_hint(
            "Food-101",
            "<root>/food-101/{images/,meta/train.json,meta/test.json}",
            "fetch http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz and untar it into <root>",
        ),
    )
)
