"""Evaluation after every stage: update-task accuracy (the accuracy matrix), zero-shot probes, retrieval.

Image features are computed once per dataset per evaluation and shared by every head that
uses that dataset; zero-shot heads (template-averaged, normalised class embeddings) are built
here from the cut text encoding, and equal open_clip's ``build_zero_shot_classifier``
(``tests/test_evaluation.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from . import distributed
from . import metric_names as names
from .config_schema import TaskHead
from .data.decoded import decoded
from .data.stages import ClassificationProbe, RetrievalProbe, Stage
from .precision import autocast, evaluation_precision
from .preemption import ignore_stop_signals
from .retrieval import folded_recall, recall_at_k
from .text_encoding import encode_text, used_length

log = logging.getLogger(__name__)
TASK_HEADS = TaskHead.values()


class Evaluator:
    """Runs every probe on a model and returns one flat dict of metrics (percentages).

    A probe is ``eval.probes``' builders' output: a ``ClassificationProbe`` or ``RetrievalProbe``
    (scored here), or any object with a ``dataset`` and a ``score(evaluator, model, features, labels)``
    method returning ``{metric name: value}`` (a new probe kind; its names registered in
    ``metric_names``, e.g. ``register_kind``). ``features``/``labels`` are the dataset's normalised
    image features and labels; the evaluator's ``encode_texts`` and ``head`` are there to use."""

    def __init__(
        self,
        stages: Sequence[Stage],
        probes: Sequence[ClassificationProbe | RetrievalProbe],
        tokenizer,
        device: torch.device,
        precision: str = "fp32",
        batch_size: int = 256,
        num_workers: int = 0,
        task_head: str = "stage",
        balanced: bool = False,
        decoded_cache: bool = False,
        eval_precision: str = "auto",
        retrieval_ties: str = "official",
    ):
        """``precision`` is the trainer's resolved one; ``eval_precision=fp32`` evaluates without autocast."""
        if task_head not in TASK_HEADS:
            raise ValueError(f"eval.task_head='{task_head}' is not one of {TASK_HEADS}.")
        self.stages, self.probes = list(stages), list(probes)
        self.tokenizer, self.device = tokenizer, device
        self.precision = evaluation_precision(eval_precision, precision)
        self.batch_size, self.num_workers, self.task_head = batch_size, num_workers, task_head
        self.retrieval_ties = retrieval_ties  # official: CL-CLIP's argsort order | optimistic: ties count as hits
        self._tokens: dict[tuple, list[tuple[torch.Tensor, int]]] = {}
        # With decoded_cache every test set is decoded once for the whole run (memory: 150 KB per 224-px image).
        self.decoded_cache = decoded_cache
        self._decoded: dict[object, Dataset] = {}
        # The paper's MST matrix is class-balanced (mean per-class recall); plain top-1 otherwise.
        self.task_accuracy = balanced_accuracy if balanced else accuracy

    @torch.no_grad()
    def encode_images(self, model, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image features and labels; in a distributed run each rank encodes its share and all gather."""
        length, world = len(dataset), distributed.world()
        if world.distributed:
            dataset = Subset(dataset, distributed.shard(length))
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=ignore_stop_signals,
        )
        feature_batches, label_batches = [], []
        for images, targets in loader:
            with autocast(self.precision, self.device):
                encoded = model.encode_image(images.to(self.device, non_blocking=True), normalize=True)
            feature_batches.append(encoded.float())
            label_batches.append(torch.as_tensor(targets))
        features, labels = torch.cat(feature_batches), torch.cat(label_batches).to(self.device)
        if world.distributed:
            features, labels = distributed.gather_shards(features, length), distributed.gather_shards(labels, length)
        return features, labels

    def token_chunks(self, texts: Sequence[str]) -> list[tuple[torch.Tensor, int]]:
        """``texts`` tokenised in chunks of ``batch_size`` with each chunk's used length, once per run:
        the same prompts and captions come back at every evaluation."""
        key = tuple(texts)
        if key not in self._tokens:
            chunks = [
                self.tokenizer(list(texts[start : start + self.batch_size]))
                for start in range(0, len(texts), self.batch_size)
            ]
            self._tokens[key] = [(tokens, used_length(tokens)) for tokens in chunks]
        return self._tokens[key]

    @torch.no_grad()
    def encode_texts(self, model, texts: Sequence[str]) -> torch.Tensor:
        encoded = []
        for tokens, length in self.token_chunks(texts):
            with autocast(self.precision, self.device):
                encoded.append(encode_text(model, tokens.to(self.device, non_blocking=True), length=length).float())
        return torch.cat(encoded)

    def head(self, model, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """(D, C) zero-shot weights: each class's prompts encoded, averaged over templates, normalised
        (open_clip's ``build_zero_shot_classifier``, with the prompts cut after their last EOT)."""
        texts = [template.format(name) for name in classnames for template in templates]
        features = self.encode_texts(model, texts).view(len(classnames), len(templates), -1).mean(dim=1)
        return F.normalize(features, dim=-1).t()

    def _task_classes(self, stage_index: int, completed: int) -> tuple[list[str], int]:
        """Class names of the head that classifies stage ``stage_index``'s test set, and that stage's offset in it."""
        if self.task_head == "stage":
            return list(self.stages[stage_index].classnames), 0
        last = len(self.stages) if self.task_head == "all" else max(completed, stage_index + 1)
        names: list[str] = []
        offset = 0
        for index, stage in enumerate(self.stages[:last]):
            if index == stage_index:
                offset = len(names)
            names.extend(stage.classnames)
        return names, offset

    @torch.no_grad()
    def __call__(self, model, completed_stages: int) -> dict[str, float]:
        was_training = model.training
        model.eval()
        cache: dict[object, tuple[torch.Tensor, torch.Tensor]] = {}

        def features_of(dataset: Dataset):
            # Keyed by content where a dataset can say it (two probes on the same files), else by object.
            key = getattr(dataset, "cache_key", id(dataset))
            if key not in cache:
                if self.decoded_cache:
                    if key not in self._decoded:
                        self._decoded[key] = decoded(dataset, self.num_workers)
                    dataset = self._decoded[key]
                cache[key] = self.encode_images(model, dataset)
            return cache[key]

        heads: dict[tuple, torch.Tensor] = {}

        def head_of(classnames, templates) -> torch.Tensor:
            # A class-incremental head (every seen class) is the same for every seen stage: build it once.
            key = (tuple(classnames), tuple(templates))
            if key not in heads:
                heads[key] = self.head(model, classnames, templates)
            return heads[key]

        metrics: dict[str, float] = {}
        seen_correct, seen_count = 0.0, 0  # class-incremental accuracy: all seen test images among all seen classes
        for index, stage in enumerate(self.stages):
            classnames, offset = self._task_classes(index, completed_stages)
            features, labels = features_of(stage.test)
            logits = features @ head_of(classnames, stage.eval_templates)
            metrics[names.task_acc(stage.name)] = self.task_accuracy(logits, labels + offset)
            if self.task_head == "seen" and index < max(completed_stages, 1):
                seen_correct += float((logits.argmax(dim=1) == labels + offset).sum())
                seen_count += len(labels)
        if seen_count:
            metrics[names.CIL_ACC] = 100.0 * seen_correct / seen_count
        for probe in self.probes:
            features, labels = features_of(probe.dataset)
            if isinstance(probe, ClassificationProbe):
                targets = labels if probe.targets is None else probe.targets.to(self.device)
                weights = head_of(probe.classnames, probe.templates)
                metrics[names.zero_shot_acc(probe.name)] = accuracy(features @ weights, targets)
            elif isinstance(probe, RetrievalProbe):
                text_features = self.encode_texts(model, probe.captions)
                score = recall_at_k if probe.folds == 1 else folded_recall
                kwargs = {"ties": self.retrieval_ties} | ({} if probe.folds == 1 else {"folds": probe.folds})
                recalls = score(features, text_features, probe.text_to_image.to(self.device), **kwargs)
                metrics.update({names.retrieval_of(probe.name, key): value for key, value in recalls.items()})
            else:
                metrics.update(probe.score(self, model, features, labels))
        unregistered = names.unknown(list(metrics))
        if unregistered:  # reaches metrics.jsonl only as a name every reader understands
            raise ValueError(
                f"probe metric(s) {unregistered} are of no metric kind: register the probe kind's names in "
                "clipcl_runner/metric_names.py (an entry of KINDS, or metric_names.register_kind(...))."
            )
        model.train(was_training)
        return metrics


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return float((logits.argmax(dim=1) == targets).float().mean().item() * 100.0)


def balanced_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over the classes present in ``targets`` of their top-1 recall, in percent."""
    correct = (logits.argmax(dim=1) == targets).float()
    classes, index = targets.unique(return_inverse=True)
    per_class = torch.zeros(len(classes), device=targets.device).index_add_(0, index, correct)
    counts = torch.bincount(index, minlength=len(classes)).float()
    return float((per_class / counts).mean().item() * 100.0)
