"""Continual-learning methods, one short class per file (selected with ``method=<name>``)."""
from .base import Method, RunContext, distillation_kl, frozen_copy

__all__ = ["Method", "RunContext", "distillation_kl", "frozen_copy"]
