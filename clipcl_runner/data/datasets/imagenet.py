"""ImageNet-1k (ILSVRC-2012): ``imagenet/train/<wnid>`` / ``imagenet/val/<wnid>`` (val sorted into class
folders), OpenAI's readable names and 80 templates (open_clip's copy). Also ZSCL's MTIL reference images
(``reference.imagenet_cc_reference`` reads ``<root>/imagenet/train``)."""

from collections.abc import Sequence
from pathlib import Path

from ..errors import DatasetMissing
from .readers import dataset_folder, read_image_folder
from .registry import DatasetSpec, ReadResult, register


def openai_imagenet_templates() -> list[str]:
    """OpenAI's 80 ImageNet templates as ``str.format`` strings (first: "a bad photo of a {}.")."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]


def imagenet_names(folders: Sequence[str] = ()) -> list[str]:
    """OpenAI's readable names of the 1000 ILSVRC-2012 classes, in sorted-wnid order."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def read(root: Path) -> ReadResult:
    base = dataset_folder("imagenet", root)
    train, val = (read_image_folder("imagenet", base / split, root) for split in ("train", "val"))
    folders = [sorted({Path(p).parent.name for p in split.paths}) for split in (train, val)]
    if folders[0] != folders[1] or len(folders[0]) != 1000:
        raise DatasetMissing(
            "imagenet",
            base,
            root,
            f"train/val have {len(folders[0])}/{len(folders[1])} class folders, not the same 1000",
        )
    return train, val, folders[0]


SPEC = register(
    DatasetSpec(
        name="imagenet",
        folder="imagenet",
        read=read,
        templates=openai_imagenet_templates,
        clean_names=imagenet_names,  # wnids (sorted) -> OpenAI's names
        download=None,
        split="official train / val (val sorted into class folders)",
        fetch_hint=(
            "ImageNet-1k (ILSVRC-2012) needs registration at https://image-net.org/download-images.php. Fetch\n"
            "  ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz into <root>/imagenet/ and run\n"
            "  python -c \"import torchvision; [torchvision.datasets.ImageNet('<root>/imagenet', split=s) for s in ('train', 'val')]\"\n"
            "  which unpacks them into <root>/imagenet/train/<wnid>/*.JPEG and <root>/imagenet/val/<wnid>/*.JPEG\n"
            "  (1000 class folders each)."
        ),
    )
)
