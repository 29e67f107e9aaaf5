"""FT: cross-entropy over the current stage's class prompts, nothing else."""

from .base import Method


class Finetune(Method):
    """Plain sequential fine-tuning (the contract's default loss)."""
