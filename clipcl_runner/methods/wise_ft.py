"""WiSE-FT (Wortsman et al., CVPR 2022, "Robust fine-tuning of zero-shot models"), as ZSCL's baseline.

Train each stage with plain CE (as ``finetune``); at the end of every stage interpolate the
weights towards an anchor:

    θ ← (1 − ratio)·θ_anchor + ratio·θ_fine-tuned.

- ``anchor: zero_shot``: θ_anchor = the trainable parameters of the pretrained model, snapshotted
  once in ``setup`` (WiSE-FT's own recipe). ``anchor: stage_start``: the model the stage started
  from (the previous stage's result), snapshotted in ``begin_stage``; this is what ZSCL's released
  MTIL script runs (``mtil/scripts/WiSE_finetune.sh``: ``--wise_merge --wise_ft_model n
  --wise_ft_alpha 0.8``, where ``finetune.py`` merges ``θ·alpha + θ_loaded·(1 − alpha)`` after the
  stage's loop), set by the ZSCL presets with ``ratio`` 0.8.
- ``ratio`` = 0 gives the anchor, 1 plain fine-tuning; 0.5 is the default without a preset. The
  interpolated model is what the next stage starts from and what is evaluated.
- Only the trainable parameters are interpolated (the chosen ``part``, and the logit scale when it
  trains); BatchNorm statistics stay the fine-tuned model's, as in ``imm``.
- Inside a stage (OST's every-epoch evaluation) the interpolated model is evaluated while training
  continues unmerged, as ``imm`` does.
- The anchor is kept in ``state_dict`` so a resumed run anchors at the same weights.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Method, RunContext
from .weights import interpolate_, interpolated, trainable_snapshot, with_parameters

ANCHORS = ("zero_shot", "stage_start")


class WiSEFT(Method):
    def __init__(self, name: str = "wise_ft", ratio: float = 0.5, anchor: str = "zero_shot"):
        super().__init__(name)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"method.ratio={ratio} must lie in [0, 1].")
        if anchor not in ANCHORS:
            raise ValueError(f"method.anchor='{anchor}' is not one of {ANCHORS}.")
        self.ratio, self.anchor = ratio, anchor
        self.zero_shot: dict[str, torch.Tensor] | None = None  # the anchor (named for checkpoints of older runs)

    def setup(self, run: RunContext) -> list[nn.Parameter]:
        parameters = super().setup(run)
        self.zero_shot = trainable_snapshot(run.model)
        return parameters

    def begin_stage(self, run: RunContext) -> None:
        super().begin_stage(run)
        if self.anchor == "stage_start":
            self.zero_shot = trainable_snapshot(run.model)

    def model_for_evaluation(self, run: RunContext) -> nn.Module:
        anchor = self.zero_shot or {}  # set by setup, before any evaluation
        merged = {
            name: interpolated(anchor[name], param.detach(), self.ratio)
            for name, param in run.model.named_parameters()
            if name in anchor
        }
        return with_parameters(run.model, merged)

    def end_stage(self, run: RunContext) -> None:
        interpolate_(run.model, self.zero_shot, self.ratio)

    def state_dict(self) -> dict:
        return {"zero_shot": self.zero_shot}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("zero_shot")
        if saved is None:
            return
        # setup already snapshotted the model on its device; checkpoints are loaded on the CPU
        devices = {name: value.device for name, value in (self.zero_shot or {}).items()}
        self.zero_shot = {
            name: value.detach().to(devices.get(name, value.device)).clone() for name, value in saved.items()
        }
