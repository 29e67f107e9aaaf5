"""ZSCL's training loop, step counts and learning-rate schedule (github Thunderbeee/ZSCL @ b96e714).

Both of ZSCL's loops (``mtil/src/models/finetune.py``, ``cil/continual_clip/models.py``) run
``for iteration in range(total_iterations + 1)``: one step more than the schedule they set,
``cosine_lr(optimizer, lr, warmup, total_iterations)``, whose value at that last iteration is
exactly 0. The extra step therefore leaves AdamW's parameters unchanged (lr 0, weight decay
scaled by lr) but counts for the weight ensemble (``methods.zscl``). ``total_iterations`` is
``--iterations`` (MTIL: 1000) or, in CIL, one epoch of the loader: ``ceil(N / batch)`` batches
(no ``drop_last``).

Here a task sequence adds the extra step to its stages (``extra_steps: 1``) and ``zscl_cosine``
keeps the cosine on the steps before it, so the whole stage runs ``iterations + 1`` steps.
"""

from __future__ import annotations

import math

import torch

STEPS_PER_TASK = ("official", "epochs")


def zscl_cosine(optimizer, total_steps: int, warmup_steps: int = 0, extra_steps: int = 0):
    """ZSCL's ``cosine_lr`` over the first ``total_steps - extra_steps`` steps, then lr 0 for the rest.

    Step k (0-based) runs at base_lr·(k+1)/warmup while k < warmup, then at
    base_lr·½(1 + cos(π(k − warmup)/(nominal − warmup))) with nominal = total_steps − extra_steps,
    and at 0 from k = nominal on (the official loop's closing step).
    """
    nominal = total_steps - extra_steps
    if extra_steps < 0 or nominal < 1:
        raise ValueError(
            f"trainer.scheduler.extra_steps={extra_steps} must be >= 0 and leave at least one of the stage's "
            f"{total_steps} steps to the cosine."
        )

    def factor(step: int) -> float:
        if step >= nominal:
            return 0.0
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, nominal - warmup_steps)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batches_per_epoch(images: int, batch_size: int, rule: str) -> int:
    """Optimiser steps of one epoch over ``images``: ``official`` as ZSCL's CIL loader, ceil(N/B) (the last
    partial batch included); ``epochs`` as this runner's trainer, floor(N/B) (the last partial batch
    dropped; at least 1). ZSCL's CIL task then adds its closing lr-0 step: ceil(N/B) + 1 in all."""
    if rule not in STEPS_PER_TASK:
        raise ValueError(f"tasks.steps_per_task='{rule}' is not one of {STEPS_PER_TASK}.")
    if batch_size < 1 or images < 1:
        raise ValueError(f"steps per task need images >= 1 and a batch size >= 1 (got {images}, {batch_size}).")
    if rule == "official":
        return math.ceil(images / batch_size)
    return max(1, images // batch_size)
