"""The run's last checkpoint: written atomically after every stage, read back by ``resume=true``."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)
CHECKPOINT = Path("checkpoints") / "last.pt"


def checkpoint_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / CHECKPOINT


def save(run_dir: Path | str, state: dict) -> Path:
    """Write to a temporary file and rename, so a kill mid-write never corrupts the last good checkpoint."""
    path = checkpoint_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)
    return path


def load(run_dir: Path | str) -> dict | None:
    path = checkpoint_path(run_dir)
    if not path.is_file():
        return None
    # Our own file: it holds Python objects (rows, RNG states) besides tensors.
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state() -> dict:
    import random

    import numpy as np

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
