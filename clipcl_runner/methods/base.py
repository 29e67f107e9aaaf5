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
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.train_head not in TRAIN_HEADS:
            raise ValueError(f"trainer.train_head='{self.train_head}' is not one of {TRAIN_HEADS}.")

    @property
    def stage(self) -> Stage:
        return self.stages[self.stage_index]

    @property
    def teacher_dtype(self) -> torch.dtype | None:
        """The dtype frozen teachers are stored in: the autocast dtype, or None (keep the model's)."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

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

    ``dtype`` (the run's compute dtype under bf16/fp16 autocast) stores the teacher's weights in
    it: half the memory, and no per-step casts of weights that never change.
    """
    teacher = copy.deepcopy(model)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher if dtype is None else teacher.to(dtype)


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
        return model.logit_scale.exp() * image_features @ text_features.t()
