"""Training one stage: batches -> method loss -> optimiser step, with AMP, progress, and exact mid-stage resume.

The data order of every epoch is a permutation drawn from (stage seed, epoch), so a run
resumed at step k sees exactly the batches an uninterrupted run sees from step k on; the
global RNG (random-token texts, dropout) is saved with the step and restored with it.
Exactness needs deterministic transforms or ``num_workers=0``: random augmentations in
worker processes make a resumed run statistically, not bitwise, equal.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import cast

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from . import distributed
from .auxiliary import open_streams
from .config_schema import Precision, TrainerConfig
from .data.decoded import decoded
from .methods.base import Method, RunContext
from .models import clamp_logit_scale
from .precision import autocast, grad_scaler
from .preemption import ignore_stop_signals

log = logging.getLogger(__name__)
LOG_EVERY = 10  # steps between host syncs (progress bar, divergence check)


# The trainer reads ``cfg.trainer`` as the schema types it: the runner passes the typed node
# (``train_settings``) with ``precision`` resolved from auto; tests build one with keyword arguments.
# Ranges and the rules linking keys (grad_clip_before_unscale needs grad_clip_norm) are refused before
# any work by config_checks.validate.
TrainSettings = TrainerConfig


def train_settings(trainer: DictConfig, precision: str) -> TrainSettings:
    """The typed ``cfg.trainer`` node as the trainer's settings, with the ``precision`` the run resolved."""
    settings = cast(TrainSettings, OmegaConf.to_object(trainer))  # a TrainerConfig: the node is typed
    return replace(settings, precision=Precision(precision))


