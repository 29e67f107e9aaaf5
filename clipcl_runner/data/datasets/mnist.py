"""MNIST: the official train / test files, in memory."""

from pathlib import Path

from torchvision import datasets as tv

from .readers import ArrayImages, torchvision_set
from .registry import DatasetSpec, ReadResult, register, torchvision_hint


def read(root: Path) -> ReadResult:
    def split(train: bool) -> ArrayImages:
        dataset = torchvision_set("mnist", root, tv.MNIST, train=train)
        return ArrayImages(dataset.data.numpy(), dataset.targets.tolist())

    return split(True), split(False), list(tv.MNIST.classes)


SPEC = register(
    DatasetSpec(
        name="mnist",
        folder="MNIST/raw",
        read=read,
        templates=('a photo of the number: "{}".',),
        download="MNIST",
        split="official train / test",
        fetch_hint=torchvision_hint(
            "MNIST",
            "<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
            "fetch the four *-ubyte.gz files from https://ossci-datasets.s3.amazonaws.com/mnist/ and gunzip them\n"
            "  into <root>/MNIST/raw/",
        ),
    )
)
