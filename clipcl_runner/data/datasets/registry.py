"""One record per classification dataset: where it lives, how it is read, named, prompted and fetched.

A dataset module of this package builds a :class:`DatasetSpec` and passes it to :func:`register`;
every consumer (``vision_datasets.load_vision_dataset``, ``prompts``, ``errors.DatasetMissing``,
``scripts/prepare_data.py``) asks :func:`get` for it, so adding a dataset touches its own file and a
task YAML only. The package's modules are imported (and so registered) on the first lookup, the way
mammoth finds its datasets by scanning its ``datasets/`` folder; a test or a notebook may register
a spec of its own at any time.

This module stays free of torch and torchvision: :mod:`..errors` reads fetch hints through it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (train images, test images, class names as the dataset's files store them); images are
# ``folders.ImageFiles`` or ``readers.ArrayImages`` with labels 0..len(names)-1, no transform yet.
ReadResult = tuple[Any, Any, list[str]]


def spaced(names: Sequence[str]) -> list[str]:
    """ZSCL's ``process_labels``: underscores become spaces (``aquarium_fish`` -> ``aquarium fish``)."""
    return [str(name).replace("_", " ") for name in names]


def as_is(names: Sequence[str]) -> list[str]:
    """Names that are already readable (the reader chose them)."""
    return [str(name) for name in names]


def torchvision_hint(what: str, layout: str, by_hand: str) -> str:
    """The fetch hint of a dataset torchvision can download (``<name>`` becomes the spec's name)."""
    return (
        f"{what} can be downloaded with `python scripts/prepare_data.py <name> --root <root> --download`\n"
        f"  (torchvision's own download); by hand: {by_hand}\n"
        f"  so that {layout} exists."
    )


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the runner and ``scripts/prepare_data.py`` know about one dataset.

    ``folder``: below the data folder (``paths.data_dir``); its presence says the dataset is there.
    ``read(root)`` -> :data:`ReadResult` with the train/test rule ``split`` applied; it raises
    ``errors.DatasetMissing`` for anything missing. ``clean_names`` turns the stored names into the
    prompted ones; ``raw_names=True`` lets ``load_vision_dataset(raw_names=True)`` skip it (ZSCL's CIL
    prompts CIFAR's stored ``aquarium_fish``). ``templates``: the evaluation ensemble (a sequence, or a
    function returning one, for lists loaded lazily); training uses its first. ``fetch_hint``: what to
    fetch by hand, ``<root>`` standing for the data folder. ``download``: the ``torchvision.datasets``
    class whose ``download=True`` fetches it (None: by hand only).
    """

    name: str
    folder: str
    read: Callable[[Path], ReadResult]
    templates: Sequence[str] | Callable[[], Sequence[str]]
    fetch_hint: str
    clean_names: Callable[[Sequence[str]], list[str]] = spaced
    download: str | None = None
    split: str = ""
    raw_names: bool = False

    def hint(self) -> str:
        return self.fetch_hint.replace("<name>", self.name)

    def template_list(self) -> list[str]:
        templates = self.templates() if callable(self.templates) else self.templates
        return [str(t) for t in templates]

    def class_names(self, stored: Sequence[str], raw: bool = False) -> list[str]:
        return as_is(stored) if raw and self.raw_names else list(self.clean_names(stored))

    def torchvision_class(self):
        """The torchvision class that downloads this dataset (looked up on use: tests replace it)."""
        if self.download is None:
            return None
        from torchvision import datasets

        return getattr(datasets, self.download)


_REGISTRY: dict[str, DatasetSpec] = {}
_loaded = False


def _load_builtins() -> None:
    """Import every module of this package once; each dataset module registers its spec (the shared
    modules, registry and readers, register nothing)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    package = __name__.rsplit(".", 1)[0]
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package}.{module.name}")


def register(spec: DatasetSpec, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` under ``spec.name``; a second spec of the same name is refused unless ``replace``."""
    if not spec.name or not spec.folder:
        raise ValueError(f"a dataset spec needs a name and a folder (got name={spec.name!r}, folder={spec.folder!r}).")
    known = _REGISTRY.get(spec.name)
    if known is not None and known is not spec and not replace:
        raise ValueError(f"dataset '{spec.name}' is already registered; pass replace=True to change it.")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def get(name: str) -> DatasetSpec:
    _load_builtins()
    if name not in _REGISTRY:
        raise KeyError(f"unknown dataset '{name}'; known: {', '.join(names())}")
    return _REGISTRY[name]


def find(name: str) -> DatasetSpec | None:
    _load_builtins()
    return _REGISTRY.get(name)


def names() -> tuple[str, ...]:
    """Every registered dataset, sorted."""
    _load_builtins()
    return tuple(sorted(_REGISTRY))
