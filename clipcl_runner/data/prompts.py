"""Readable class names and prompt templates of the benchmark datasets, read from their records.

ZSCL (Zheng et al. 2023) evaluates every MTIL dataset with the template ensemble CLIP's authors
published for it, and trains with ONE template: the first of that ensemble (ZSCL's
``dataset.template`` is ``templates[0]``). Templates are ``str.format`` strings with one ``{}``;
each dataset's own live in its record (:mod:`.datasets`), as do the class-name clean-ups
re-exported here.
"""

from __future__ import annotations

from . import datasets
from .datasets.caltech101 import CALTECH101_NAMES, caltech101_names  # noqa: F401 - public names of this module
from .datasets.eurosat import EUROSAT_NAMES, eurosat_names  # noqa: F401
from .datasets.flowers import FLOWERS_NAMES  # noqa: F401
from .datasets.imagenet import imagenet_names  # noqa: F401
from .datasets.registry import spaced  # noqa: F401
from .datasets.tinyimagenet import CLASS_NAME_DIR, read_wnid_names, tinyimagenet_names  # noqa: F401


def templates(dataset: str) -> list[str]:
    """The evaluation template ensemble of ``dataset``."""
    spec = datasets.find(dataset)
    if spec is None:
        raise KeyError(f"no templates for dataset '{dataset}' (known: {list(datasets.names())})")
    return spec.template_list()


def train_template(dataset: str) -> str:
    """ZSCL's single training prompt: the first template of the ensemble."""
    return templates(dataset)[0]
