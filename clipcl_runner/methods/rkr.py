"""RKR (Singh et al., CVPR 2021, "Rectification-based Knowledge Retention for Continual Learning").

CLIP stays frozen; every linear layer of the trained tower(s) gets a rank-``rank`` weight
correction and a per-output-channel scale:

    y = (W x + b + U D x) ⊙ σ,   U: out x rank (random, small), D: rank x in (zeros), σ = 1,

so at initialisation the model computes exactly what the frozen CLIP computes. The paper
(CL-CLIP) trains RKR with lr 1e-5 (the other methods 1e-6); the learning rate is the trainer's
(``trainer.optimizer.lr``).

How the model is wrapped (from the outside; open_clip's source is untouched):

- Every ``nn.Linear`` under the trained tower(s) (``part``: ``image`` = modules under
  ``model.visual``, ``text`` = everything else but the logit scale, ``whole`` = both) is
  replaced by a ``RectifiedLinear`` holding the frozen original as ``.base`` and the new
  parameters as ``.rectifier``. Some modules never call their linears but read ``.weight`` /
  ``.bias`` directly (ModifiedResNet's attention pool passes q/k/v/c_proj weights to
  ``F.multi_head_attention_forward``; ``nn.MultiheadAttention`` does so with ``out_proj``), so
  ``RectifiedLinear.weight`` / ``.bias`` are the rectified ones, σ ⊙ (W + U D) and σ ⊙ b: the
  same map, as the correction is linear. ``RectifiedLinear`` subclasses ``nn.Linear`` so that
  ``isinstance(m, nn.Linear)`` checks (open_clip's text projection) still hold.
- Every ``nn.MultiheadAttention`` (open_clip's ViT and text transformers) is replaced as a whole
  by a ``RectifiedMultiheadAttention``: its packed ``in_proj_weight`` (3E x E, one rectifier
  for q, k and v together; separate q/k/v rectifiers when kdim/vdim differ) and its
  ``out_proj`` both get a rectifier, and the original module runs with the rectified weights
  through ``torch.func.functional_call`` (its own forward, masks and fast path included).
- Not rectified (stay frozen): convolutions (the ResNet tower, the ViT patch embedding),
  embeddings, LayerNorm/BatchNorm affine parameters, and projections stored as bare parameters
  (``visual.proj``, ``text_projection`` of OpenAI-style CLIP). BatchNorm running statistics of
  RN towers follow ``trainer.freeze_bn`` (set it to keep the backbone strictly frozen).
- One shared set of rectifiers keeps training across stages. The paper's RKR keeps one set per
  task and picks it by task identity at test time; the CL-CLIP evaluation is task-agnostic
  (80-way over every class), so a single set, updated stage after stage, is used instead.

The rectifiers are submodules of ``run.model``, so ``run.model.state_dict()`` (checkpoints)
includes them; ``setup`` wraps before a checkpoint is loaded, and the random U is drawn from the
seeded global generator. The method itself keeps no state.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import PARTS, tower_of
from .base import Method, RunContext

log = logging.getLogger(__name__)


class Rectifier(nn.Module):
    """U (out x rank), D (rank x in) and σ (out) of one weight matrix; D = 0 and σ = 1 at start."""

    def __init__(self, out_features: int, in_features: int, rank: int, init_std: float, like: Tensor):
        super().__init__()
        factory = {"device": like.device, "dtype": like.dtype}
        self.U = nn.Parameter(torch.randn(out_features, rank, **factory) * init_std)
        self.D = nn.Parameter(torch.zeros(rank, in_features, **factory))
        self.sigma = nn.Parameter(torch.ones(out_features, **factory))

    def weight(self, base_weight: Tensor) -> Tensor:
        """σ ⊙ (W + U D): the rectified weight (exactly W at initialisation)."""
        return self.sigma[:, None] * (base_weight + self.U @ self.D)

    def bias(self, base_bias: Tensor | None) -> Tensor | None:
        return None if base_bias is None else self.sigma * base_bias

    def rectify(self, base_output: Tensor, x: Tensor) -> Tensor:
        """(W x + b + U D x) ⊙ σ from the frozen layer's output W x + b (exactly it at initialisation)."""
        correction = F.linear(F.linear(x, self.D), self.U)
        return (base_output + correction) * self.sigma.to(base_output.dtype)


