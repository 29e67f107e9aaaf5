"""Errors of the real datasets, and the one image opener every real dataset uses.

A missing dataset fails with :class:`DatasetMissing`: what is missing, the command that checks
and prepares the dataset, and what to fetch by hand when it cannot be downloaded. A corrupt
or unreadable image fails with :class:`CorruptImage`, naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

PREPARE_COMMAND = "python scripts/prepare_data.py {name} --root {root}"

# What to fetch by hand, per dataset (also printed by scripts/prepare_data.py).
FETCH_HINTS: dict[str, str] = {
    "coco": (
        "MS-COCO 2014 is not downloaded automatically. Fetch, into <root>:\n"
        "  - http://images.cocodataset.org/zips/train2014.zip  -> unzip to <root>/train2014/\n"
        "  - http://images.cocodataset.org/zips/val2014.zip    -> unzip to <root>/val2014/\n"
        "  - http://images.cocodataset.org/annotations/annotations_trainval2014.zip\n"
        "      -> <root>/annotations/instances_train2014.json and instances_val2014.json\n"
        "  - Karpathy's split file dataset_coco.json (inside caption_datasets.zip,\n"
        "      https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip) -> <root>/dataset_coco.json"
    ),
    "flickr30k": (
        "Flickr30K images are distributed by their authors on request\n"
        "  (https://shannon.cs.illinois.edu/DenotationGraph/ , form 'Flickr30k images'):\n"
        "  - flickr30k-images.tar.gz -> untar to <root>/flickr30k-images/*.jpg\n"
        "  - Karpathy's split file dataset_flickr30k.json (inside caption_datasets.zip,\n"
        "      https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip) -> <root>/dataset_flickr30k.json"
    ),
    "tiered_imagenet": (
        "tiered-ImageNet classes are ImageNet-1k (ILSVRC-2012) classes; <root> is an ImageNet folder with one\n"
        "  sub-folder per class, <root>/<wnid>/*.JPEG (e.g. the extracted ILSVRC2012_img_train.tar from\n"
        "  https://image-net.org/download-images.php, after registration). Only the classes of the class list\n"
        "  (default clipcl_runner/data/class_lists/tiered_imagenet_test.txt) are read."
    ),
    "eurosat": (
        "EuroSAT (RGB) can be downloaded with `python scripts/prepare_data.py eurosat --root <root> --download`\n"
        "  (torchvision.datasets.EuroSAT(root, download=True)); by hand: fetch EuroSAT.zip\n"
        "  (https://zenodo.org/records/7711810/files/EuroSAT_RGB.zip or\n"
        "  https://huggingface.co/datasets/torchgeo/eurosat/resolve/main/EuroSAT.zip) and unzip it so that\n"
        "  <root>/eurosat/2750/<ClassName>/<ClassName>_<n>.jpg exists."
    ),
}


def _torchvision_hint(what: str, layout: str, by_hand: str) -> str:
    return (
        f"{what} can be downloaded with `python scripts/prepare_data.py <name> --root <root> --download`\n"
        f"  (torchvision's own download); by hand: {by_hand}\n"
        f"  so that {layout} exists."
    )


# ZSCL's benchmark datasets (clipcl_runner.data.vision_datasets): <root> holds them in torchvision's layout.
_ZSCL_HINTS = {
    "aircraft": _torchvision_hint(
        "FGVC-Aircraft 2013b",
        "<root>/fgvc-aircraft-2013b/data/images_variant_train.txt",
        "fetch https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz and untar it into <root>",
    ),
    "caltech101": _torchvision_hint(
        "Caltech-101",
        "<root>/caltech101/101_ObjectCategories/<category>/image_0001.jpg",
        "fetch https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip, unzip it and untar the\n"
        "  101_ObjectCategories.tar.gz inside into <root>/caltech101/",
    ),
    "cifar10": _torchvision_hint(
        "CIFAR-10",
        "<root>/cifar-10-batches-py/data_batch_1 ... test_batch, batches.meta",
        "fetch https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and untar it into <root>",
    ),
    "cifar100": _torchvision_hint(
        "CIFAR-100",
        "<root>/cifar-100-python/{train,test,meta}",
        "fetch https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz and untar it into <root>",
    ),
    "dtd": _torchvision_hint(
        "DTD (Describable Textures)",
        "<root>/dtd/dtd/labels/train1.txt and <root>/dtd/dtd/images/<class>/",
        "fetch https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz and untar it into <root>/dtd/",
    ),
    "flowers": _torchvision_hint(
        "Oxford Flowers-102",
        "<root>/flowers-102/{jpg/,imagelabels.mat,setid.mat}",
        "fetch 102flowers.tgz, imagelabels.mat and setid.mat from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/\n"
        "  into <root>/flowers-102/ and untar 102flowers.tgz there",
    ),
    "food": _torchvision_hint(
        "Food-101",
        "<root>/food-101/{images/,meta/train.json,meta/test.json}",
        "fetch http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz and untar it into <root>",
    ),
    "mnist": _torchvision_hint(
        "MNIST",
        "<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
        "fetch the four *-ubyte.gz files from https://ossci-datasets.s3.amazonaws.com/mnist/ and gunzip them\n"
        "  into <root>/MNIST/raw/",
    ),
    "oxford_pet": _torchvision_hint(
        "Oxford-IIIT Pet",
        "<root>/oxford-iiit-pet/{images/,annotations/trainval.txt,annotations/test.txt}",
        "fetch https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz and .../annotations.tar.gz and untar\n"
        "  both into <root>/oxford-iiit-pet/",
    ),
    "sun397": _torchvision_hint(
        "SUN397 (37 GB)",
        "<root>/SUN397/{ClassName.txt,a/abbey/sun_*.jpg,...}",
        "fetch http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz and untar it into <root>",
    ),
    "stanford_cars": (
        "Stanford Cars cannot be downloaded automatically (its original URL is gone; torchvision's download\n"
        "  is disabled). Follow https://github.com/pytorch/vision/issues/7545#issuecomment-1631441616 :\n"
        "  the images from Kaggle (https://www.kaggle.com/datasets/jessicali9530/stanford-cars-dataset, remove the\n"
        "  doubled folders such as cars_train/cars_train), car_devkit.tgz from\n"
        "  https://github.com/pytorch/vision/files/11644847/car_devkit.tgz and cars_test_annos_withlabels.mat, so that\n"
        "  <root>/stanford_cars/devkit/{cars_meta.mat,cars_train_annos.mat}, <root>/stanford_cars/cars_train/*.jpg,\n"
        "  <root>/stanford_cars/cars_test/*.jpg and <root>/stanford_cars/cars_test_annos_withlabels.mat exist."
    ),
    "tinyimagenet": (
        "TinyImageNet-200 is not downloaded automatically. Fetch http://cs231n.stanford.edu/tiny-imagenet-200.zip\n"
        "  and unzip it into <root>, so that <root>/tiny-imagenet-200/{wnids.txt,words.txt,train/<wnid>/images/,\n"
        "  val/val_annotations.txt,val/images/} exist (keep the layout of the zip)."
    ),
    "imagenet": (
        "ImageNet-1k (ILSVRC-2012) needs registration at https://image-net.org/download-images.php. Fetch\n"
        "  ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz into <root>/imagenet/ and run\n"
        "  python -c \"import torchvision; [torchvision.datasets.ImageNet('<root>/imagenet', split=s) for s in ('train', 'val')]\"\n"
        "  which unpacks them into <root>/imagenet/train/<wnid>/*.JPEG and <root>/imagenet/val/<wnid>/*.JPEG\n"
        "  (1000 class folders each)."
    ),
}
FETCH_HINTS.update({name: hint.replace("<name>", name) for name, hint in _ZSCL_HINTS.items()})


def prepare_command(name: str, root: str | os.PathLike) -> str:
    return PREPARE_COMMAND.format(name=name, root=root)


class DatasetMissing(FileNotFoundError):
    """A dataset (or a part of it) is not where the config says it is."""

    def __init__(self, dataset: str, missing: str | os.PathLike, root: str | os.PathLike, detail: str = ""):
        self.dataset, self.missing, self.root, self.detail = dataset, str(missing), str(root), detail
        lines = [f"Dataset '{dataset}' is not ready: missing {missing}" + (f" ({detail})" if detail else "") + "."]
        lines.append(f"Check and prepare it with: {prepare_command(dataset, root)}")
        hint = FETCH_HINTS.get(dataset)
        if hint:
            lines.append(hint.replace("<root>", str(root)))
        super().__init__("\n".join(lines))
        self.filename = str(missing)

    def __str__(self) -> str:  # FileNotFoundError would otherwise print "[Errno ...]" forms for some arg shapes
        return self.args[0]

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.dataset, self.missing, self.root, self.detail))


class CorruptImage(OSError):
    """An image file exists but cannot be decoded."""

    def __init__(self, path: str | os.PathLike, reason: str = ""):
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot read image {path}: {reason}" if reason else f"cannot read image {path}")
        self.filename = str(path)

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


def open_image(path: str | os.PathLike, dataset: str | None = None, root: str | os.PathLike | None = None) -> Image.Image:
    """Open and fully decode ``path`` as an RGB PIL image.

    A missing file raises :class:`DatasetMissing` when ``dataset`` and ``root`` are given (else a
    FileNotFoundError naming the file); a file PIL cannot decode raises :class:`CorruptImage` naming it.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert() loads the pixels: truncated files fail here
    except FileNotFoundError:
        if dataset is not None and root is not None:
            raise DatasetMissing(dataset, path, root, "image file") from None
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise CorruptImage(path, f"{type(error).__name__}: {error}") from error
