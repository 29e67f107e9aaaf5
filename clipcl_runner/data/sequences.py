"""ZSCL's task sequences: MTIL (one stage per dataset) and class-incremental CIFAR-100 / TinyImageNet.

MTIL: every stage is a whole dataset with its own classes, trained for a fixed number of iterations
with one prompt; the runner evaluates every stage's test set with that dataset's template ensemble
after every stage, which is MTIL's accuracy matrix. CIL: the classes of one dataset arrive in a fixed
order, ``initial_classes`` first and then ``increment`` per step; labels are local to the step (the
evaluator offsets them when its head spans all seen classes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from torchvision import transforms as T

from ..models import ClipBundle
from ..zscl_loop import batches_per_epoch
from . import prompts
from .errors import DatasetMissing
from .folders import model_image_size
from .stages import Stage
from .vision_datasets import load_vision_dataset, select_classes

CLASS_ORDER_DIR = Path(__file__).parent / "class_orders"

MTIL_ORDERS: dict[str, tuple[str, ...]] = {
    "order1": (
        "aircraft",
        "caltech101",
        "cifar100",
        "dtd",
        "eurosat",
        "flowers",
        "food",
        "mnist",
        "oxford_pet",
        "stanford_cars",
        "sun397",
    ),
    "order2": (
        "stanford_cars",
        "food",
        "mnist",
        "oxford_pet",
        "flowers",
        "sun397",
        "aircraft",
        "caltech101",
        "dtd",
        "eurosat",
        "cifar100",
    ),
}
MTIL_LR_OVERRIDES = {"aircraft": 5e-5, "mnist": 5e-5}  # ZSCL's scripts: 1e-5 elsewhere


def zscl_train_transform(clip: ClipBundle) -> T.Compose:
    """ZSCL's MTIL training transform (also open_clip's default) at the model's size S: random resized
    crop to S with scale (0.9, 1), bicubic, then the model's mean/std; no flip."""
    height, width = model_image_size(clip)
    return T.Compose(
        [
            T.RandomResizedCrop((height, width), scale=(0.9, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(clip.image_mean, clip.image_std),
        ]
    )


def _order(order: str | Sequence[str]) -> list[str]:
    if isinstance(order, str):
        if order not in MTIL_ORDERS:
            raise ValueError(f"unknown MTIL order '{order}': give {sorted(MTIL_ORDERS)} or a list of dataset names")
        return list(MTIL_ORDERS[order])
    return [str(name) for name in order]


def mtil_sequence(
    clip: ClipBundle,
    root: str | os.PathLike,
    order: str | Sequence[str] = "order1",
    iterations: int | None = 1000,
    lr: float | None = 1e-5,
    lr_overrides: Mapping[str, float] | None = None,
    max_train_per_class: int | None = None,
    max_test_per_class: int | None = None,
    roots: Mapping[str, str | os.PathLike] | None = None,
    epochs: int | None = None,
    extra_steps: int = 0,
) -> list[Stage]:
    """One stage per dataset of ``order`` ("order1", "order2" or a list of names), ZSCL's MTIL.

    Each stage trains ``iterations`` steps (``epochs`` only when iterations is None) at ``lr``, or at
    ``lr_overrides[name]`` (default: 5e-5 for aircraft and mnist), with the dataset's first template;
    its test set is evaluated with the whole ensemble. ``extra_steps`` adds steps after the ``iterations``
    (ZSCL's loop: 1, at lr 0 with ``zscl_loop.zscl_cosine``). Datasets live under ``root`` in torchvision's
    layout, or under ``roots[name]``. Every dataset is opened before training starts: when some are
    missing, the error names the first and lists the others.
    """
    if extra_steps and iterations is None:
        raise ValueError("tasks.extra_steps needs tasks.iterations (the steps are added after them).")
    names = _order(order)
    overrides = dict(MTIL_LR_OVERRIDES if lr_overrides is None else lr_overrides)
    roots = {str(k): v for k, v in (roots or {}).items()}
    train_tf = zscl_train_transform(clip)
    stages, missing = [], []
    for name in names:
        where = roots.get(name, root)
        try:
            data = load_vision_dataset(
                name, where, train_tf, clip.preprocess_eval, max_train_per_class, max_test_per_class
            )
        except DatasetMissing as error:
            missing.append(error)
            continue
        stage_lr = overrides.get(name, lr)
        stages.append(
            Stage(
                name=name,
                classnames=data.classnames,
                train=data.train,
                test=data.test,
                train_templates=[prompts.train_template(name)],
                eval_templates=prompts.templates(name),
                epochs=epochs if iterations is None else None,
                iterations=None if iterations is None else iterations + extra_steps,
                lr=None if stage_lr is None else float(stage_lr),
            )
        )
    if missing:
        first = missing[0]
        others = ", ".join(f"{e.dataset} ({e.missing})" for e in missing[1:])
        detail = first.detail + (f"; also missing: {others}" if others else "")
        raise DatasetMissing(first.dataset, first.missing, first.root, detail)
    return stages


# --------------------------------------------------------------------------- class-incremental
def read_class_order(class_order: str | os.PathLike | Sequence[int], num_classes: int | None = None) -> list[int]:
    """A class order: a list of class indices, a file of whitespace-separated indices (``#`` comments),
    or the name of a shipped one (``cifar100``, ``tinyimagenet``). With ``num_classes`` it must be a
    permutation of ``range(num_classes)``."""
    if isinstance(class_order, (str, os.PathLike)):
        path = Path(class_order).expanduser()
        if not path.is_file():
            shipped = CLASS_ORDER_DIR / f"{class_order}.txt"
            if os.sep in str(class_order) or not shipped.is_file():
                known = sorted(p.stem for p in CLASS_ORDER_DIR.glob("*.txt"))
                raise FileNotFoundError(f"class order '{class_order}' is neither a file nor a shipped order ({known}).")
            path = shipped
        lines = (line.split("#", 1)[0] for line in path.read_text().splitlines())
        order = [int(token) for line in lines for token in line.replace(",", " ").split()]
    else:
        order = [int(c) for c in class_order]
    if num_classes is not None and sorted(order) != list(range(num_classes)):
        raise ValueError(f"class order {class_order!r} is not a permutation of the {num_classes} classes")
    return order


def step_classes(order: Sequence[int], initial_classes: int, increment: int) -> list[list[int]]:
    """Split ``order`` into the base step of ``initial_classes`` and steps of ``increment`` classes."""
    if initial_classes < 1 or increment < 1 or (len(order) - initial_classes) % increment:
        raise ValueError(f"{len(order)} classes cannot be split into {initial_classes} then steps of {increment}.")
    bounds = [0, *range(initial_classes, len(order) + 1, increment)]
    return [list(order[a:b]) for a, b in zip(bounds, bounds[1:])]


TRANSFORMS = ("crop", "eval")


def cil_sequence(
    clip: ClipBundle,
    root: str | os.PathLike,
    dataset: str = "cifar100",
    initial_classes: int | None = None,
    increment: int = 10,
    class_order: str | os.PathLike | Sequence[int] | None = None,
    prompt: str = "a bad photo of a {}.",
    epochs: int | None = 1,
    iterations: int | None = None,
    lr: float | None = None,
    eval_templates: Sequence[str] | None = None,
    train_transform: str = "eval",
    test_transform: str = "eval",
    keep_underscores: bool = False,
    steps_per_task: str | None = None,
    batch_size: int | None = None,
    extra_steps: int = 0,
    max_train_per_class: int | None = None,
    max_test_per_class: int | None = None,
    name: str | None = None,
) -> list[Stage]:
    """ZSCL's class-incremental benchmark: stage t = the classes of step t in ``class_order``.

    ``initial_classes`` (default: ``increment``) classes first, then ``increment`` per step; e.g.
    CIFAR-100 with increment 10 = 10 stages, TinyImageNet 100 + 10 x 10 = 11 stages. Class names
    follow the class order, labels are local to the stage; a stage's test set is its classes' test
    images. ``class_order`` defaults to the shipped order of ``dataset``. Both training and
    evaluation use ``prompt`` (``eval_templates`` to evaluate with others).

    ZSCL's CIL code (``cil/continual_clip/models.py``: ``self.transforms`` is the *training*
    transform of its ``clip.load``, and ``main.py`` builds the train and eval scenarios with it)
    feeds training AND test images through RandomResizedCrop(S, scale 0.9-1, bicubic):
    ``train_transform`` / ``test_transform`` = ``crop`` does that, ``eval`` uses the model's
    deterministic evaluation transform. ``keep_underscores`` keeps the dataset's raw class names
    (ZSCL's CIL prompts CIFAR-100 with ``aquarium_fish``); otherwise underscores become spaces.
    ``steps_per_task`` (needs ``batch_size``): ``official`` = ceil(N/B) steps per epoch, every batch
    of the task's N images including the last partial one, as ZSCL's loader; ``epochs`` =
    floor(N/B); plus ``extra_steps`` (ZSCL: 1, its closing lr-0 step, see ``zscl_loop``).
    ``null`` leaves the count to the trainer (``epochs`` or ``iterations``).
    """
    for key, value in (("train_transform", train_transform), ("test_transform", test_transform)):
        if value not in TRANSFORMS:
            raise ValueError(f"tasks.{key}='{value}' is not one of {TRANSFORMS}.")
    if steps_per_task is not None and (batch_size is None or not epochs or iterations is not None):
        raise ValueError(
            f"tasks.steps_per_task={steps_per_task} counts steps from tasks.epochs and tasks.batch_size "
            "(set batch_size: ${trainer.batch_size}, epochs >= 1, iterations: null), or set steps_per_task: null."
        )
    if extra_steps and steps_per_task is None:
        raise ValueError("tasks.extra_steps needs tasks.steps_per_task (official | epochs) to add the steps to.")
    data = load_vision_dataset(dataset, root, raw_names=keep_underscores)
    order = read_class_order(dataset if class_order is None else class_order, len(data.classnames))
    eval_tf = clip.preprocess_eval
    transforms = {"crop": zscl_train_transform(clip), "eval": eval_tf}
    steps = step_classes(order, increment if initial_classes is None else int(initial_classes), int(increment))
    stages = []
    for t, classes in enumerate(steps):
        train = select_classes(data.train, classes, transforms[train_transform], max_train_per_class)
        stage_iterations = iterations
        if steps_per_task is not None:
            stage_iterations = epochs * batches_per_epoch(len(train), int(batch_size), steps_per_task) + extra_steps
        stages.append(
            Stage(
                name=f"{name or dataset}_s{t + 1}",
                classnames=[data.classnames[c] for c in classes],
                train=train,
                test=select_classes(data.test, classes, transforms[test_transform], max_test_per_class),
                train_templates=[prompt],
                eval_templates=list(eval_templates) if eval_templates else [prompt],
                epochs=None if stage_iterations else epochs,
                iterations=stage_iterations,
                lr=lr,
            )
        )
    return stages
