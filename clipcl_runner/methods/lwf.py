"""LwF: cross-entropy plus distillation of the old model's class probabilities on the current images.

The old model (teacher) is a frozen deep copy of the model at the start of each stage: the
pretrained CLIP before the first stage, the previous stage's model after that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Method, RunContext
from .distill import StageTeacher, distillation_kl

DISTILL_CLASSES = ("current", "seen")


class LwF(StageTeacher, Method):
    def __init__(self, name: str = "lwf", alpha: float = 1.0, temperature: float = 2.0, distill_classes: str = "seen"):
        super().__init__(name)
        if distill_classes not in DISTILL_CLASSES:
            raise ValueError(f"method.distill_classes='{distill_classes}' is not one of {DISTILL_CLASSES}.")
        self.alpha, self.temperature, self.distill_classes = alpha, temperature, distill_classes

    def begin_stage(self, run: RunContext) -> None:
        super().begin_stage(run)  # StageTeacher: self.teacher = the model as the stage starts, frozen
        # MST distils over every class seen so far; OST/one-stage runs see only the current ones.
        self.distilled_names = run.seen_classnames() if self.distill_classes == "seen" else list(run.stage.classnames)
        self.ce_rows = None  # set by training_stage when the CE's classes are rows of the distilled head

    def training_stage(self, run: RunContext):
        stage = super().training_stage(run)
        if (
            stage is not None
            and stage.train_templates == run.stage.train_templates
            and set(stage.classnames) <= set(self.distilled_names)
        ):
            rows = [self.distilled_names.index(name) for name in stage.classnames]
            self.ce_rows = torch.tensor(rows, device=run.device)
        return stage

    def lwf_kl(self, run: RunContext, image_features: torch.Tensor, teacher_image_features: torch.Tensor):
        templates = run.stage.train_templates
        student = self.class_logits(run, run.model, image_features, self.distilled_names, templates)
        with torch.no_grad():
            teacher = self.class_logits(run, self.teacher, teacher_image_features, self.distilled_names, templates)
        return distillation_kl(student, teacher, self.temperature)

    def ce_and_lwf(self, run: RunContext, image_features, teacher_image_features, labels):
        """The CE and the LwF term. When the CE's classes are among the distilled ones and the text
        tower trains, the student's prompts go through the text tower once for both (same gradients)."""
        if self.ce_rows is None or run.part == "image":  # frozen text: both heads are cached anyway
            return self.cross_entropy(run, image_features, labels), self.lwf_kl(
                run, image_features, teacher_image_features
            )
        templates = run.stage.train_templates
        student = self.class_logits(run, run.model, image_features, self.distilled_names, templates)
        ce = F.cross_entropy(student.index_select(1, self.ce_rows), labels, label_smoothing=run.label_smoothing)
        with torch.no_grad():
            teacher = self.class_logits(run, self.teacher, teacher_image_features, self.distilled_names, templates)
        return ce, distillation_kl(student, teacher, self.temperature)

    def training_loss(self, run: RunContext, images: torch.Tensor, labels: torch.Tensor):
        image_features = run.model.encode_image(images, normalize=True)
        ce, lwf = self.ce_and_lwf(run, image_features, self.teacher_image_features(images), labels)
        return ce + self.alpha * lwf, {"ce": ce.detach(), "lwf": lwf.detach()}
