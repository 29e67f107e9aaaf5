"""The cut text encoding is exact: same features and gradients as open_clip's full-context encode_text."""

from __future__ import annotations

import open_clip
import torch

from clipcl_runner.models import register_model_configs
from clipcl_runner.text_encoding import can_cut, encode_text, used_length

NAME = "SynthCLIP-RN-Tiny"


def test_cut_encoding_matches_the_full_context_and_its_gradients():
    register_model_configs()
    torch.manual_seed(0)
    model, tokenizer = open_clip.create_model(NAME), open_clip.get_tokenizer(NAME)
    tokens = tokenizer(["a photo of a red star.", "a blue hexagon", "x"])
    assert can_cut(model) and used_length(tokens) == 9 < tokens.shape[1]

    full = model.encode_text(tokens, normalize=True)
    full.pow(2).sum().backward()
    full_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    cut = encode_text(model, tokens)
    cut.pow(2).sum().backward()

    torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-6)
    assert set(full_grads) == {name for name, p in model.named_parameters() if p.grad is not None}
    for name, param in model.named_parameters():
        if name in full_grads:
            torch.testing.assert_close(param.grad, full_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_towers_that_cannot_be_cut_run_unchanged():
    class Plain(torch.nn.Module):
        def encode_text(self, tokens, normalize=False):
            return tokens.float() * (2 if normalize else 1)

    tokens = torch.tensor([[1, 5, 0, 0]])
    assert not can_cut(Plain())
    assert torch.equal(encode_text(Plain(), tokens), tokens.float() * 2)
