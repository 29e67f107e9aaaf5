"""Oxford-IIIT Pet: ``trainval`` / ``test``."""

from torchvision import datasets as tv

from .readers import two_splits
from .registry import DatasetSpec, register, torchvision_hint

SPEC = register(
    DatasetSpec(
        name="oxford_pet",
        folder="oxford-iiit-pet",
        read=two_splits("oxford_pet", tv.OxfordIIITPet, {"split": "trainval"}, {"split": "test"}),
        templates=("a photo of a {}, a type of pet.",),
        download="OxfordIIITPet",
        split="official trainval / test",
        fetch_hint=torchvision_hint(
            "Oxford-IIIT Pet",
            "<root>/oxford-iiit-pet/{images/,annotations/trainval.txt,annotations/test.txt}",
            "fetch https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz and .../annotations.tar.gz and untar\n"
            "  both into <root>/oxford-iiit-pet/",
        ),
    )
)
