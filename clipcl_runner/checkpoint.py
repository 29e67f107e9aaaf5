"""The run's checkpoints, written atomically.

``last.pt`` is written after every stage (model, method state, completed rows). A mid-stage
checkpoint ``mid_stage.pt`` (on a preemption signal, or every N steps) holds only what the
stage has changed since then: the model, the method's per-step state, the optimiser,
scheduler, scaler, step and RNG. Resuming loads ``last.pt``, prepares the stage exactly as
the first time (so a teacher is the stage-start model again), then applies ``mid_stage.pt``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)
FOLDER = "checkpoints"
STAGE_END = "last.pt"
MID_STAGE = "mid_stage.pt"


def checkpoint_path(run_dir: Path | str, name: str = STAGE_END) -> Path:
    return Path(run_dir) / FOLDER / name


def save(run_dir: Path | str, state: dict, name: str = STAGE_END) -> Path:
    """Write to a temporary file and rename, so a kill mid-write never corrupts the last good checkpoint."""
    path = checkpoint_path(run_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)
    return path


def load(run_dir: Path | str, name: str = STAGE_END) -> dict | None:
    path = checkpoint_path(run_dir, name)
    if not path.is_file():
        return None
    # Our own file: it holds Python objects (rows, RNG states) besides tensors.
    return torch.load(path, map_location="cpu", weights_only=False)


def discard(run_dir: Path | str, name: str = MID_STAGE) -> None:
    checkpoint_path(run_dir, name).unlink(missing_ok=True)


def requeued() -> bool:
    """True inside a SLURM job that was requeued (preempted or timed out, then restarted)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
