"""The pre-decoded image cache gives the images of the original pipeline (for the same random draws)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from clipcl_runner.data.decoded import DecodedImages, decoded, split_transform
from clipcl_runner.data.folders import ImageFiles
from clipcl_runner.data.stages import TensorImages
from clipcl_runner.data.vision_datasets import ArrayImages

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _convert_to_rgb(image):  # the name open_clip's pipelines use
    return image.convert("RGB")


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> list:
    folder = tmp_path_factory.mktemp("jpegs")
    paths = []
    for k, (w, h) in enumerate([(40, 30), (25, 50), (64, 64)]):
        pixels = np.random.default_rng(k).integers(0, 256, (h, w, 3), dtype=np.uint8)
        paths.append(folder / f"{k}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


TRAIN = T.Compose(
    [
        T.Resize(20, interpolation=T.InterpolationMode.BICUBIC),
        T.RandomCrop(16),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ]
)
EVAL = T.Compose([T.Resize(18), T.CenterCrop(16), _convert_to_rgb, T.ToTensor(), T.Normalize(MEAN, STD)])


@pytest.mark.parametrize("transform", [TRAIN, EVAL], ids=["resize-randomcrop-flip", "resize-centrecrop"])
def test_decoded_images_equal_the_original_pipeline(jpegs, transform):
    files = ImageFiles(jpegs, [0, 1, 2], transform)
    cached = DecodedImages(files)
    assert all(image.dtype == torch.uint8 for image in cached.images)
    for index in range(len(files)):
        for draw in range(3):
            torch.manual_seed(draw)
            expected, label = files[index]
            torch.manual_seed(draw)
            image, cached_label = cached[index]
            assert cached_label == label
            torch.testing.assert_close(image, expected, rtol=0, atol=1e-6)


def test_split_keeps_random_steps_per_sample():
    head, tail = split_transform(
        T.Compose([T.RandomResizedCrop(16), _convert_to_rgb, T.ToTensor(), T.Normalize(MEAN, STD)])
    )
    assert head == [] and isinstance(tail[0], T.RandomResizedCrop) and isinstance(tail[1], T.ConvertImageDtype)
    assert len(tail) == 3  # the RGB conversion is dropped: images are decoded as RGB


def test_arrays_and_tensors(jpegs):
    grey = ArrayImages(np.full((2, 28, 28), 7, dtype=np.uint8), [3, 4], T.Compose([T.Resize(16), T.ToTensor()]))
    image, label = decoded(grey)[1]
    assert image.shape == (3, 16, 16) and label == 4 and torch.allclose(image, torch.full_like(image, 7 / 255))
    in_memory = TensorImages(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]))
    assert decoded(in_memory) is in_memory  # nothing to decode


class Flatten(torch.nn.Module):
    """A stand-in image tower: the pixels themselves are the features."""

    def encode_image(self, images, normalize=False):
        return images.flatten(1)


def fixed_head(model, classnames, templates):
    return torch.randn(3 * 16 * 16, len(classnames), generator=torch.Generator().manual_seed(0))


def test_evaluator_decodes_each_test_set_once_and_scores_the_same(jpegs):
    from clipcl_runner.data.stages import Stage
    from clipcl_runner.evaluation import Evaluator

    files = ImageFiles(jpegs, [0, 1, 0], EVAL)
    stages = [Stage("S", ["a", "b"], files, files)]
    plain = Evaluator(stages, [], None, torch.device("cpu"))
    cached = Evaluator(stages, [], None, torch.device("cpu"), decoded_cache=True)
    plain.head = cached.head = fixed_head
    decoded_sets = []
    for _ in range(2):
        assert cached(Flatten(), 1) == plain(Flatten(), 1)
        decoded_sets.append(cached._decoded[files.cache_key])
    assert decoded_sets[0] is decoded_sets[1] and isinstance(decoded_sets[0], DecodedImages)
