"""RKR (Singh et al., CVPR 2021, "Rectification-based Knowledge Retention for Continual Learning").

CLIP stays frozen; chosen linear layers of the trained tower(s) get a rank-``rank`` weight
correction and a per-output-channel scale:

    y = (W x + b + U D x) ⊙ σ,   U: out x rank (random), D: rank x in (zeros), σ = 1,

so at initialisation the model computes exactly what the frozen CLIP computes. ``init``:
``linear`` draws U as ``nn.Linear(rank, out)`` initialises its weight, U(−1/√rank, 1/√rank);
``normal`` draws N(0, init_std²). The learning rate is the trainer's (``trainer.optimizer.lr``).

Which layers (``layers``):

- ``blocks``: inside every transformer block (open_clip's ``ResidualAttentionBlock``) the
  attention output projection and the MLP's ``c_fc`` and ``c_proj`` (3 per block); the packed
  attention in-projection too with ``in_proj=true``. A ResNet image tower has no blocks, so
  ``part=image`` on an RN model has nothing to rectify and is refused.
- ``all``: every ``nn.Linear`` and attention projection (in and out) of the tower, including
  a ResNet's attention pool.

``part`` picks the towers (``image`` = modules under ``model.visual``, ``text`` = the rest);
``text_rectifies_image`` adds the image tower's rectifiers to ``part=text``. The logit scale
stays frozen unless ``freeze_logit_scale=false`` (then ``trainer.train_logit_scale`` decides).
docs/fidelity.md lists which of these CL-CLIP's code does, and the tests that pin them.

How the model is wrapped (from the outside; open_clip's source is untouched):

- A chosen ``nn.Linear`` is replaced by a ``RectifiedLinear`` holding the frozen original as
  ``.base`` and the new parameters as ``.rectifier``. Some modules never call their linears but
  read ``.weight`` / ``.bias`` directly (ModifiedResNet's attention pool), so
  ``RectifiedLinear.weight`` / ``.bias`` are the rectified ones, σ ⊙ (W + U D) and σ ⊙ b: the
  same map, as the correction is linear. ``RectifiedLinear`` subclasses ``nn.Linear`` so that
  ``isinstance(m, nn.Linear)`` checks (open_clip's text projection) still hold.
- An ``nn.MultiheadAttention`` (it reads ``out_proj.weight`` itself) is replaced as a whole by a
  ``RectifiedMultiheadAttention``: its ``out_proj`` and, when chosen, its packed
  ``in_proj_weight`` (3E x E, one rectifier for q, k and v; separate q/k/v rectifiers when
  kdim/vdim differ) get a rectifier, and the original module runs with the rectified weights
  through ``torch.func.functional_call`` (its own forward, masks and fast path included).
- Never rectified: convolutions, embeddings, LayerNorm/BatchNorm affine parameters, and
  projections stored as bare parameters (``visual.proj``, ``text_projection``). BatchNorm
  running statistics of RN towers follow ``trainer.freeze_bn``.
- One shared set of rectifiers keeps training across stages (the evaluation is task-agnostic,
  80-way over every class, so no per-task set could be picked at test time).

The rectifiers are submodules of ``run.model``, so ``run.model.state_dict()`` (checkpoints)
includes them; ``setup`` wraps before a checkpoint is loaded, and the random U is drawn from the
seeded global generator. The method itself keeps no state.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import PARTS, tower_of
from .base import Method, RunContext

log = logging.getLogger(__name__)


INITS = ("linear", "normal")
LAYERS = ("blocks", "all")
BLOCK_CLASSES = ("ResidualAttentionBlock", "CustomResidualAttentionBlock")  # open_clip's transformer blocks


class Rectifier(nn.Module):
    """U (out x rank), D (rank x in) and σ (out) of one weight matrix; D = 0 and σ = 1 at start.

    ``init_std``: a float draws U from N(0, init_std²); "linear" as ``nn.Linear(rank, out)``'s
    default weight, U(−1/√rank, 1/√rank) (kaiming-uniform with a = √5).
    """

    def __init__(self, out_features: int, in_features: int, rank: int, init_std: float | str, like: Tensor):
        super().__init__()
        device, dtype = like.device, like.dtype
        if init_std == "linear":
            self.U = nn.Parameter(torch.empty(out_features, rank, device=device, dtype=dtype))
            nn.init.kaiming_uniform_(self.U, a=math.sqrt(5))
        else:
            self.U = nn.Parameter(torch.randn(out_features, rank, device=device, dtype=dtype) * float(init_std))
        self.D = nn.Parameter(torch.zeros(rank, in_features, device=device, dtype=dtype))
        self.sigma = nn.Parameter(torch.ones(out_features, device=device, dtype=dtype))

    def weight(self, base_weight: Tensor) -> Tensor:
        """σ ⊙ (W + U D): the rectified weight (exactly W at initialisation)."""
        return self.sigma[:, None] * (base_weight + self.U @ self.D)

    def bias(self, base_bias: Tensor | None) -> Tensor | None:
        return None if base_bias is None else self.sigma * base_bias

    def rectify(self, base_output: Tensor, x: Tensor) -> Tensor:
        """(W x + b + U D x) ⊙ σ from the frozen layer's output W x + b (exactly it at initialisation)."""
        correction = F.linear(F.linear(x, self.D), self.U)
        return (base_output + correction) * self.sigma.to(base_output.dtype)


