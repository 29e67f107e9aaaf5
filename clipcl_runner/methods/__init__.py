"""Continual-learning methods, one short class per file (selected with ``method=<name>``)."""

from .base import Method, RunContext, Support, check_supported
from .distill import distillation_kl, frozen_copy

__all__ = ["Method", "RunContext", "Support", "check_supported", "distillation_kl", "frozen_copy"]
