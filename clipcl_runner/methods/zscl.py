"""ZSCL (Zheng et al., ICCV 2023, "Preventing Zero-Shot Transfer Degradation in Continual Learning of
Vision-Language Models"; github Thunderbeee/ZSCL).

Per step: CE on the current batch, plus distillation of the INITIAL model's image-text logits on a
reference set (``clipcl_runner.data.reference``; ``zscl_mtil``: ImageNet training images and the
Conceptual Captions validation captions, as ZSCL.sh), plus a weight ensemble over the stage.
docs/fidelity.md (ZSCL section) lists every statement below about ZSCL's code with the test that pins it.

- Teacher: a frozen copy of the model as ``setup`` finds it (the pretrained CLIP), kept for all
  stages (not the previous stage's model, as LwF would). A resumed run rebuilds it the same way,
  since ``setup`` runs before a checkpoint is loaded.
- Reference distillation, every step: ``ref_batch_size`` reference images against reference
  sentences. The images are the auxiliary stream ``reference`` (``auxiliary_data``): the trainer
  serves them through their own DataLoader (workers decode the JPEGs ahead of the step) in a
  shuffled order whose position mid-stage checkpoints keep, as ZSCL iterates a shuffled loader. Logits are
  z = exp(logit_scale)·cos(image, sentence); student logits use the student's image features,
  teacher logits the teacher's. Two terms, both at temperature T: image→text (softmax over the
  sentences, per image) and text→image (softmax over the batch images, per sentence); weights
  ``image_weight`` / ``text_weight`` (1 each in ZSCL's MTIL scripts, 5 each in its CIL code).
- Sentences: as in ZSCL's code, the teacher's text embeddings of the sentences are computed once
  (in ``setup``) and used on BOTH sides (``text_features: teacher``), so the distillation trains
  the image tower only and the text tower is trained by the CE alone. ``text_features: student``
  encodes the sentences with the student's text tower instead (distilling the text tower too;
  needed for ``part=text``, where the image term cannot move anything). ``num_ref_texts: null``
  uses every sentence every step (ZSCL's choice: its whole Conceptual-Captions caption set);
  a number draws that many sentences afresh every step from the global RNG (cheaper with
  ``text_features: student``).
- Loss form: ZSCL's soft-target cross-entropy CE(softmax(t/T), s/T)·T² minus the teacher's entropy
  (a constant), i.e. KL·T²: the same gradients, and exactly zero when student and teacher agree.
- Weight ensemble (WE, ZSCL's ``--we --avg_freq``): at the stage start θ̄ = θ_start (count 1); after
  an optimiser step that is due (``after_step``, called by the trainer after the optimiser and
  scheduler step; ``step`` = steps done in this stage, 1-based) θ̄ ← (θ̄·n + θ)/(n + 1), n += 1.
  ``we_timing: official`` (ZSCL's ``finetune.py`` loop, ``iteration % avg_freq == 0`` on its
  0-based iteration after the step): steps 1, 1+f, 1+2f, ... . ZSCL's loop runs ``iterations + 1``
  steps, the last at learning rate 0 (``tasks.extra_steps: 1`` with the ``zscl_loop.zscl_cosine``
  schedule), so for 1000 iterations and f = 100 it averages after steps 1, 101, ..., 1001: 11
  updates, 12 samples with θ_start; the last sample is the final weights exactly when
  ``iterations`` is a multiple of f (CIL's ceil(N/64) usually is not: the last steps then do not
  reach θ̄, as in ZSCL's CIL code). ``we_timing: multiples``: steps f, 2f, ..., and the stage's last
  step in any case (a stage shorter than f would otherwise learn nothing). At the stage end the
  model takes θ̄ (trainable parameters only; BatchNorm statistics stay the trained model's): the
  next stage starts from θ̄ and θ̄ is what is evaluated. Training continues from the unaveraged θ
  during the stage; mid-stage evaluations see θ̄, as in ZSCL. ``we_every: null`` turns WE off.
- ``l2``: optional L2 pull Σ‖θ − θ_start‖² towards the stage-start weights (ZSCL.sh passes
  ``--l2 1``, set by ``zscl_mtil``; the paper's method does not have it), 0 by default.
- State (running average, its count, the step counter) is in ``state_dict`` for exact resume.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..auxiliary import Auxiliary, draw_batch
from ..data.reference import ReferenceSet
from ..text_encoding import encode_frozen, encode_text, used_length
from .base import Method, RunContext
from .distill import frozen_copy, frozen_image_features, image_text_distillation
from .weights import RunningAverage, load_parameters_, trainable_snapshot, with_parameters

log = logging.getLogger(__name__)
TEXT_FEATURES = ("teacher", "student")
WE_TIMINGS = ("official", "multiples")


def we_due(step: int, every: int, timing: str) -> bool:
    """Whether the weights after optimiser step ``step`` (1-based) join the weight ensemble."""
    return (step - 1) % every == 0 if timing == "official" else step % every == 0


class ZSCL(Method):
    def __init__(
        self,
        name: str = "zscl",
        reference=None,
        ref_batch_size: int = 64,
        num_ref_texts: int | None = None,
        temperature: float = 2.0,
        image_weight: float = 1.0,
        text_weight: float = 1.0,
        text_features: str = "teacher",
        we_every: int | None = 100,
        we_timing: str = "multiples",
        l2: float = 0.0,
    ):
        super().__init__(name)
        if text_features not in TEXT_FEATURES:
            raise ValueError(f"method.text_features='{text_features}' is not one of {TEXT_FEATURES}.")
        if we_timing not in WE_TIMINGS:
            raise ValueError(f"method.we_timing='{we_timing}' is not one of {WE_TIMINGS}.")
        if we_every is not None and we_every < 1:
            raise ValueError(f"method.we_every={we_every} must be >= 1 (or null: no weight ensemble).")
        if reference is None:
            raise ValueError("ZSCL needs a reference set (method.reference, e.g. `reference=synthetic`).")
        self.reference, self.ref_batch_size, self.num_ref_texts = reference, ref_batch_size, num_ref_texts
        self.temperature, self.image_weight, self.text_weight = temperature, image_weight, text_weight
        self.text_features, self.we_every, self.we_timing, self.l2 = text_features, we_every, we_timing, l2
        self.teacher = None
        self.average: RunningAverage | None = None
        self.stage_start: dict[str, torch.Tensor] | None = None
        self.step = self.averaged_step = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def setup(self, run: RunContext) -> list[nn.Parameter]:
        parameters = super().setup(run)
        self.teacher = frozen_copy(run.model, run.teacher_dtype)  # the initial model, for every stage
        reference = self.reference
        if not isinstance(reference, ReferenceSet):  # a builder (conf/reference/*: `_partial_: true`)
            reference = reference(clip=run.clip)
        self.reference_set = reference
        self.reference_tokens = run.tokenizer(list(reference.sentences))
        self.reference_texts = encode_frozen(self.teacher, self.reference_tokens, run.device)
        self.reference_length = used_length(self.reference_tokens)
        if run.part == "text" and self.text_features == "teacher":
            log.warning(
                "ZSCL with part=text and text_features=teacher: the distillation cannot reach the "
                "trained (text) tower; use method.text_features=student."
            )
        log.info("ZSCL reference set: %d images, %d sentences", len(reference.images), len(reference.sentences))
        return parameters

    def begin_stage(self, run: RunContext) -> None:
        super().begin_stage(run)
        self.step = self.averaged_step = 0
        self.average = RunningAverage(trainable_snapshot(run.model)) if self.we_every else None
        self.stage_start = trainable_snapshot(run.model) if self.l2 else None

    def auxiliary_data(self, run: RunContext) -> dict[str, Auxiliary]:
        return {"reference": Auxiliary(self.reference_set.images, self.ref_batch_size)}

    def after_step(self, run: RunContext, step: int) -> None:
        """Add θ (the model after ``step`` optimiser steps of this stage) to the ensemble when due."""
        self.step = step
        if self.average is not None and step > self.averaged_step and we_due(step, self.we_every, self.we_timing):
            self.average.update(run.model)
            self.averaged_step = step

    def end_stage(self, run: RunContext) -> None:
        if self.average is not None:
            if self.we_timing == "multiples" and self.step > self.averaged_step:
                self.average.update(run.model)  # the final weights always count (a stage shorter than
                self.averaged_step = self.step  # we_every would otherwise not learn at all)
            load_parameters_(run.model, self.average.values_like(run.model))
        self.stage_start = None

    def model_for_evaluation(self, run: RunContext) -> nn.Module:
        if self.average is None:
            return run.model
        return with_parameters(run.model, self.average.values_like(run.model))

    def state_dict(self) -> dict:
        return {
            "average": self.average.state_dict() if self.average is not None else None,
            "step": self.step,
            "averaged_step": self.averaged_step,
        }

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.step, self.averaged_step = int(state["step"]), int(state["averaged_step"])
        if state["average"] is not None:
            self.average = RunningAverage()
            self.average.load_state_dict(state["average"])

    # -- the loss ------------------------------------------------------------------------------
    def reference_distillation(self, run: RunContext, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image→text, text→image) distillation of the initial model's logits on reference ``images``."""
        count = len(self.reference_texts)
        picked = None
        if self.num_ref_texts is not None and self.num_ref_texts < count:  # a fresh subset every step
            picked = torch.randperm(count)[: self.num_ref_texts]
        teacher_texts = self.reference_texts if picked is None else self.reference_texts[picked.to(run.device)]
        if self.text_features == "student":
            tokens = self.reference_tokens if picked is None else self.reference_tokens[picked]
            student_texts = encode_text(run.model, tokens.to(run.device), length=self.reference_length)
        else:
            student_texts = teacher_texts
        teacher_images = frozen_image_features(self.teacher, images)
        student_images = run.model.encode_image(images, normalize=True)
        return image_text_distillation(
            student_images,
            teacher_images,
            student_texts,
            teacher_texts,
            run.model.logit_scale,
            self.teacher.logit_scale,
            self.temperature,
        )

    def training_loss(
        self, run: RunContext, images: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor | None = None
    ):
        """``reference``: the stream's batch of reference images (drawn here when called without the trainer)."""
        if reference is None:
            reference = draw_batch(self.auxiliary_data(run)["reference"], run.device)
        image_features = run.model.encode_image(images, normalize=True)
        ce = self.cross_entropy(run, image_features, labels)
        image_term, text_term = self.reference_distillation(run, reference)
        loss = ce + self.image_weight * image_term + self.text_weight * text_term
        terms = {"ce": ce.detach(), "zscl_image": image_term.detach(), "zscl_text": text_term.detach()}
        if self.stage_start is not None:
            l2 = sum(
                ((param - self.stage_start[name]) ** 2).sum()
                for name, param in run.model.named_parameters()
                if name in self.stage_start
            )
            loss = loss + self.l2 * l2
            terms["l2"] = l2.detach()
        return loss, terms
