"""The method contract: every continual-learning method is a short class on top of this one.

The stage loop calls ``setup`` once, then per stage: ``begin_stage`` -> ``training_stage`` (what to
train on) -> ``auxiliary_data`` (extra streams the trainer serves) -> ``training_loss`` for every
batch, ``after_step`` after every optimiser step -> ``end_stage``; evaluations measure
``model_for_evaluation``. A method may wrap or freeze the model in ``setup``, owns its own state
for checkpoints (``state_dict``), and never runs its own training loop. ``supports`` declares the
settings it works in; ``check_supported`` refuses the others at start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..config_schema import AutoOrFp32, TrainHead
from ..data.stages import Stage, merged_stage
from ..models import select_trainable
from .prompts import ClassPrompts

TRAIN_HEADS = TrainHead.values()
TEACHER_PRECISIONS = AutoOrFp32.values()


@dataclass
class RunContext:
    """What a method may look at: the model being trained and the run's settings."""

    model: nn.Module
    tokenizer: object
    device: torch.device
    stages: Sequence[Stage]
    part: str = "whole"
    train_logit_scale: bool = False
    stage_index: int = 0
    train_head: str = "stage"  # stage: CE over the stage's classes | seen: over every class so far (CIL)
    label_smoothing: float = 0.0
    clip: object = None  # the ClipBundle (transforms), for methods that build their own data (ZSCL's reference set)
    train_stage: Stage | None = None  # what the current stage trains on (set by the stage loop)
    precision: str = "fp32"  # the resolved precision: bf16 | fp16 autocast on CUDA, else fp32
    teacher_precision: str = "auto"  # auto: teachers in the autocast dtype | fp32: in fp32, outside autocast

    def __post_init__(self) -> None:
        if self.train_head not in TRAIN_HEADS:
            raise ValueError(f"trainer.train_head='{self.train_head}' is not one of {TRAIN_HEADS}.")
        if self.teacher_precision not in TEACHER_PRECISIONS:
            raise ValueError(
                f"trainer.teacher_precision='{self.teacher_precision}' is not one of {TEACHER_PRECISIONS}."
            )

    @property
    def stage(self) -> Stage:
        return self.stages[self.stage_index]

    @property
    def teacher_dtype(self) -> torch.dtype | None:
        """The dtype frozen teachers are stored in (``frozen_copy``'s argument).

        auto: the autocast dtype (half the memory, no per-step weight casts), or None under fp32
        (keep the model's). fp32 under autocast: ``torch.float32``, which ``frozen_copy`` also runs
        outside autocast, as CL-CLIP's fp32 teachers.
        """
        autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if autocast_dtype is not None and self.teacher_precision == "fp32":
            return torch.float32
        return autocast_dtype

    @property
    def training(self) -> Stage:
        """The stage being trained on: ``train_stage`` when the loop set one, else the task's own stage."""
        return self.train_stage if self.train_stage is not None else self.stage

    def seen_classnames(self) -> list[str]:
        """Classes of every stage up to and including the current one (MST's 'seen so far')."""
        names: list[str] = []
        for stage in self.stages[: self.stage_index + 1]:
            names.extend(name for name in stage.classnames if name not in names)
        return names


@dataclass(frozen=True)
class Support:
    """The settings a method works in, checked at start (``check_supported``) instead of failing later."""

    train_head: tuple[str, ...] = TRAIN_HEADS
    part: tuple[str, ...] = ("whole", "image", "text")
    distributed: bool = True  # DDP over several processes (torchrun / srun)
    compile: bool = True  # trainer.compile=true (torch.compile of the loss)


def check_supported(method: Method, cfg, distributed: bool = False) -> None:
    """Refuse, before any work, a setting the method declares it does not support (``Method.supports``).

    ``cfg`` is the run's config (``part``, ``trainer.train_head``, ``trainer.compile``); ``distributed``
    whether the run spans several processes."""
    support, trainer = method.supports, cfg.trainer
    settings = [
        ("trainer.train_head", trainer.get("train_head", "stage"), support.train_head),
        ("part", cfg.get("part", "whole"), support.part),
    ]
    problems = [
        f"{key}={value} (it supports {', '.join(allowed)})" for key, value, allowed in settings if value not in allowed
    ]
    if trainer.get("compile", False) and not support.compile:
        problems.append("trainer.compile=true (set trainer.compile=false)")
    if distributed and not support.distributed:
        problems.append("distributed training (run it in one process)")
    if problems:
        raise ValueError(f"method '{method.name}' does not support " + "; ".join(problems) + ".")


class Method(ClassPrompts):
    """Fine-tuning on the stage's class prompts with cross-entropy; subclasses add their terms.

    Prompt encoding and the CE come from ``ClassPrompts`` (methods/prompts.py); teachers and
    distillation losses from methods/distill.py.
    """

    trains = True
    supports = Support()

    def __init__(self, name: str):
        self.name = name
        self.reset_prompt_caches()

    # -- lifecycle -----------------------------------------------------------------
    def setup(self, run: RunContext) -> list[nn.Parameter]:
        """Called once; returns the parameters to optimise. Adapter methods wrap ``run.model`` here."""
        return select_trainable(run.model, run.part, run.train_logit_scale)

    def begin_stage(self, run: RunContext) -> None:
        self.reset_prompt_caches()  # a text tower that trains changes between stages

    def training_stage(self, run: RunContext) -> Stage | None:
        """The data, classes and schedule this stage trains on (None: no training this stage).

        The task's stage itself; with ``train_head=seen`` the same images classified among every
        class seen so far. Replay methods add their memory here, joint training everything.
        """
        if run.train_head == "seen" and run.stage_index > 0:
            stage = run.stage
            parts: list[tuple[Stage, list[int] | None]] = [(s, []) for s in run.stages[: run.stage_index]]
            parts.append((stage, None))
            return merged_stage(stage.name, parts, epochs=stage.epochs, iterations=stage.iterations, lr=stage.lr)
        return run.stage

    def auxiliary_data(self, run: RunContext) -> dict:
        """Extra data streams for this stage, ``{name: auxiliary.Auxiliary(dataset, batch_size)}``: the
        trainer serves each through its own DataLoader (workers, pinned memory, a resumable shuffled
        order) and passes one batch of each to ``training_loss`` as the keyword argument ``name``.
        Called after ``training_stage``."""
        return {}

    def after_step(self, run: RunContext, step: int) -> None:
        """Called after each optimiser (and scheduler) step, ``step`` = steps done in this stage (1-based);
        on the plain method, outside the DDP-wrapped / compiled loss (weight averaging goes here)."""

    def end_stage(self, run: RunContext) -> None:
        pass

    def model_for_evaluation(self, run: RunContext) -> nn.Module:
        """The model an evaluation inside a stage (e.g. OST's every epoch) should measure."""
        return run.model

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # -- the loss --------------------------------------------------------------------
    def training_loss(self, run: RunContext, images: torch.Tensor, labels: torch.Tensor, **auxiliary):
        """Returns the loss to minimise and a dict of detached terms to log. ``auxiliary``: one batch
        of every stream ``auxiliary_data`` declared, by name."""
        image_features = run.model.encode_image(images, normalize=True)
        loss = self.cross_entropy(run, image_features, labels)
        return loss, {"ce": loss.detach()}
