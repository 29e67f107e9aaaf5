"""Is it faster to crop COCO objects lazily from the full images, or once into a cache of crops?

Writes COCO-sized JPEGs (640x480, quality 90) with 7 boxes each (COCO train2014 averages ~7.3
annotations per image), then times one training epoch's worth of loading, both ways, through the
paper's train transform at 224 px, and the one-time cost of writing the crop cache. Prints
images/s for each and the ratio against lazy cropping measured in the same run.

    python scripts/bench_coco_crops.py [--images 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision import transforms as T

BOXES = [
    (10, 20, 200, 150),
    (300, 40, 120, 300),
    (50, 300, 90, 60),
    (400, 380, 200, 90),
    (220, 200, 60, 60),
    (5, 5, 630, 470),
    (500, 10, 100, 100),
]
TRANSFORM = T.Compose(
    [
        T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
        T.RandomCrop(224),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
    ]
)


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        paths = []
        for index in range(args.images):
            # smooth noise compresses like a photo (pure noise would make the JPEGs unrealistically large)
            small = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
            path = root / f"{index}.jpg"
            Image.fromarray(small).resize((640, 480), Image.BICUBIC).save(path, quality=90)
            paths.append(path)
        crops = len(paths) * len(BOXES)

        def lazy():
            for path in paths:
                for x, y, w, h in BOXES:
                    with Image.open(path) as image:
                        TRANSFORM(image.convert("RGB").crop((x, y, x + w, y + h)))

        cache = root / "crops"
        cache.mkdir()

        def write_cache():
            for index, path in enumerate(paths):
                with Image.open(path) as image:
                    image = image.convert("RGB")
                    for k, (x, y, w, h) in enumerate(BOXES):
                        image.crop((x, y, x + w, y + h)).save(cache / f"{index}_{k}.jpg", quality=95)

        def cached():
            for crop in sorted(cache.iterdir()):
                with Image.open(crop) as image:
                    TRANSFORM(image.convert("RGB"))

        lazy_s = timed(lazy)
        cache_s = timed(write_cache)
        cached_s = timed(cached)
    print(f"# {args.images} images x {len(BOXES)} boxes = {crops} crops, 224 px train transform, 1 process")
    print(f"lazy crop from full image : {crops / lazy_s:8.1f} crops/s  1.00x")
    print(f"crop cache (per epoch)    : {crops / cached_s:8.1f} crops/s  {lazy_s / cached_s:.2f}x")
    print(f"writing the crop cache    : {crops / cache_s:8.1f} crops/s  (once)")


if __name__ == "__main__":
    main()
