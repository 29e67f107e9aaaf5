"""LwF-VR as ZSCL benchmarks it (Zheng et al., ICCV 2023, baseline "LwF-VR"; github Thunderbeee/ZSCL).

ZSCL's variant of the seed paper's VR-LwF (``vr_lwf``, kept as it is):

- Vocabulary: at every stage start, ``num_texts`` (1000) random texts of ``token_length`` (10)
  uniformly random ordinary BPE tokens ([SOT, tokens, EOT]), drawn from torch's global RNG
  (the runner reseeds it per stage, so a resumed stage draws the same texts). Fixed for the stage.
- Teacher: a frozen copy of the model at the stage start (the previous stage's model). Its text
  embeddings of the texts are computed once per stage and used on BOTH sides: only the image
  tower (and the logit scale, when it trains) is distilled.
- Data: a SECOND batch of current-stage training images each step (as many as the current
  batch), the auxiliary stream ``second`` over ``run.training.train`` (``auxiliary_data``): its
  own shuffled DataLoader, as ZSCL's separate reference loader over the current dataset.
  ``distill_transform``: ``eval`` reads these images through the model's evaluation transform
  (ZSCL's MTIL: ``--ref-dataset <current>`` is built with its test preprocessing), ``train``
  through the stage's own training transform (ZSCL's CIL: its loader over the training scenario).
- Loss: CE + alpha·(image→text + text→image) soft-target distillation at temperature T = 2
  between z_student = exp(s)·student_image·teacher_textᵀ and z_teacher =
  exp(s_teacher)·teacher_image·teacher_textᵀ (image→text: softmax over the texts per image;
  text→image: softmax over the batch per text). alpha = 1 for MTIL, 5 for CIL (ZSCL's code).
  The loss is ZSCL's soft-target CE·T² minus the teacher's entropy (see
  ``distill.soft_target_distillation``): the same gradients, zero when the student is the teacher.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..auxiliary import Auxiliary, draw_batch
from ..data.stages import with_transform
from ..text_encoding import encode_frozen
from .base import Method, RunContext
from .distill import StageTeacher, image_text_distillation, tokenizer_random_texts

DISTILL_TRANSFORMS = ("train", "eval")


class LwFVR(StageTeacher, Method):
    def __init__(
        self,
        name: str = "lwf_vr",
        alpha: float = 1.0,
        temperature: float = 2.0,
        num_texts: int = 1000,
        token_length: int = 10,
        distill_transform: str = "train",
    ):
        super().__init__(name)
        if distill_transform not in DISTILL_TRANSFORMS:
            raise ValueError(f"method.distill_transform='{distill_transform}' is not one of {DISTILL_TRANSFORMS}.")
        self.alpha, self.temperature, self.num_texts, self.token_length = alpha, temperature, num_texts, token_length
        self.distill_transform = distill_transform
        self.tokens = self.teacher_texts = None
        self._distill_data: tuple[Dataset, Dataset] | None = None  # (the training set it views, that view)

    def vocabulary_tokens(self, run: RunContext) -> torch.Tensor:
        """The stage's texts: ``num_texts`` random texts of ``token_length`` BPE tokens."""
        return tokenizer_random_texts(run.tokenizer, self.num_texts, self.token_length)

    def begin_stage(self, run: RunContext) -> None:
        super().begin_stage(run)  # StageTeacher: the stage-start model, frozen
        self.tokens = self.vocabulary_tokens(run)
        self.teacher_texts = encode_frozen(self.teacher, self.tokens, run.device)

    def end_stage(self, run: RunContext) -> None:
        super().end_stage(run)  # drops the teacher
        self.teacher_texts = self._distill_data = None  # free the memory now

    def distillation_images(self, run: RunContext):
        """The images the second batch is drawn from: the training set, through ``distill_transform``."""
        train = run.training.train
        if self.distill_transform == "train" or run.clip is None:
            return train
        data = self._distill_data
        if data is None or data[0] is not train:
            data = self._distill_data = (train, with_transform(train, run.clip.preprocess_eval))
        return data[1]

    def auxiliary_data(self, run: RunContext) -> dict[str, Auxiliary]:
        return {"second": Auxiliary(self.distillation_images(run))}  # trainer.batch_size images

    def vocabulary_distillation(self, run: RunContext, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image→text, text→image) distillation on ``images`` against the stage's fixed random texts."""
        teacher_images = self.teacher_image_features(images)
        student_images = run.model.encode_image(images, normalize=True)
        return image_text_distillation(
            student_images,
            teacher_images,
            self.teacher_texts,
            self.teacher_texts,
            run.model.logit_scale,
            self.teacher.logit_scale,
            self.temperature,
        )

    def training_loss(
        self, run: RunContext, images: torch.Tensor, labels: torch.Tensor, second: torch.Tensor | None = None
    ):
        """``second``: the stream's batch of current-stage images (drawn here when called without the trainer)."""
        if second is None:
            second = draw_batch(self.auxiliary_data(run)["second"], run.device, batch_size=len(images))
        image_features = run.model.encode_image(images, normalize=True)
        ce = self.cross_entropy(run, image_features, labels)
        image_term, text_term = self.vocabulary_distillation(run, second)
        loss = ce + self.alpha * (image_term + text_term)
        return loss, {"ce": ce.detach(), "vr_image": image_term.detach(), "vr_text": text_term.detach()}