class _FallsBackToBase:
    """Attributes the wrapper does not have are read from the wrapped module (``batch_first``, ...)."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if name == "base" or not modules or "base" not in modules:
                raise
            return getattr(modules["base"], name)


class RectifiedLinear(_FallsBackToBase, nn.Linear):
    """A frozen ``nn.Linear`` (``.base``) with a rectifier; ``.weight``/``.bias`` are the rectified ones."""

    def __init__(self, base: nn.Linear, rank: int, init_std: float):
        nn.Module.__init__(self)  # not nn.Linear.__init__: weight/bias are properties here
        self.base = base
        self.rectifier = Rectifier(base.out_features, base.in_features, rank, init_std, base.weight)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> Tensor:
        return self.rectifier.weight(self.base.weight)

    @property
    def bias(self) -> Tensor | None:
        return self.rectifier.bias(self.base.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.rectifier.rectify(self.base(x), x)


class RectifiedMultiheadAttention(_FallsBackToBase, nn.Module):
    """A frozen ``nn.MultiheadAttention`` run with rectified input and output projections."""

    def __init__(self, base: nn.MultiheadAttention, rank: int, init_std: float):
        super().__init__()
        self.base = base
        embed = base.embed_dim
        if base.in_proj_weight is not None:  # packed q/k/v: one rectifier over the 3E x E matrix
            self.in_proj_rectifier = Rectifier(3 * embed, embed, rank, init_std, base.in_proj_weight)
        else:  # kdim/vdim differ from embed_dim: separate q/k/v weights, one rectifier each
            self.q_proj_rectifier = Rectifier(embed, embed, rank, init_std, base.q_proj_weight)
            self.k_proj_rectifier = Rectifier(embed, base.kdim, rank, init_std, base.k_proj_weight)
            self.v_proj_rectifier = Rectifier(embed, base.vdim, rank, init_std, base.v_proj_weight)
        self.out_proj_rectifier = Rectifier(embed, embed, rank, init_std, base.out_proj.weight)

    def rectified_parameters(self) -> dict[str, Tensor]:
        base, rectified = self.base, {}
        if base.in_proj_weight is not None:
            rectified["in_proj_weight"] = self.in_proj_rectifier.weight(base.in_proj_weight)
            in_scale = self.in_proj_rectifier.sigma
        else:
            parts = [self.q_proj_rectifier, self.k_proj_rectifier, self.v_proj_rectifier]
            for key, rectifier in zip(("q_proj_weight", "k_proj_weight", "v_proj_weight"), parts):
                rectified[key] = rectifier.weight(getattr(base, key))
            in_scale = torch.cat([rectifier.sigma for rectifier in parts])
        if base.in_proj_bias is not None:
            rectified["in_proj_bias"] = in_scale * base.in_proj_bias
        rectified["out_proj.weight"] = self.out_proj_rectifier.weight(base.out_proj.weight)
        if base.out_proj.bias is not None:
            rectified["out_proj.bias"] = self.out_proj_rectifier.bias(base.out_proj.bias)
        return rectified

    def forward(self, *args, **kwargs):
        return torch.func.functional_call(self.base, self.rectified_parameters(), args, kwargs)


WRAPPERS = (RectifiedLinear, RectifiedMultiheadAttention)


def _rectifiable(module: nn.Module, prefix: str, towers: tuple[str, ...]):
    """(parent, attribute, child) for every not-yet-wrapped Linear / MultiheadAttention in ``towers``."""
    for attribute, child in module.named_children():
        name = f"{prefix}{attribute}"
        if isinstance(child, WRAPPERS):
            continue
        if isinstance(child, (nn.Linear, nn.MultiheadAttention)):  # an MHA's out_proj goes with it
            if tower_of(f"{name}.") in towers:
                yield module, attribute, child
            continue
        yield from _rectifiable(child, f"{name}.", towers)


def add_rectifiers(model: nn.Module, part: str, rank: int = 4, init_std: float = 0.02) -> int:
    """Wrap the linears of ``part``'s tower(s) in place; returns how many were wrapped."""
    towers = ("image", "text") if part == "whole" else (part,)
    targets = list(_rectifiable(model, "", towers))
    for parent, attribute, child in targets:
        wrapper = RectifiedMultiheadAttention if isinstance(child, nn.MultiheadAttention) else RectifiedLinear
        setattr(parent, attribute, wrapper(child, rank, init_std))
    return len(targets)


def rectifier_parameters(model: nn.Module, part: str) -> list[nn.Parameter]:
    towers = ("image", "text") if part == "whole" else (part,)
    return [
        param
        for name, module in model.named_modules()
        if isinstance(module, Rectifier) and tower_of(f"{name}.") in towers
        for param in module.parameters()
    ]


class RKR(Method):
    def __init__(self, name: str = "rkr", rank: int = 4, init_std: float = 0.02):
        super().__init__(name)
        if rank < 1:
            raise ValueError(f"method.rank={rank} must be >= 1.")
        self.rank, self.init_std = rank, init_std

    def setup(self, run: RunContext) -> list[nn.Parameter]:
        if run.part not in PARTS:
            raise ValueError(f"part='{run.part}' is not one of {PARTS}.")
        run.model.requires_grad_(False)
        wrapped = add_rectifiers(run.model, run.part, self.rank, self.init_std)
        parameters = rectifier_parameters(run.model, run.part)
        for param in parameters:
            param.requires_grad_(True)
        if run.train_logit_scale:
            run.model.logit_scale.requires_grad_(True)
            parameters.append(run.model.logit_scale)
        log.info(
            "RKR: %d linear/attention layers rectified (rank %d), %d trainable parameters",
            wrapped, self.rank, sum(p.numel() for p in parameters),
        )
        return parameters
