"""Training one stage: batches -> method loss -> optimiser step, with AMP and a progress bar."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .methods.base import Method, RunContext
from .models import clamp_logit_scale
from .precision import autocast, grad_scaler

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    batch_size: int = 32
    num_workers: int = 0
    precision: str = "fp32"
    grad_clip_norm: float | None = None
    freeze_bn: bool = False  # keep BatchNorm running statistics fixed (a fair ablation for RN towers)
    progress: bool = True


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def stage_steps(stage, loader_length: int) -> int:
    return stage.iterations if stage.iterations else stage.epochs * loader_length


def _batches(loader: DataLoader, total: int):
    """Cycle through the loader (reshuffling each pass) until ``total`` batches have been drawn."""
    drawn = 0
    while drawn < total:
        for batch in loader:
            yield batch
            drawn += 1
            if drawn == total:
                return


def train_stage(
    run: RunContext,
    method: Method,
    parameters: list[nn.Parameter],
    make_optimizer: Callable,
    make_scheduler: Callable | None,
    settings: TrainSettings,
    generator: torch.Generator,
    log_step: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train ``run.stage`` and return the mean of each logged loss term over the stage."""
    stage, model, device = run.stage, run.model, run.device
    loader = DataLoader(
        stage.train, batch_size=settings.batch_size, shuffle=True, drop_last=len(stage.train) > settings.batch_size,
        num_workers=settings.num_workers, generator=generator, pin_memory=device.type == "cuda",
    )
    total = stage_steps(stage, len(loader))
    optimizer = make_optimizer(parameters, **({"lr": stage.lr} if stage.lr else {}))
    scheduler = make_scheduler(optimizer, total_steps=total) if make_scheduler else None
    scaler = grad_scaler(settings.precision, device)
    set_train_mode(model, settings.freeze_bn)
    sums: dict[str, float] = {}
    bar = tqdm(total=total, desc=f"stage {stage.name} ({method.name})", disable=not settings.progress, unit="step")
    for step, (images, labels) in enumerate(_batches(loader, total)):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with autocast(settings.precision, device):
            loss, terms = method.training_loss(run, images, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"stage {stage.name} step {step}: loss is {loss.item()} ({ {k: float(v) for k, v in terms.items()} }). "
                "Lower the learning rate or use trainer.precision=fp32/bf16."
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if settings.grad_clip_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, settings.grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        clamp_logit_scale(model)
        terms = {key: float(value) for key, value in terms.items()} | {"loss": float(loss.detach())}
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + value
        if log_step is not None:
            log_step(step, terms)
        bar.update()
        if step % 10 == 0:
            bar.set_postfix({key: f"{value:.3f}" for key, value in terms.items()})
    bar.close()
    return {f"train/{key}": value / max(1, total) for key, value in sums.items()} | {"train/steps": total}


def cosine_with_warmup(optimizer, total_steps: int, warmup_steps: int = 0):
    """A per-iteration LR schedule: linear warm-up then cosine to zero (ZSCL's MTIL schedule)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
