"""Mixed precision as a tiny switch (after open_clip_train's precision.py).

``auto`` means bf16 autocast on CUDA and fp32 on CPU. fp16 needs a gradient scaler; bf16
does not. CPU autocast is slower than fp32 for these models, so CPU always runs fp32.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from .config_schema import AutoOrFp32, Precision

log = logging.getLogger(__name__)
PRECISIONS = Precision.values()
EVAL_PRECISIONS = AutoOrFp32.values()  # auto: the trainer's autocast | fp32: no autocast (CL-CLIP's evaluation)


def resolve_device(device: str) -> torch.device:
    """auto | cpu | cuda | cuda:N (``pack`` is resolved by packing.packed_device)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"trainer.device={device} but CUDA is not available here; use trainer.device=cpu or auto.")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision='{precision}' is not one of {PRECISIONS}.")
    if device.type != "cuda":
        if precision not in ("auto", "fp32"):
            log.warning("precision=%s requested on %s: running fp32 (autocast is for CUDA here).", precision, device)
        return "fp32"
    return "bf16" if precision == "auto" else precision


def evaluation_precision(setting: str, precision: str) -> str:
    """The precision evaluation runs in: ``eval.precision`` (auto | fp32) over the trainer's resolved one."""
    if setting not in EVAL_PRECISIONS:
        raise ValueError(f"eval.precision='{setting}' is not one of {EVAL_PRECISIONS}.")
    return "fp32" if setting == "fp32" else precision


def autocast(precision: str, device: torch.device):
    """The forward-pass context for a resolved precision."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A scaler that is active only for fp16 (a disabled scaler is a no-op pass-through)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
