"""CIFAR-100 (fine labels): the official train / test files (MTIL and ZSCL's class-incremental CIFAR-100)."""

from .cifar10 import CIFAR_TEMPLATES, cifar_reader
from .registry import DatasetSpec, register, torchvision_hint

SPEC = register(
    DatasetSpec(
        name="cifar100",
        folder="cifar-100-python",
        read=cifar_reader(
            "cifar100", {"train": ["train"], "test": ["test"]}, "fine_labels", "meta", "fine_label_names"
        ),
        templates=CIFAR_TEMPLATES,
        raw_names=True,  # ZSCL's CIL prompts the stored names (aquarium_fish): cil_sequence(keep_underscores=True)
        download="CIFAR100",
        split="official train / test",
        fetch_hint=torchvision_hint(
            "CIFAR-100",
            "<root>/cifar-100-python/{train,test,meta}",
            "fetch https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and untar it into <root>",
        ),
    )
)
