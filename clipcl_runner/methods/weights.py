"""Weight-space helpers shared by the merging methods (WiSE-FT, ZSCL's weight ensemble).

They act on the parameters that train (``requires_grad``), by name: frozen parameters are the
same in every snapshot, and buffers (BatchNorm running statistics of RN towers) are left alone,
as in ``imm`` (statistics of an average of networks are not the average of their statistics).
Snapshots are detached clones on the model's device, so they are safe to keep across steps and
to save in checkpoints.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def trainable_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter that currently trains, by name."""
    return {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}


def interpolated(anchor: torch.Tensor, tuned: torch.Tensor, ratio: float) -> torch.Tensor:
    """(1 − ratio)·anchor + ratio·tuned, computed in float32 and returned in ``tuned``'s dtype."""
    mixed = (1.0 - ratio) * anchor.float() + ratio * tuned.float()
    return mixed.to(tuned.dtype)


def interpolate_(model: nn.Module, anchor: dict[str, torch.Tensor], ratio: float) -> None:
    """In place: every parameter named in ``anchor`` becomes (1 − ratio)·anchor + ratio·itself.

    ``ratio`` = 0 gives the anchor exactly, 1 leaves the model exactly as it is.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in anchor:
                if ratio == 0.0:
                    param.copy_(anchor[name])
                elif ratio != 1.0:
                    param.copy_(interpolated(anchor[name].to(param.device), param, ratio))


def load_parameters_(model: nn.Module, values: dict[str, torch.Tensor]) -> None:
    """In place: the parameters named in ``values`` take those values (others are untouched)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in values:
                param.copy_(values[name])


def with_parameters(model: nn.Module, values: dict[str, torch.Tensor]) -> nn.Module:
    """A deep copy of ``model`` whose named parameters take ``values`` (for evaluating a merged model mid-stage)."""
    merged = copy.deepcopy(model)
    load_parameters_(merged, values)
    return merged


class RunningAverage:
    """θ̄ ← (θ̄·n + θ)/(n + 1) over named parameters: the plain mean of every snapshot added so far.

    Kept in float32 whatever the parameters' dtype, so long runs of updates do not drift.
    """

    def __init__(self, first: dict[str, torch.Tensor] | None = None):
        self.mean: dict[str, torch.Tensor] = {}
        self.count = 0
        if first is not None:
            self.mean = {name: value.detach().float().clone() for name, value in first.items()}
            self.count = 1

    def update(self, model: nn.Module) -> None:
        """Add the model's current values of the averaged parameters as one more sample."""
        n = self.count
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in self.mean:
                    if self.mean[name].device != param.device:  # loaded from a checkpoint (on the CPU)
                        self.mean[name] = self.mean[name].to(param.device)
                    self.mean[name].mul_(n).add_(param.detach().float()).div_(n + 1)
        self.count = n + 1

    def values_like(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The average in each parameter's own dtype and device."""
        params = dict(model.named_parameters())
        return {name: value.to(params[name].device, params[name].dtype) for name, value in self.mean.items()}

    def state_dict(self) -> dict:
        return {"mean": {name: value.clone() for name, value in self.mean.items()}, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean = {name: value.detach().float().clone() for name, value in state["mean"].items()}
        self.count = int(state["count"])
