"""LwF as ZSCL benchmarks it (Zheng et al., ICCV 2023, baseline "LwF"; ``mtil/scripts/lwf.sh`` of
github Thunderbeee/ZSCL): ZSCL's distillation machinery pointed at the current task.

Not the LwF of Ding et al. (``method=lwf``, kept as it is). ``lwf.sh`` runs ``--method ZSCL
--image_loss --text_loss --ref-dataset <current dataset> --ref-model <previous stage's model>``
without ``--ref-sentences``, so ``finetune.py`` distils:

- Teacher: the model the stage starts from (the previous stage's model; at the first stage the
  pretrained CLIP, which is the same thing), frozen.
- Texts: the current stage's class prompts with its training template (``ref_dataset.template``),
  embedded by the teacher once per stage and used on both sides.
- Images: a second batch of the current stage's training images each step, read through the
  evaluation transform (``distill_transform: eval``, the reference loader's test preprocessing).
- Loss: CE + alpha·(image→text + text→image) soft-target distillation at T = 2, ZSCL's form
  (alpha 1 in MTIL, 5 in ZSCL's CIL code).

That is ``lwf_vr`` (ZSCL's LwF-VR) with the class prompts in place of the random texts, which is
how it is built here.
"""

from __future__ import annotations

import torch

from .base import RunContext
from .lwf_vr import LwFVR


class ZSCLLwF(LwFVR):
    def __init__(
        self, name: str = "zscl_lwf", alpha: float = 1.0, temperature: float = 2.0, distill_transform: str = "eval"
    ):
        super().__init__(name, alpha=alpha, temperature=temperature, distill_transform=distill_transform)

    def vocabulary_tokens(self, run: RunContext) -> torch.Tensor:
        """The current stage's class prompts (its first training template), as ZSCL's ``ref_texts``."""
        stage = run.stage
        return run.tokenizer([stage.train_templates[0].format(name) for name in stage.classnames])
