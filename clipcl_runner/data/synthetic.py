"""The synthetic world as stages and probes for the runner (the offline default).

Tasks teach never-seen shapes (3 per stage); the probes measure what pretraining taught
on held-out (shape, colour) compositions: colour, colour+shape, shape on seen pairs,
novel shapes, and image<->text retrieval with full captions.
"""

from __future__ import annotations

import torch

from ..models import ClipBundle
from . import synthetic_world as world
from .stages import ClassificationProbe, RetrievalProbe, Stage, TensorImages, model_input


def _tensor_set(clip: ClipBundle, images: world.SyntheticSet, labels: torch.Tensor) -> TensorImages:
    return TensorImages(model_input(images.images, clip), labels)


def synthetic_task_sequence(
    clip: ClipBundle,
    num_stages: int = 3,
    train_per_class: int = 200,
    test_per_class: int = 100,
    epochs: int | None = 3,
    iterations: int | None = None,
    prompt: str = "a photo of a {}.",
    world_seed: int = 0,
) -> list[Stage]:
    """Stage t teaches the novel shapes of ``world.NOVEL_TASKS[t]``."""
    if not 1 <= num_stages <= len(world.NOVEL_TASKS):
        raise ValueError(f"tasks.num_stages={num_stages}: the synthetic world has 1..{len(world.NOVEL_TASKS)} tasks.")
    stages = []
    for index, shapes in enumerate(world.NOVEL_TASKS[:num_stages]):
        classnames = list(shapes)
        splits = {}
        for split, per_class in (("train", train_per_class), ("test", test_per_class)):
            made = world.make_set(
                per_class * len(shapes), seed=world.split_seed(world_seed, f"task{index}-{split}"), shapes=shapes
            )
            splits[split] = _tensor_set(clip, made, made.labels(classnames, "shape"))
        stages.append(
            Stage(
                name=f"T{index + 1}",
                classnames=classnames,
                train=splits["train"],
                test=splits["test"],
                train_templates=[prompt],
                epochs=epochs,
                iterations=iterations,
            )
        )
    return stages


def pair_names(pairs) -> list[str]:
    return [f"{colour} {shape}" for shape, colour in pairs]


def synthetic_probes(
    clip: ClipBundle,
    heldout_images: int = 1000,
    seen_images: int = 1000,
    novel_images: int = 600,
    retrieval_images: int = 300,
    captions_per_image: int = 2,
    world_seed: int = 0,
) -> list:
    """The forgetting probes of docs/synthetic_world.md, each on its own seed."""
    seed = lambda split: world.split_seed(world_seed, split)  # noqa: E731

    heldout = world.make_set(heldout_images, seed=seed("probe-heldout"), pairs=sorted(world.HELD_OUT_PAIRS))
    heldout_ds = _tensor_set(clip, heldout, torch.zeros(len(heldout.images), dtype=torch.long))
    all_pairs = [(s, c) for s in world.KNOWN_SHAPES for c in world.COLOURS]
    colours, pairs = list(world.COLOURS), pair_names(all_pairs)

    seen = world.make_set(seen_images, seed=seed("probe-seen"), pairs=world.SEEN_PAIRS)
    novel = world.make_set(novel_images, seed=seed("probe-novel"), shapes=world.NOVEL_SHAPES)
    known, novel_names = list(world.KNOWN_SHAPES), list(world.NOVEL_SHAPES)

    retrieval = world.make_set(
        retrieval_images,
        seed=seed("probe-retrieval"),
        pairs=sorted(world.HELD_OUT_PAIRS),
        captions_per_image=captions_per_image,
        full_captions=True,
    )
    captions = [text for per_image in retrieval.captions for text in per_image]
    text_to_image = torch.tensor([i for i, per_image in enumerate(retrieval.captions) for _ in per_image])

    return [
        ClassificationProbe(
            "colour", heldout_ds, colours, ["a photo of a {} object."], heldout.labels(colours, "colour")
        ),
        ClassificationProbe("colour_shape", heldout_ds, pairs, ["a photo of a {}."], heldout.labels(pairs, "pair")),
        ClassificationProbe(
            "seen_shape", _tensor_set(clip, seen, seen.labels(known, "shape")), known, ["a photo of a {}."]
        ),
        ClassificationProbe(
            "novel_shape",
            _tensor_set(clip, novel, novel.labels(novel_names, "shape")),
            novel_names,
            ["a photo of a {}."],
        ),
        RetrievalProbe(
            "heldout",
            _tensor_set(clip, retrieval, torch.zeros(len(retrieval.images), dtype=torch.long)),
            captions,
            text_to_image,
        ),
    ]


def pretraining_set(num_images: int, captions_per_image: int, world_seed: int = 0) -> world.SyntheticSet:
    """Known shapes on seen (shape, colour) pairs only; novel shapes are never drawn or named."""
    return world.make_set(
        num_images,
        seed=world.split_seed(world_seed, "pretrain"),
        pairs=world.SEEN_PAIRS,
        captions_per_image=captions_per_image,
    )
