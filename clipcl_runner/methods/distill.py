"""Distillation helpers shared by the methods: frozen teachers, softmax KL, ZSCL's two-direction
image<->text distillation and random-token texts. Methods import these from here, never from a
sibling method's file.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn


# -- frozen teachers ----------------------------------------------------------------------------
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


# For the type checker only: the mixin's super() calls reach Method (it sits before Method in the bases).
if TYPE_CHECKING:
    from .base import Method as _MixinBase
else:
    _MixinBase = object


class StageTeacher(_MixinBase):
    """Mixin for a method (put it before ``Method`` in the bases): ``self.teacher`` is a frozen copy of
    the model taken at every stage start (the previous stage's model; the pretrained one at the
    first stage) and dropped at the stage end, so its memory is freed between stages.
    ``wants_teacher`` may skip a stage (iCaRL: nothing old to distil at the first)."""

    teacher: nn.Module | None = None

    def wants_teacher(self, run) -> bool:
        return True

    def begin_stage(self, run) -> None:
        super().begin_stage(run)
        self.teacher = frozen_copy(run.model, run.teacher_dtype) if self.wants_teacher(run) else None

    def end_stage(self, run) -> None:
        self.teacher = None
        super().end_stage(run)

    def teacher_image_features(self, images: torch.Tensor) -> torch.Tensor:
        return frozen_image_features(self.teacher, images)


def frozen_image_features(teacher: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A frozen teacher's normalised image features, without a graph."""
    with torch.no_grad():
        return teacher.encode_image(images, normalize=True)


# -- losses ---------------------------------------------------------------------------------------
def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_teacher || p_student) of the temperature-softened distributions, averaged over the batch."""
    teacher_log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    student_log_p = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(student_log_p, teacher_log_p, reduction="batchmean", log_target=True)


def soft_target_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    """ZSCL's distillation loss up to a constant: KL(p_teacher ‖ p_student) at ``temperature``, times T².

    ZSCL writes it as the soft-target cross-entropy CE(softmax(t/T), s/T)·T²; that is this plus the
    teacher's entropy·T² (a constant in the student): the same gradients, zero when the two agree."""
    return distillation_kl(student_logits, teacher_logits, temperature) * temperature**2


def image_text_distillation(
    student_images: torch.Tensor,
    teacher_images: torch.Tensor,
    student_texts: torch.Tensor,
    teacher_texts: torch.Tensor,
    student_scale: torch.Tensor,
    teacher_scale: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ZSCL's two directions on z = exp(logit_scale)·image·textᵀ (normalised features):
    (image→text: softmax over the texts per image, text→image: softmax over the images per text),
    each ``soft_target_distillation`` of the teacher's logits at ``temperature``."""
    student = student_scale.exp() * student_images @ student_texts.t()
    teacher = teacher_scale.exp() * teacher_images @ teacher_texts.t()
    return (
        soft_target_distillation(student, teacher, temperature),
        soft_target_distillation(student.t(), teacher.t(), temperature),
    )


# -- texts ----------------------------------------------------------------------------------------
def random_token_texts(
    count: int, length: int, sot: int, eot: int, context_length: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``count`` pseudo class names as token ids: [SOT, ``length`` random ordinary tokens, EOT, 0 ...]."""
    if length + 2 > context_length:
        raise ValueError(f"token_length={length} does not fit the context length {context_length}.")
    tokens = torch.zeros(count, context_length, dtype=torch.long)
    tokens[:, 0] = sot
    # Ordinary BPE ids are every id below the special tokens (open_clip puts SOT/EOT last).
    tokens[:, 1 : length + 1] = torch.randint(0, min(sot, eot), (count, length), generator=generator)
    tokens[:, length + 1] = eot
    return tokens


def tokenizer_random_texts(tokenizer, count: int, length: int) -> torch.Tensor:
    """``random_token_texts`` with the special tokens and context length of an open_clip tokenizer."""
    return random_token_texts(count, length, tokenizer.sot_token_id, tokenizer.eot_token_id, tokenizer.context_length)
