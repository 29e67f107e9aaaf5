"""VR-LwF (Ding et al. 2022): distil the old model's softmax over a replayed vocabulary.

Every iteration draws K pseudo class names, by default [SOT, L uniformly random ordinary
BPE tokens, EOT] as in the paper, and adds alpha * KL(softmax z_old(x, V) || softmax
z_new(x, V)) on the current images; both student towers get gradient. With a vocabulary
(a list of texts or a file with one text per line) the K texts are drawn from it instead,
and the teacher's embeddings of the whole vocabulary are computed once per stage.

The LwF term over the seen classes' prompts (``include_lwf``) joins the alpha bracket from
stage ``lwf_from_stage`` on: loss = CE + alpha * (LwF + VR). With the default 1 the first
stage (and so OST, a single stage) is CE + alpha * VR; docs/fidelity.md lists the test that
pins this against the CL-CLIP code. ``lwf_from_stage=0`` also distils the pretrained model's
class probabilities in the first stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch

from ..text_encoding import encode_frozen, encode_text, used_length
from .base import RunContext
from .distill import distillation_kl, random_token_texts
from .lwf import LwF


def read_vocabulary(path: str | Path) -> list[str]:
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    texts = [line for line in lines if line]
    if not texts:
        raise ValueError(f"vocabulary file {path} holds no texts (one text per line expected).")
    return texts


class VRLwF(LwF):
    def __init__(
        self,
        name: str = "vr_lwf",
        alpha: float = 1.0,
        temperature: float = 2.0,
        num_texts: int = 100,
        token_length: int = 8,
        vocabulary: Sequence[str] | str | None = None,
        include_lwf: bool = True,
        distill_classes: str = "seen",
        lwf_from_stage: int = 1,
    ):
        super().__init__(name, alpha=alpha, temperature=temperature, distill_classes=distill_classes)
        if lwf_from_stage < 0:
            raise ValueError(f"method.lwf_from_stage={lwf_from_stage} must be >= 0 (the first stage is 0).")
        self.num_texts, self.token_length, self.include_lwf = num_texts, token_length, include_lwf
        self.lwf_from_stage = lwf_from_stage
        self.vocabulary = read_vocabulary(vocabulary) if isinstance(vocabulary, (str, Path)) else vocabulary
        self.vocabulary_tokens: torch.Tensor | None = None

    def begin_stage(self, run: RunContext) -> None:
        super().begin_stage(run)
        if self.vocabulary is not None:
            vocabulary_tokens = self.vocabulary_tokens
            if vocabulary_tokens is None:
                tokens = run.tokenizer(list(self.vocabulary))
                self.text_length = used_length(tokens)
                vocabulary_tokens = self.vocabulary_tokens = tokens.to(run.device)
            self.teacher_vocabulary = encode_frozen(self.teacher, vocabulary_tokens.cpu(), run.device)

    def draw_texts(self, run: RunContext) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's K texts as tokens, and the teacher's normalised embeddings of them."""
        if self.vocabulary is None:
            tokenizer = run.tokenizer
            tokens = random_token_texts(
                self.num_texts,
                self.token_length,
                tokenizer.sot_token_id,
                tokenizer.eot_token_id,
                tokenizer.context_length,
            ).to(run.device)
            self.text_length = self.token_length + 2  # [SOT, tokens, EOT]: the rest is padding
            with torch.no_grad():
                return tokens, encode_text(self.teacher, tokens, length=self.text_length)
        vocabulary_tokens = cast(torch.Tensor, self.vocabulary_tokens)  # encoded by begin_stage
        picked = torch.randperm(len(vocabulary_tokens))[: self.num_texts].to(run.device)
        return vocabulary_tokens[picked], self.teacher_vocabulary[picked]

    def vocabulary_kl(self, run: RunContext, image_features, teacher_image_features) -> torch.Tensor:
        tokens, teacher_texts = self.draw_texts(run)
        with torch.set_grad_enabled(run.part != "image"):
            student_texts = encode_text(run.model, tokens, length=self.text_length)
        student = run.model.logit_scale.exp() * image_features @ student_texts.t()
        teacher = self.teacher.logit_scale.exp() * teacher_image_features @ teacher_texts.t()
        return distillation_kl(student, teacher, self.temperature)

    def lwf_active(self, run: RunContext) -> bool:
        return self.include_lwf and run.stage_index >= self.lwf_from_stage

    def training_loss(self, run: RunContext, images: torch.Tensor, labels: torch.Tensor):
        image_features = run.model.encode_image(images, normalize=True)
        teacher_image_features = self.teacher_image_features(images)
        if self.lwf_active(run):  # LwF over the seen classes inside the alpha bracket
            ce, lwf = self.ce_and_lwf(run, image_features, teacher_image_features, labels)
        else:
            ce, lwf = self.cross_entropy(run, image_features, labels), None
        vr = self.vocabulary_kl(run, image_features, teacher_image_features)
        terms = {"ce": ce.detach(), "vr": vr.detach()}
        distill = vr
        if lwf is not None:
            distill = distill + lwf
            terms["lwf"] = lwf.detach()
        elif self.include_lwf:  # same logged keys in every stage
            terms["lwf"] = vr.detach().new_zeros(())
        return ce + self.alpha * distill, terms
