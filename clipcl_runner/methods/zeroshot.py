"""Zero-shot: evaluate the pretrained model after every stage without training it."""

from .base import Method


class ZeroShot(Method):
    trains = False

    def setup(self, run):
        run.model.requires_grad_(False)
        return []