# For the type checker only: the mixin's super().__getattr__ is nn.Module's (it sits before a Module in the bases).
if TYPE_CHECKING:
    _MixinBase = nn.Module
else:
    _MixinBase = object


class _FallsBackToBase(_MixinBase):
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

    def __init__(self, base: nn.MultiheadAttention, rank: int, init_std: float | str, in_proj: bool = True):
        super().__init__()
        self.base = base
        self.in_proj = in_proj
        embed = base.embed_dim
        if not in_proj:
            pass
        elif base.in_proj_weight is not None:  # packed q/k/v: one rectifier over the 3E x E matrix
            self.in_proj_rectifier = Rectifier(3 * embed, embed, rank, init_std, base.in_proj_weight)
        else:  # kdim/vdim differ from embed_dim: separate q/k/v weights, one rectifier each
            self.q_proj_rectifier = Rectifier(embed, embed, rank, init_std, base.q_proj_weight)
            self.k_proj_rectifier = Rectifier(embed, base.kdim, rank, init_std, base.k_proj_weight)
            self.v_proj_rectifier = Rectifier(embed, base.vdim, rank, init_std, base.v_proj_weight)
        self.out_proj_rectifier = Rectifier(embed, embed, rank, init_std, base.out_proj.weight)

    def rectified_parameters(self) -> dict[str, Tensor]:
        base, rectified = self.base, {}
        if not self.in_proj:
            pass
        elif base.in_proj_weight is not None:
            rectified["in_proj_weight"] = self.in_proj_rectifier.weight(base.in_proj_weight)
            in_scale = self.in_proj_rectifier.sigma
        else:
            parts = [self.q_proj_rectifier, self.k_proj_rectifier, self.v_proj_rectifier]
            for key, rectifier in zip(("q_proj_weight", "k_proj_weight", "v_proj_weight"), parts):
                rectified[key] = rectifier.weight(getattr(base, key))
            in_scale = torch.cat([rectifier.sigma for rectifier in parts])
        if self.in_proj and base.in_proj_bias is not None:
            rectified["in_proj_bias"] = in_scale * base.in_proj_bias
        rectified["out_proj.weight"] = self.out_proj_rectifier.weight(base.out_proj.weight)
        if base.out_proj.bias is not None:
            rectified["out_proj.bias"] = self.out_proj_rectifier.bias(base.out_proj.bias)
        return rectified

    def forward(self, *args, **kwargs):
        return torch.func.functional_call(self.base, self.rectified_parameters(), args, kwargs)


WRAPPERS = (RectifiedLinear, RectifiedMultiheadAttention)


