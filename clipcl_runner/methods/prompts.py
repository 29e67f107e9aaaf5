"""Class prompts -> text features -> logits, with the per-stage caches every method shares.

``ClassPrompts`` is a mixin of ``Method``: prompts are tokenised and moved to the device once per
stage, and the class features of a frozen text tower (a teacher's, or the student's under
``part=image``) are encoded once per stage. ``reset_prompt_caches`` (called by ``Method.begin_stage``)
empties both: a text tower that trains changes between stages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..text_encoding import encode_text, used_length
from .distill import runs_outside_autocast


class ClassPrompts:
    def reset_prompt_caches(self) -> None:
        self._frozen_text_cache: dict[tuple, torch.Tensor] = {}
        self._prompt_tokens: dict[tuple, tuple[torch.Tensor, int]] = {}

    def encode_prompts(self, run, model: nn.Module, texts: Sequence[str]) -> torch.Tensor:
        """Normalised text features; prompts are tokenised and sent to the device once per stage."""
        if not hasattr(self, "_prompt_tokens"):
            self.reset_prompt_caches()
        key = tuple(texts)
        if key not in self._prompt_tokens:
            tokens = run.tokenizer(list(texts))
            self._prompt_tokens[key] = (tokens.to(run.device), used_length(tokens))  # length read on the host
        tokens, length = self._prompt_tokens[key]
        return encode_text(model, tokens, length=length)

    def class_features(self, run, model: nn.Module, classnames, templates) -> torch.Tensor:
        """Normalised class embeddings (template-averaged), with gradient when the text tower trains."""
        texts = [template.format(name) for name in classnames for template in templates]
        features = self.encode_prompts(run, model, texts).view(len(classnames), len(templates), -1).mean(dim=1)
        return F.normalize(features, dim=-1)

    def frozen_class_features(self, run, model: nn.Module, classnames, templates) -> torch.Tensor:
        """``class_features`` of a model whose text tower does not change this stage, encoded once per stage."""
        if not hasattr(self, "_frozen_text_cache"):
            self.reset_prompt_caches()
        key = (id(model), tuple(classnames), tuple(templates))
        if key not in self._frozen_text_cache:
            with torch.no_grad():
                self._frozen_text_cache[key] = self.class_features(run, model, classnames, templates)
        return self._frozen_text_cache[key]

    def class_logits(self, run, model: nn.Module, image_features, classnames, templates) -> torch.Tensor:
        """exp(logit_scale) * cos(image, class prompt) for ``model`` (the student or a frozen teacher)."""
        if model is not run.model or run.part == "image":  # text tower frozen: constant for the stage
            text_features = self.frozen_class_features(run, model, classnames, templates)
        else:
            text_features = self.class_features(run, model, classnames, templates)
        if runs_outside_autocast(model):  # an fp32 teacher's logits in fp32 too, as CL-CLIP's teacher
            with torch.autocast(image_features.device.type, enabled=False):
                return model.logit_scale.exp() * image_features.float() @ text_features.float().t()
        return model.logit_scale.exp() * image_features @ text_features.t()

    def cross_entropy(self, run, image_features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CE over the training stage's classes (MST masks the other sessions' logits this way)."""
        stage = run.training
        logits = self.class_logits(run, run.model, image_features, stage.classnames, stage.train_templates)
        return F.cross_entropy(logits, labels, label_smoothing=run.label_smoothing)
