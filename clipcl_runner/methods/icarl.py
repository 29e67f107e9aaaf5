"""iCaRL (Rebuffi et al., CVPR 2017, "iCaRL: Incremental Classifier and Representation Learning"),
on CLIP's text-prompt classifier, as a ZSCL baseline.

- Memory: at most ``memory_size`` exemplar images in total, over every class seen so far. At the
  end of each stage the new classes' exemplars are chosen by herding on the L2-normalised image
  features of the model just trained (eval mode, no gradient): exemplars are picked one at a time
  so that the mean of the picked ones stays closest to the class mean (the first one is the image
  closest to the class mean). Quotas: ``memory_size // seen classes`` per class, the remainder one
  each to the earliest classes, never more than a class has (what a small class cannot use goes
  to the others, so the total is min(memory_size, images seen)). Old classes shrink by dropping
  the tail of their herding order (iCaRL's reduce step); quotas never grow as classes are added.
- ``herding: per_stage`` is how ZSCL's code herds (``mtil/src/dynamic_dataset.py``,
  ``cil/continual_clip/dynamic_dataset.py``): one herding order per dataset (MTIL) or task (CIL)
  over all its images, towards the mean of all of them, labels ignored; the new stage keeps
  K − K//t exemplars and every older stage is cut to K//t (K = ``memory_size``, t = stages so
  far; at the first stage K). Those are ZSCL's quotas: from t = 3 on they add up to more than K
  (e.g. 6666 of K = 5000 at t = 3), as in its code. ZSCL's budgets: K = 10000 (MTIL,
  ``--memory_size`` default), 5000 (CIL, hard-coded); the zscl_* presets set them. ZSCL herds
  among the first 30000 (MTIL) / 10000 (CIL) images of a dataset/task only: ``herding_pool``.
- Memory is kept as (stage index, dataset index) pairs per class, in ``state_dict``: checkpoints
  hold indices, not images, and a resumed run rebuilds the same replay set.
- Training: ``training_stage`` is the previous stages' exemplars plus the current stage's full
  training set, one classifier over every class seen so far (labels offset per stage; with
  per-stage templates each class name is its own stage's prompt, see ``merged_stage``).
- Loss: CE over all seen classes + alpha·KL at temperature T between the stage-start model
  (teacher: frozen copy, the previous stage's model) and the student on the OLD classes' logits,
  on every image of the batch (exemplars and new images). Original iCaRL distils with a sigmoid
  binary cross-entropy per old class; CLIP's logits are scaled cosine similarities (×100 for
  trained CLIPs) whose sigmoids saturate, so the softmax KL over the old classes (LwF's form,
  as in the CLIP continual-learning literature) is used instead.
- Classification stays CLIP's prompt classifier (iCaRL's nearest-mean-of-exemplars rule is not
  used: the evaluation is the runner's zero-shot head, the same for every method).
- ZSCL's own iCaRL baselines differ beyond the herding: their exemplars only feed an
  image→text/text→image distillation against the current task's class prompts while the CE
  sees the current task; here they are replayed in the CE as well, as in iCaRL. Their teacher:
  in the released CIL code the previous task's model, but sharing storage with the student
  (``param_q.data = param_k.data``), so that distillation has zero gradient; in MTIL
  (``mtil/scripts/icarl.sh``, a 5-iteration script) the pretrained model, with the distillation
  computed but not added (no ``--image_loss``/``--text_loss``). Here the teacher is a real frozen
  copy of the stage-start model (``frozen_copy``: no shared storage), so the distillation acts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from ..data.stages import Stage, merged_stage
from .base import Method, RunContext
from .distill import StageTeacher, distillation_kl

FEATURE_BATCH = 256


def class_quotas(budget: int, sizes: list[int]) -> list[int]:
    """Water-filling: an even share of ``budget`` per class (the remainder to the first classes),
    never more than a class has; what a class cannot use is shared among the others again."""
    quotas = [0] * len(sizes)
    left, open_classes = budget, [i for i, size in enumerate(sizes) if size > 0]
    while left > 0 and open_classes:
        share, extra = divmod(left, len(open_classes))
        still_open = []
        for rank, i in enumerate(open_classes):
            give = min(share + (1 if rank < extra else 0), sizes[i] - quotas[i])
            quotas[i] += give
            left -= give
            if quotas[i] < sizes[i]:
                still_open.append(i)
        open_classes = still_open
    return quotas


def herding(features: torch.Tensor, count: int) -> list[int]:
    """Rows of ``features`` (normalised) in herding order: each pick brings the running mean of the
    picked rows closest to the mean of all rows. Returns the first ``count`` positions."""
    target = features.mean(dim=0)
    picked: list[int] = []
    running = torch.zeros_like(target)
    available = torch.ones(len(features), dtype=torch.bool, device=features.device)
    for k in range(1, min(count, len(features)) + 1):
        candidates = (running.unsqueeze(0) + features) / k  # mean if each row were picked next
        distance = (candidates - target).norm(dim=1).masked_fill(~available, float("inf"))
        best = int(distance.argmin())
        picked.append(best)
        available[best] = False
        running = running + features[best]
    return picked


HERDING = ("per_class", "per_stage")
STAGE = -1  # the "label" of a per-stage herding's memory key


def zscl_stage_quotas(budget: int, stages: int) -> tuple[int, int]:
    """ZSCL's (new stage, each older stage) exemplar counts at the t-th stage: (K − K//t or K at t = 1, K//t)."""
    return (budget - budget // stages) or budget, budget // stages


class ICaRL(StageTeacher, Method):
    def __init__(
        self,
        name: str = "icarl",
        memory_size: int = 2000,
        alpha: float = 1.0,
        temperature: float = 2.0,
        herding: str = "per_class",
        herding_pool: int | None = None,
    ):
        super().__init__(name)
        if memory_size < 0:
            raise ValueError(f"method.memory_size={memory_size} must be >= 0.")
        if herding not in HERDING:
            raise ValueError(f"method.herding='{herding}' is not one of {HERDING}.")
        if herding_pool is not None and herding_pool < 1:
            raise ValueError(f"method.herding_pool={herding_pool} must be >= 1 (or null: every image of the stage).")
        self.memory_size, self.alpha, self.temperature, self.herding = memory_size, alpha, temperature, herding
        self.herding_pool = herding_pool
        # (stage index, local label) -> [(stage index, dataset index), ...] in herding order
        self.memory: dict[tuple[int, int], list[tuple[int, int]]] = {}

    # -- lifecycle -----------------------------------------------------------------------------
    def wants_teacher(self, run: RunContext) -> bool:
        return run.stage_index > 0  # nothing old to keep at the first stage

    def begin_stage(self, run: RunContext) -> None:
        super().begin_stage(run)  # StageTeacher: the stage-start model from the second stage on
        self.old_classes = sum(len(stage.classnames) for stage in run.stages[: run.stage_index])

    def training_stage(self, run: RunContext) -> Stage | None:
        stage = run.stage
        parts = [(old, self.exemplar_indices(index)) for index, old in enumerate(run.stages[: run.stage_index])]
        return merged_stage(
            stage.name, parts + [(stage, None)], epochs=stage.epochs, iterations=stage.iterations, lr=stage.lr
        )

    def exemplar_indices(self, stage_index: int) -> list[int]:
        """The dataset indices of a stage's exemplars, class by class."""
        return [index for key in sorted(self.memory) if key[0] == stage_index for _, index in self.memory[key]]

    def end_stage(self, run: RunContext) -> None:
        super().end_stage(run)  # drops the teacher
        self.update_memory(run)

    # -- memory --------------------------------------------------------------------------------
    def stage_features(self, run: RunContext, stage: Stage) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image features of the training images of ``stage`` (every one, or the first
        ``herding_pool``; model in eval mode) and their labels."""
        model, was_training = run.model, run.model.training
        model.eval()
        features, labels = [], []
        pool = stage.train
        if self.herding_pool is not None and self.herding_pool < len(pool):
            pool = Subset(pool, range(self.herding_pool))
        with torch.no_grad():
            for images, batch_labels in DataLoader(pool, batch_size=FEATURE_BATCH, shuffle=False):
                features.append(model.encode_image(images.to(run.device), normalize=True).float())
                labels.append(torch.as_tensor(batch_labels))
        model.train(was_training)
        return F.normalize(torch.cat(features), dim=-1), torch.cat(labels).cpu()

    def update_memory(self, run: RunContext) -> None:
        """Herd the current stage's classes, then cut every class to its quota of the budget."""
        index = run.stage_index
        features, labels = self.stage_features(run, run.stage)
        if self.herding == "per_stage":
            new, old = zscl_stage_quotas(self.memory_size, len({key[0] for key in self.memory} | {index}))
            for key in self.memory:
                self.memory[key] = self.memory[key][:old]
            self.memory[(index, STAGE)] = [(index, i) for i in herding(features, new)] if new else []
            return
        new_classes = {
            (index, label): (labels == label).nonzero().flatten() for label in range(len(run.stage.classnames))
        }
        classes = sorted(set(self.memory) | set(new_classes))
        available = [len(self.memory[key]) if key in self.memory else len(new_classes[key]) for key in classes]
        quotas = dict(zip(classes, class_quotas(self.memory_size, available)))
        for key, positions in new_classes.items():
            order = herding(features[positions], quotas[key]) if quotas[key] else []
            self.memory[key] = [(index, int(positions[i])) for i in order]
        for key in classes:
            self.memory[key] = self.memory[key][: quotas[key]]

    def state_dict(self) -> dict:
        memory = [[stage, label, [list(pair) for pair in pairs]] for (stage, label), pairs in self.memory.items()]
        return {"memory": memory}

    def load_state_dict(self, state: dict) -> None:
        if "memory" in state:
            self.memory = {(int(s), int(c)): [(int(a), int(b)) for a, b in pairs] for s, c, pairs in state["memory"]}

    # -- the loss ------------------------------------------------------------------------------
    def training_loss(self, run: RunContext, images: torch.Tensor, labels: torch.Tensor):
        image_features = run.model.encode_image(images, normalize=True)
        stage = run.training
        logits = self.class_logits(run, run.model, image_features, stage.classnames, stage.train_templates)
        ce = F.cross_entropy(logits, labels, label_smoothing=run.label_smoothing)
        terms = {"ce": ce.detach()}
        if self.teacher is None or self.old_classes == 0:
            return ce, terms
        old_names = stage.classnames[: self.old_classes]
        teacher_features = self.teacher_image_features(images)
        with torch.no_grad():
            teacher = self.class_logits(run, self.teacher, teacher_features, old_names, stage.train_templates)
        distill = distillation_kl(logits[:, : self.old_classes], teacher, self.temperature)
        terms["distill"] = distill.detach()
        return ce + self.alpha * distill, terms
