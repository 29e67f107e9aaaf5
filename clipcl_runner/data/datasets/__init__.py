"""The classification datasets of ZSCL's benchmarks, one registered record (:class:`DatasetSpec`) per file.

Add a dataset: a new module here that builds a :class:`DatasetSpec` and calls :func:`register`
(the modules are found by scanning this folder), then name it in a task YAML (``tasks.order``).
"""

from .registry import DatasetSpec, find, get, names, register, spaced, torchvision_hint, unregister

__all__ = ["DatasetSpec", "find", "get", "names", "register", "spaced", "torchvision_hint", "unregister"]
