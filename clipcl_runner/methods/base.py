"""The method contract: every continual-learning method is a short class on top of this one.

The stage loop calls, per stage: ``begin_stage`` -> ``training_stage`` (what to train on) ->
``training_loss`` for every batch -> ``end_stage``. A method may wrap or freeze the model in
``setup``, owns its own state for checkpoints, and never runs its own training loop.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.stages import Stage, merged_stage
from ..models import select_trainable
from ..text_encoding import encode_text, used_length


TRAIN_HEADS = ("stage", "seen")
TEACHER_PRECISIONS = ("auto", "fp32")


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
    extras: dict = field(default_factory=dict)

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


def frozen_copy(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """A deep copy for use as a teacher: no shared storage, no gradients, eval mode.

    ``dtype`` (``RunContext.teacher_dtype``) stores the teacher's weights in it: the autocast
    dtype halves the memory and saves per-step casts of weights that never change; ``torch.float32``
    keeps them in fp32 and runs the teacher's forward and encoders outside autocast (in fp32).
    """
    teacher = copy.deepcopy(model)
    teacher.eval()
    teacher.requires_grad_(False)
    if dtype is None:
        return teacher
    teacher.to(dtype)
    if dtype == torch.float32:
        teacher.__class__ = _outside_autocast_class(type(teacher))
    return teacher


_OUTSIDE_AUTOCAST: dict[type, type] = {}


def runs_outside_autocast(model: nn.Module) -> bool:
    """A teacher made by ``frozen_copy(model, torch.float32)``: fp32, its forward outside autocast."""
    return getattr(model, "_outside_autocast", False)


def _outside_autocast_class(cls: type) -> type:
    """A subclass of ``cls`` whose forward / encode_image / encode_text run in fp32 with autocast off.

    A subclass rather than patched instance methods so that the teacher stays a plain module for
    deepcopy, state_dict and ``text_encoding.encode_text`` (which calls ``encode_text`` on it).
    """
    if getattr(cls, "_outside_autocast", False):
        return cls
    if cls not in _OUTSIDE_AUTOCAST:
        def fp32(name: str):
            inner = getattr(cls, name)

            def call(self, *args, **kwargs):
                device = next(self.parameters()).device.type
                with torch.autocast(device_type=device, enabled=False):
                    args = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
                    return inner(self, *args, **kwargs)

            call.__name__ = name
            return call

        names = [name for name in ("forward", "encode_image", "encode_text") if hasattr(cls, name)]
        _OUTSIDE_AUTOCAST[cls] = type(
            f"Fp32{cls.__name__}", (cls,), {"_outside_autocast": True, **{name: fp32(name) for name in names}}
        )
    return _OUTSIDE_AUTOCAST[cls]


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_teacher || p_student) of the temperature-softened distributions, averaged over the batch."""
    teacher_log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    student_log_p = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(student_log_p, teacher_log_p, reduction="batchmean", log_target=True)


class Method:
    """Fine-tuning on the stage's class prompts with cross-entropy; subclasses add their terms."""

    trains = True

    def __init__(self, name: str):
        self.name = name
        self._reset_text_caches()

    def _reset_text_caches(self) -> None:
        # Per stage: a text tower that trains changes between stages; tokens are small either way.
        self._frozen_text_cache: dict[tuple, torch.Tensor] = {}
        self._prompt_tokens: dict[tuple, tuple[torch.Tensor, int]] = {}

    # -- lifecycle -----------------------------------------------------------------
    def setup(self, run: RunContext) -> list[nn.Parameter]:
        """Called once; returns the parameters to optimise. Adapter methods wrap ``run.model`` here."""
        return select_trainable(run.model, run.part, run.train_logit_scale)

    def begin_stage(self, run: RunContext) -> None:
        self._reset_text_caches()

    def training_stage(self, run: RunContext) -> Stage | None:
        """The data, classes and schedule this stage trains on (None: no training this stage).

        The task's stage itself; with ``train_head=seen`` the same images classified among every
        class seen so far. Replay methods add their memory here, joint training everything.
        """
        if run.train_head == "seen" and run.stage_index > 0:
            stage = run.stage
            parts = [(s, []) for s in run.stages[: run.stage_index]] + [(stage, None)]
            return merged_stage(stage.name, parts, epochs=stage.epochs, iterations=stage.iterations, lr=stage.lr)
        return run.stage

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
    def training_loss(self, run: RunContext, images: torch.Tensor, labels: torch.Tensor):
        """Returns the loss to minimise and a dict of detached terms to log."""
        image_features = run.model.encode_image(images, normalize=True)
        loss = self.cross_entropy(run, image_features, labels)
        return loss, {"ce": loss.detach()}

    def cross_entropy(self, run: RunContext, image_features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CE over the training stage's classes (MST masks the other sessions' logits this way)."""
        stage = run.training
        logits = self.class_logits(run, run.model, image_features, stage.classnames, stage.train_templates)
        return F.cross_entropy(logits, labels, label_smoothing=run.label_smoothing)

    # -- helpers shared by subclasses ------------------------------------------------------
    def encode_prompts(self, run: RunContext, model: nn.Module, texts: Sequence[str]) -> torch.Tensor:
        """Normalised text features; prompts are tokenised and sent to the device once per stage."""
        key = tuple(texts)
        if key not in self._prompt_tokens:
            tokens = run.tokenizer(list(texts))
            self._prompt_tokens[key] = (tokens.to(run.device), used_length(tokens))  # length read on the host
        tokens, length = self._prompt_tokens[key]
        return encode_text(model, tokens, length=length)

    def class_features(self, run: RunContext, model: nn.Module, classnames, templates) -> torch.Tensor:
        """Normalised class embeddings (template-averaged), with gradient when the text tower trains."""
        texts = [template.format(name) for name in classnames for template in templates]
        features = self.encode_prompts(run, model, texts).view(len(classnames), len(templates), -1).mean(dim=1)
        return F.normalize(features, dim=-1)

    def frozen_class_features(self, run: RunContext, model: nn.Module, classnames, templates) -> torch.Tensor:
        """``class_features`` of a model whose text tower does not change this stage, encoded once per stage."""
        key = (id(model), tuple(classnames), tuple(templates))
        if key not in self._frozen_text_cache:
            with torch.no_grad():
                self._frozen_text_cache[key] = self.class_features(run, model, classnames, templates)
        return self._frozen_text_cache[key]

    def class_logits(self, run: RunContext, model: nn.Module, image_features, classnames, templates) -> torch.Tensor:
        """exp(logit_scale) * cos(image, class prompt) for ``model`` (the student or a frozen teacher)."""
        if model is not run.model or run.part == "image":  # text tower frozen: constant for the stage
            text_features = self.frozen_class_features(run, model, classnames, templates)
        else:
            text_features = self.class_features(run, model, classnames, templates)
        if runs_outside_autocast(model):  # an fp32 teacher's logits in fp32 too, as CL-CLIP's teacher
            with torch.autocast(image_features.device.type, enabled=False):
                return model.logit_scale.exp() * image_features.float() @ text_features.float().t()
        return model.logit_scale.exp() * image_features @ text_features.t()