def _rectifiable(module: nn.Module, prefix: str, towers: tuple[str, ...], blocks_only: bool, inside: bool = False):
    """(parent, attribute, child) for every not-yet-wrapped Linear / MultiheadAttention in ``towers``
    (with ``blocks_only``, only those inside a transformer block)."""
    for attribute, child in module.named_children():
        name = f"{prefix}{attribute}"
        if isinstance(child, WRAPPERS):
            continue
        in_block = inside or type(child).__name__ in BLOCK_CLASSES
        if isinstance(child, (nn.Linear, nn.MultiheadAttention)):  # an MHA's out_proj goes with it
            if tower_of(f"{name}.") in towers and (in_block or not blocks_only):
                yield module, attribute, child
            continue
        yield from _rectifiable(child, f"{name}.", towers, blocks_only, in_block)


def add_rectifiers(
    model: nn.Module,
    towers: tuple[str, ...],
    rank: int = 4,
    init_std: float | str = "linear",
    layers: str = "blocks",
    in_proj: bool = False,
) -> int:
    """Wrap the chosen linears of ``towers`` in place; returns how many modules were wrapped."""
    targets = list(_rectifiable(model, "", towers, blocks_only=layers == "blocks"))
    for parent, attribute, child in targets:
        if isinstance(child, nn.MultiheadAttention):
            wrapper = RectifiedMultiheadAttention(child, rank, init_std, in_proj=in_proj or layers == "all")
        else:
            wrapper = RectifiedLinear(child, rank, init_std)
        setattr(parent, attribute, wrapper)
    return len(targets)


def rectifier_parameters(model: nn.Module, towers: tuple[str, ...]) -> list[nn.Parameter]:
    return [
        param
        for name, module in model.named_modules()
        if isinstance(module, Rectifier) and tower_of(f"{name}.") in towers
        for param in module.parameters()
    ]


class RKR(Method):
    def __init__(
        self,
        name: str = "rkr",
        rank: int = 4,
        init: str = "linear",
        init_std: float = 0.02,
        layers: str = "blocks",
        in_proj: bool = False,
        freeze_logit_scale: bool = True,
        text_rectifies_image: bool = False,
    ):
        super().__init__(name)
        if rank < 1:
            raise ValueError(f"method.rank={rank} must be >= 1.")
        if init not in INITS:
            raise ValueError(f"method.init='{init}' is not one of {INITS}.")
        if layers not in LAYERS:
            raise ValueError(f"method.layers='{layers}' is not one of {LAYERS}.")
        self.rank, self.init, self.init_std, self.layers, self.in_proj = rank, init, init_std, layers, in_proj
        self.freeze_logit_scale, self.text_rectifies_image = freeze_logit_scale, text_rectifies_image

    def towers(self, part: str) -> tuple[str, ...]:
        if part == "whole" or (part == "text" and self.text_rectifies_image):
            return ("image", "text")
        return (part,)

    def setup(self, run: RunContext) -> list[nn.Parameter]:
        if run.part not in PARTS:
            raise ValueError(f"part='{run.part}' is not one of {PARTS}.")
        run.model.requires_grad_(False)
        towers = self.towers(run.part)
        init = "linear" if self.init == "linear" else self.init_std
        wrapped = add_rectifiers(run.model, towers, self.rank, init, self.layers, self.in_proj)
        if not wrapped:
            raise ValueError(
                f"RKR: no layer to rectify for part={run.part} with method.layers={self.layers} "
                "(a ResNet image tower has no transformer blocks): set method.layers=all."
            )
        parameters = rectifier_parameters(run.model, towers)
        for param in parameters:
            param.requires_grad_(True)
        if run.train_logit_scale and not self.freeze_logit_scale:
            run.model.logit_scale.requires_grad_(True)
            parameters.append(run.model.logit_scale)
        log.info(
            "RKR: %d linear/attention layers rectified (rank %d, towers %s), %d trainable parameters",
            wrapped,
            self.rank,
            "+".join(towers),
            sum(p.numel() for p in parameters),
        )
        return parameters