class EpochShuffle(Sampler[int]):
    """A fresh permutation per epoch from (seed, epoch), optionally starting part-way through.

    With ``world`` > 1 every rank draws the same permutation and keeps its slice of each global
    batch of ``batch`` indices, so the ranks together see exactly the batches one process sees.
    """

    def __init__(self, size: int, seed: int, batch: int = 1, rank: int = 0, world: int = 1):
        self.size, self.seed, self.epoch, self.start = size, seed, 0, 0
        self.batch, self.rank, self.world = batch, rank, world

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)[self.start :]
        if self.world > 1:  # whole global batches only (distributed training drops the last partial one)
            share = self.batch // self.world
            order = order[: len(order) // self.batch * self.batch].view(-1, self.world, share)[:, self.rank]
        yield from order.reshape(-1).tolist()

    def __len__(self) -> int:
        remaining = self.size - self.start
        return remaining if self.world == 1 else remaining // self.batch * (self.batch // self.world)


class MethodLoss(nn.Module):
    """The method's loss as a module's forward, so DistributedDataParallel can wrap it: its parameters
    are the model's, and the method still calls the plain open_clip model inside."""

    def __init__(self, run: RunContext, method: Method):
        super().__init__()
        self.model = run.model
        self.run_context, self.method = run, method

    def forward(self, images: torch.Tensor, labels: torch.Tensor, **auxiliary):
        return self.method.training_loss(self.run_context, images, labels, **auxiliary)


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


class StageTraining:
    """The optimisation state of one stage; ``run`` trains from ``self.step`` to the end of the stage."""

    def __init__(
        self,
        run: RunContext,
        method: Method,
        parameters: list[nn.Parameter],
        make_optimizer: Callable,
        make_scheduler: Callable | None,
        settings: TrainSettings,
        seed: int,
    ):
        self.run_context, self.method, self.parameters, self.settings = run, method, parameters, settings
        stage = run.training  # the task's stage, or what the method trains on instead (replay, joint)
        world = distributed.world()
        if world.distributed and (settings.batch_size % world.size or len(stage.train) < settings.batch_size):
            raise ValueError(
                f"trainer.batch_size={settings.batch_size} is the global batch: it must be a multiple of the "
                f"{world.size} processes and at most the {len(stage.train)} images of stage {stage.name}."
            )
        self.drop_last = len(stage.train) > settings.batch_size if settings.drop_last is None else settings.drop_last
        if self.drop_last and len(stage.train) < settings.batch_size:
            raise ValueError(
                f"trainer.drop_last=true drops every batch of stage {stage.name}: its {len(stage.train)} "
                f"images are fewer than trainer.batch_size={settings.batch_size}; use trainer.drop_last=null."
            )
        if world.distributed and settings.drop_last is False:
            raise ValueError(
                "trainer.drop_last=false keeps a partial batch, which distributed training cannot split "
                "evenly over the processes: use trainer.drop_last=null."
            )
        self.sampler = EpochShuffle(len(stage.train), seed, settings.batch_size, world.rank, world.size)
        train = decoded(stage.train, settings.num_workers) if settings.decoded_cache else stage.train
        self.loader = DataLoader(
            train,
            batch_size=settings.batch_size // world.size,
            sampler=self.sampler,
            drop_last=self.drop_last,
            num_workers=settings.num_workers,
            pin_memory=run.device.type == "cuda",
            persistent_workers=settings.num_workers > 0,  # no worker restart at every epoch
            # Its own generator: a DataLoader otherwise draws its workers' base seed from the global RNG
            # at every epoch start, which would shift the global stream of a run resumed mid-epoch.
            generator=torch.Generator().manual_seed(seed),
            worker_init_fn=ignore_stop_signals,  # SIGTERM to the job's group: the main process checkpoints, workers wait
        )
        size, batch = len(stage.train), settings.batch_size
        self.steps_per_epoch = size // batch if self.drop_last else math.ceil(size / batch)
        self.total = stage.iterations or stage.epochs * self.steps_per_epoch
        self.optimizer = make_optimizer(parameters, **({"lr": stage.lr} if stage.lr else {}))
        self.scheduler = make_scheduler(self.optimizer, total_steps=self.total) if make_scheduler else None
        self.scaler = grad_scaler(settings.precision, run.device)
        # The method's extra data (ZSCL's reference images, LwF-VR's second batch): each its own loader,
        # decoded in workers ahead of the step, its position in mid-stage checkpoints. Every rank draws the
        # same whole batch (the global batch size where a stream declares none): the distillation terms
        # softmax over the batch, so only the whole batch gives one process's loss and gradient.
        self.streams = open_streams(
            method.auxiliary_data(run),
            seed,
            settings.num_workers,
            pin_memory=run.device.type == "cuda",
            batch_size=settings.batch_size,
        )
        if settings.grad_clip_before_unscale and not self.scaler.is_enabled():
            log.info(
                "trainer.grad_clip_before_unscale=true under %s: no grad scaler, so the gradient is clipped "
                "unscaled to norm %s (the same as false).",
                settings.precision,
                settings.grad_clip_norm,
            )
        self.loss = MethodLoss(run, method)
        if world.distributed:  # gradients averaged over the ranks' slices = the gradient of the global batch
            self.loss = nn.parallel.DistributedDataParallel(
                self.loss,
                device_ids=[run.device.index] if run.device.type == "cuda" else None,
                find_unused_parameters=settings.ddp_find_unused_parameters,
            )
        if settings.compile:
            self.loss = torch.compile(self.loss)
        self.step = 0
        self.sums: dict[str, float] = {}
        # fp16: consecutive steps the scaler skipped, and the longest run since the last check (device tensors)
        self.skipped = self.worst_skipped = torch.zeros((), dtype=torch.long, device=run.device)

    # -- checkpointing ------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {
            "step": self.step,
            "sums": {key: float(value) for key, value in self.sums.items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(),
            "auxiliary": {name: stream.state_dict() for name, stream in self.streams.items()},
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step, self.sums = state["step"], dict(state["sums"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        for name, stream in self.streams.items():
            if name in state.get("auxiliary", {}):
                stream.load_state_dict(state["auxiliary"][name])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # -- training ------------------------------------------------------------------------
    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches from ``self.step`` on, cycling through epochs until the stage's step count."""
        step = self.step
        while step < self.total:
            epoch, offset = divmod(step, self.steps_per_epoch)
            self.sampler.set_position(epoch, offset * self.settings.batch_size)
            for batch in self.loader:
                yield batch
                step += 1
                if step == self.total:
                    return

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimiser step; returns the detached loss terms (device tensors: no host sync here)."""
        run, settings = self.run_context, self.settings
        images = self.image_layout(images.to(run.device, non_blocking=True))
        labels = labels.to(run.device, non_blocking=True)
        auxiliary = {name: self.image_layout(stream.next(run.device)) for name, stream in self.streams.items()}
        with autocast(settings.precision, run.device):
            loss, terms = self.loss(images, labels, **auxiliary)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if settings.grad_clip_norm:
            if not settings.grad_clip_before_unscale:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, settings.grad_clip_norm)
        self.scaler_step()
        if self.scheduler is not None:
            self.scheduler.step()
        if settings.clamp_logit_scale:
            clamp_logit_scale(run.model)
        return {key: value.detach().float() for key, value in terms.items()} | {"loss": loss.detach().float()}

    def image_layout(self, batch):
        """NHWC for image batches under ``trainer.channels_last`` (the model was converted by the runner)."""
        if self.settings.channels_last and torch.is_tensor(batch) and batch.dim() == 4:
            return batch.contiguous(memory_format=torch.channels_last)
        return batch

    def scaler_step(self) -> None:
        """The optimiser step through the grad scaler, counting the steps it skips (on the device: no host sync)."""
        if not self.scaler.is_enabled():
            self.optimizer.step()
            return
        # torch's scaler multiplies its scale by backoff_factor < 1 exactly when it skips a step (inf/NaN
        # gradients): compare its scale tensor (set by scale(); private, but public get_scale() syncs the host)
        before = self.scaler._scale.clone()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        skipped = self.scaler._scale < before
        self.skipped = torch.where(skipped, self.skipped + 1, torch.zeros_like(self.skipped))
        self.worst_skipped = torch.maximum(self.worst_skipped, self.skipped)

    def check_finite(self, window_loss: float) -> None:
        """Fail fast on a diverged loss (checked every ``LOG_EVERY`` steps, where the host syncs anyway).

        Under fp16 a non-finite loss is normal now and then (the grad scaler skips that step and
        lowers its scale); the run stops only when the scaler keeps skipping or its scale collapses.
        """
        settings, stage = self.settings, self.run_context.stage.name
        if self.scaler.is_enabled():
            skipped, scale = int(self.worst_skipped), self.scaler.get_scale()
            self.worst_skipped = torch.zeros_like(self.worst_skipped)
            if skipped >= settings.fp16_max_skipped_steps or scale < settings.fp16_min_scale:
                raise FloatingPointError(
                    f"stage {stage}, steps up to {self.step}: fp16 training diverged: the grad scaler skipped "
                    f"{skipped} steps in a row for non-finite gradients (trainer.fp16_max_skipped_steps="
                    f"{settings.fp16_max_skipped_steps}) and its scale is {scale:.3g} (trainer.fp16_min_scale="
                    f"{settings.fp16_min_scale}); the loss is {window_loss}. "
                    "Lower the learning rate (trainer.optimizer.lr) or use trainer.precision=bf16 or fp32."
                )
            if not math.isfinite(window_loss):
                log.warning(
                    "stage %s step %d: non-finite loss under fp16 (the grad scaler skips such steps)", stage, self.step
                )
            return
        if math.isfinite(window_loss):
            return
        raise FloatingPointError(
            f"stage {stage}, steps up to {self.step}: the loss is {window_loss}. "
            "Lower the learning rate (trainer.optimizer.lr) or use trainer.precision=fp32."
        )

    def run(self, after_step: Callable[[StageTraining], None] | None = None) -> dict:
        """Train to the end of the stage; ``after_step`` may checkpoint (and stop the process) at step boundaries."""
        run = self.run_context
        set_train_mode(run.model, self.settings.freeze_bn)
        bar = tqdm(
            total=self.total,
            initial=self.step,
            desc=f"stage {run.stage.name} ({self.method.name})",
            disable=not self.settings.progress,
            unit="step",
        )
        window_loss = 0.0
        for images, labels in self.batches():
            terms = self.train_step(images, labels)
            self.step += 1
            self.method.after_step(run, self.step)  # the plain method, outside DDP / torch.compile
            for key, value in terms.items():
                self.sums[key] = self.sums.get(key, 0.0) + value
            window_loss = window_loss + terms["loss"]
            bar.update()
            if self.step % LOG_EVERY == 0 or self.step == self.total:
                self.check_finite(float(window_loss))
                window_loss = 0.0
                bar.set_postfix({key: f"{float(value):.3f}" for key, value in terms.items()})
            if after_step is not None:
                after_step(self)
        bar.close()
        return {f"train/{key}": float(value) / max(1, self.total) for key, value in self.sums.items()} | {
            "train/steps": self.total
        }


def step_decay(optimizer, total_steps: int, at_fraction: float, gamma: float = 0.1):
    """Multiply the LR by ``gamma`` once ``at_fraction`` of the stage's steps are done (the paper's OST: after epoch 10 of 15)."""
    milestone = max(1, round(at_fraction * total_steps))
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[milestone], gamma=gamma)


def cosine_with_warmup(optimizer, total_steps: int, warmup_steps: int = 0):
    """A per-iteration LR schedule: linear warm-up then cosine to zero (ZSCL's MTIL schedule)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
