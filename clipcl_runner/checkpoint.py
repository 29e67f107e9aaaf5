"""The run's checkpoints: written atomically, loaded safely.

``last.pt`` is written after every stage (model, method state, completed rows). A mid-stage
checkpoint ``mid_stage.pt`` (on a preemption signal, or every N steps) holds only what the
stage has changed since then: the model, the method's per-step state, the optimiser,
scheduler, scaler, step and RNG. Resuming loads ``last.pt``, prepares the stage exactly as
the first time (so a teacher is the stage-start model again), then applies ``mid_stage.pt``.

Both hold tensors and plain containers only and load with ``weights_only=True``: a run folder
copied from someone else cannot run code on ``resume=true`` (docs/run_folder.md). Each also
records the run's identity config (``"config"``), so a resume under a different config is refused.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path

import torch

from .run_folder import CHECKPOINTS as FOLDER  # noqa: F401 - re-exported for callers
from .run_folder import IDENTITY, MID_STAGE, STAGE_END, RunFolderError, atomic_write, checkpoint_path, write_json

log = logging.getLogger(__name__)


class CheckpointError(RunFolderError):
    pass


def save(run_dir: Path | str, state: dict, name: str = STAGE_END) -> Path:
    """Write to a temporary file and rename, so a kill mid-write never corrupts the last good checkpoint.

    The state's identity config is also written beside it (``identity.json``), so ``clipcl`` can
    refuse a mismatched resume before it imports torch; the checkpoint's own copy is what counts.
    """
    path = atomic_write(checkpoint_path(run_dir, name), lambda handle: torch.save(state, handle))
    if "config" in state:
        write_json(checkpoint_path(run_dir, IDENTITY), state["config"], indent=1, sort_keys=True)
    return path


def load_file(path: Path | str, mmap: bool = False) -> dict:
    """A checkpoint file, tensors and plain containers only; any other content is refused, never executed.
    ``mmap``: tensors are read from the file only when used (to look at a checkpoint's config)."""
    path = Path(path)
    fix = (
        f"Fix: delete {path.name} to resume from the checkpoint before it"
        if path.name == MID_STAGE
        else f"Fix: delete {path.parent} and resume=true to restart from the beginning, or use overwrite=true"
    )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:  # weights_only refused a type: a crafted or foreign file
        raise CheckpointError(
            f"{path} holds Python objects other than tensors and plain values; it was not loaded "
            f"(loading it could run code).\n{fix} (or retrain from a trusted copy). Details: {str(exc)[:300]}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({type(exc).__name__}: {str(exc)[:300]}).\n{fix}."
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a clipcl checkpoint (a {type(state).__name__}, not a dict).\n{fix}.")
    return state


def load(run_dir: Path | str, name: str = STAGE_END) -> dict | None:
    path = checkpoint_path(run_dir, name)
    return load_file(path) if path.is_file() else None


def discard(run_dir: Path | str, name: str = MID_STAGE) -> None:
    checkpoint_path(run_dir, name).unlink(missing_ok=True)


def requeued() -> bool:
    """True inside a SLURM job that was requeued (preempted or timed out, then restarted)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
