"""WiSE-FT (Wortsman et al., CVPR 2022, "Robust fine-tuning of zero-shot models"), as ZSCL's baseline.

Train each stage with plain CE (as ``finetune``); at the end of every stage interpolate the
weights towards the zero-shot model:

    θ ← (1 − ratio)·θ_zero-shot + ratio·θ_fine-tuned,

θ_zero-shot = the trainable parameters of the pretrained model, snapshotted once in ``setup``
(before any stage). ``ratio`` = 0 is the zero-shot model, 1 plain fine-tuning; 0.5 is the
default (the mixing WiSE-FT recommends and ZSCL's WiSE-FT baseline). The interpolated model is
what the next stage starts from and what is evaluated.

- Only the trainable parameters are interpolated (the chosen ``part``, and the logit scale when it
  trains); BatchNorm statistics stay the fine-tuned model's, as in ``imm``.
- ZSCL's released MTIL script (``WiSE_finetune.sh``) instead anchors every stage at the model it
  started from, with ratio 0.8: that is mean-IMM, ``method=imm method.alpha=0.8``.
- Inside a stage (OST's every-epoch evaluation) the interpolated model is evaluated while training
  continues unmerged, as ``imm`` does.
- θ_zero-shot is kept in ``state_dict`` so a resumed run anchors at the same weights.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import RunContext
from .finetune import Finetune
from .weights import interpolate_, interpolated, trainable_snapshot, with_parameters


class WiSEFT(Finetune):
    def __init__(self, name: str = "wise_ft", ratio: float = 0.5):
        super().__init__(name)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"method.ratio={ratio} must lie in [0, 1].")
        self.ratio = ratio
        self.zero_shot: dict[str, torch.Tensor] | None = None

    def setup(self, run: RunContext) -> list[nn.Parameter]:
        parameters = super().setup(run)
        self.zero_shot = trainable_snapshot(run.model)
        return parameters

    def model_for_evaluation(self, run: RunContext) -> nn.Module:
        merged = {
            name: interpolated(self.zero_shot[name], param.detach(), self.ratio)
            for name, param in run.model.named_parameters()
            if name in self.zero_shot
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
