"""Text encoding cut to the tokens that matter: an exact shortcut for CLIP's causal text tower.

open_clip's CLIP text tower runs every prompt at the full context (77 tokens) although a class
prompt or a pseudo-class name ends after 5-20. With causal attention no position attends to a
later one, and the pooled feature is read at the EOT token (``text_pool_type='argmax'``), so the
positions after the batch's last EOT cannot change the result: cutting them gives the same
features (up to float rounding) for a fraction of the cost. The model is not edited: the cut
positional embedding and attention mask are passed in with ``torch.func.functional_call``, so
gradients reach the model's own parameters. Other towers (Hugging Face text models, other
pooling, no causal mask) run open_clip's ``encode_text`` unchanged.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.func import functional_call


class _EncodeText(nn.Module):
    """``clip.encode_text`` as a module's forward, so ``functional_call`` can swap its tensors."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, tokens: torch.Tensor, normalize: bool) -> torch.Tensor:
        return self.clip.encode_text(tokens, normalize=normalize)


def can_cut(model: nn.Module) -> bool:
    """A causal text tower pooled at the EOT token (argmax of the token ids), with its own positions."""
    return (
        getattr(model, "text_pool_type", None) == "argmax"
        and isinstance(getattr(model, "attn_mask", None), torch.Tensor)
        and isinstance(getattr(model, "positional_embedding", None), torch.Tensor)
    )


def used_length(tokens: torch.Tensor) -> int:
    """Positions up to the last EOT of the batch (EOT has the largest id). Reads the tokens on the
    host: call it on CPU tokens (the tokenizer's output) to keep the device stream free."""
    return int(tokens.argmax(dim=-1).max()) + 1


def encode_text(
    model: nn.Module, tokens: torch.Tensor, normalize: bool = True, length: int | None = None
) -> torch.Tensor:
    """``model.encode_text(tokens)`` computed on the first ``length`` positions (default: up to the last EOT)."""
    if not can_cut(model):
        return model.encode_text(tokens, normalize=normalize)
    length = used_length(tokens) if length is None else length
    if length >= tokens.shape[1]:
        return model.encode_text(tokens, normalize=normalize)
    cut = {
        "clip.positional_embedding": cast(torch.Tensor, model.positional_embedding)[:length],
        "clip.attn_mask": cast(torch.Tensor, model.attn_mask)[:length, :length],
    }
    return functional_call(_EncodeText(model), cut, (tokens[:, :length], normalize), strict=False)


def encode_frozen(model: nn.Module, tokens: torch.Tensor, device: torch.device, chunk: int = 1024) -> torch.Tensor:
    """Normalised features of many token rows (host tensors) without gradient, ``chunk`` rows at a time:
    a teacher's embeddings of a vocabulary or reference sentences, computed once."""
    with torch.no_grad():
        return torch.cat(
            [encode_text(model, part.to(device), length=used_length(part)) for part in tokens.split(chunk)]
        )
