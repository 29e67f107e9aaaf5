"""Joint training: the upper bound of a task sequence (every stage's data at once, no continual learning).

At the first stage ``training_stage`` is ``merged_stage`` of ALL stages: every stage's training
images, one classifier over every class of the sequence (labels offset per stage; with
per-stage templates each class name is its own stage's prompt). Schedule: when every stage
trains for a number of iterations, the sum of them; otherwise the first stage's epochs (or the
first epoch count given) over the union. Learning rate: the first stage's.

The later stages train nothing (``training_stage`` is None) but are still evaluated, so every
row of the accuracy matrix after the first equals the first: the model that saw everything.
Transfer-style metrics (which need a model that has not seen a stage) are meaningless here.
"""

from __future__ import annotations

from ..data.stages import Stage, merged_stage
from .base import Method, RunContext


class Joint(Method):
    def __init__(self, name: str = "joint"):
        super().__init__(name)

    def training_stage(self, run: RunContext) -> Stage | None:
        if run.stage_index > 0:
            return None
        stages = list(run.stages)
        if all(bool(stage.iterations) for stage in stages):
            schedule = {"iterations": sum(stage.iterations or 0 for stage in stages)}
        else:
            epochs = next((stage.epochs for stage in stages if stage.epochs and not stage.iterations), 1)
            schedule = {"epochs": epochs}
        return merged_stage("joint", [(stage, None) for stage in stages], lr=stages[0].lr, **schedule)
