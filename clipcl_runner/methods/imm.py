"""Mean-IMM (Lee et al., NeurIPS 2017, "Overcoming Catastrophic Forgetting by Incremental Moment Matching").

Train each stage with plain CE (as ``finetune``); at the end of the stage merge the weights:
θ = alpha·θ_new + (1 − alpha)·θ_old, where θ_old is a copy of the trainable parameters taken
at the stage start (the pretrained CLIP before the first stage, the previous merged model after
that). CL-CLIP's EuroSAT scripts use alpha 0.6 for ``whole``/``image`` and 0.7 for ``text``;
the ding2022_* presets pick alpha per task family (docs/fidelity.md, row 9).

- What is merged: only the parameters that train (``requires_grad`` at the stage start, i.e.
  the chosen ``part`` and the logit scale when it trains). Frozen parameters are equal in both
  models anyway. Buffers (BatchNorm running statistics of RN towers) are NOT averaged: the new
  model's are kept. They are statistics of the data the weights saw rather than learned moments,
  and the statistics of an average of two networks are not the average of their statistics; the
  new model's are the most recent estimate (``trainer.freeze_bn=true`` keeps them at the
  pretrained values for a strict comparison).
- MST: repeated pairwise merging, so stage i's own update ends up weighted alpha·(1−alpha)^(T−i)
  after T stages; the merged model is what the next stage starts from (and what is evaluated).
- OST (one stage, evaluated every epoch): the merged model is evaluated while training
  continues unmerged. ``merged_state(run)`` returns that merged state dict without touching
  ``run.model``; ``model_for_evaluation`` loads it into a copy, which is what the runner
  evaluates after every epoch when ``eval.every_epoch=true``.
"""

from __future__ import annotations

import torch

from .base import Method, RunContext
from .weights import interpolate_, interpolated, trainable_snapshot, with_parameters


class MeanIMM(Method):
    def __init__(self, name: str = "imm", alpha: float = 0.6):
        super().__init__(name)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"method.alpha={alpha} must lie in [0, 1].")
        self.alpha = alpha
        self.old_parameters: dict[str, torch.Tensor] | None = None

    def begin_stage(self, run: RunContext) -> None:
        super().begin_stage(run)
        self.old_parameters = trainable_snapshot(run.model)

    def merged_parameters(self, run: RunContext) -> dict[str, torch.Tensor]:
        """The merge alpha·θ_new + (1 − alpha)·θ_old of every trainable parameter (model unchanged)."""
        if self.old_parameters is None:
            raise RuntimeError("merging needs a stage in progress (call begin_stage first).")
        params = dict(run.model.named_parameters())
        return {name: interpolated(old, params[name].detach(), self.alpha) for name, old in self.old_parameters.items()}

    def merged_state(self, run: RunContext) -> dict[str, torch.Tensor]:
        """``run.model.state_dict()`` with the trainable parameters replaced by their merge (model unchanged)."""
        return {**run.model.state_dict(), **self.merged_parameters(run)}

    def model_for_evaluation(self, run: RunContext):
        if self.old_parameters is None:  # between stages the model is already the merged one
            return run.model
        return with_parameters(run.model, self.merged_parameters(run))

    def end_stage(self, run: RunContext) -> None:
        interpolate_(run.model, self.old_parameters, self.alpha)
        self.old_parameters = None

    # No state beyond the model: checkpoints are written after end_stage, so the model already
    # holds the merged weights, and the next stage's θ_old is snapshotted from it at begin_stage.
    # A mid-stage resume reloads the stage-start model and calls begin_stage again before
    # applying the mid-stage weights, so θ_old is rebuilt exactly as well.
    def state_dict(self) -> dict:
        return {}
