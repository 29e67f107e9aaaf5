"""Extra data streams a method declares (ZSCL's reference images, LwF-VR's second batch, replay).

A method returns ``{name: Auxiliary(dataset, batch_size)}`` from ``Method.auxiliary_data``; the
trainer serves each stream through its own DataLoader (worker processes, pinned memory on CUDA,
persistent workers) and passes one batch of every stream to ``training_loss`` as a keyword
argument of the same name. Decoding JPEGs thus happens in the workers, ahead of the step, instead
of on the training thread.

The order is an endless sequence of seeded permutations (one per pass over the dataset), and the
stream's position -- the number of samples handed to the loss, not the number prefetched -- is
saved in mid-stage checkpoints, so a resumed stage continues with exactly the batches an
uninterrupted one would have drawn.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from .preemption import ignore_stop_signals


@dataclass
class Auxiliary:
    """One extra stream: ``batch_size`` samples of ``dataset`` per optimiser step (None: ``trainer.batch_size``,
    e.g. LwF-VR's second batch). Under DDP every rank gets the same whole batch."""

    dataset: Dataset
    batch_size: int | None = None
    drop_labels: bool = True  # hand the loss the images only (datasets yield (image, label) pairs)


def draw_batch(spec: Auxiliary, device: torch.device, batch_size: int | None = None):
    """One batch of ``spec`` drawn on the calling thread (indices without replacement from torch's global
    RNG): what a method uses when its ``training_loss`` is called outside the trainer, without the batch."""
    count = spec.batch_size or batch_size
    picked = torch.randperm(len(spec.dataset))[:count].tolist()
    batch = default_collate([spec.dataset[i] for i in picked])
    if spec.drop_labels and isinstance(batch, (list, tuple)):
        batch = batch[0]
    return batch.to(device, non_blocking=True) if isinstance(batch, torch.Tensor) else batch


class EndlessShuffle(Sampler[int]):
    """Permutation after permutation of ``range(size)``, each drawn from (seed, pass), from ``start`` on."""

    def __init__(self, size: int, seed: int, start: int = 0):
        if size < 1:
            raise ValueError("an auxiliary stream needs a non-empty dataset")
        self.size, self.seed, self.start = size, seed, start

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.size)
        while True:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            yield from torch.randperm(self.size, generator=generator)[offset:].tolist()
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only needs a number for its own bookkeeping
        return 2**62


class AuxiliaryStream:
    """Batches of one auxiliary dataset, with a resumable position."""

    def __init__(
        self, name: str, spec: Auxiliary, seed: int, num_workers: int, pin_memory: bool, batch_size: int | None = None
    ):
        if spec.batch_size is None and batch_size is None:
            raise ValueError(f"auxiliary stream '{name}' has no batch size (Auxiliary.batch_size or the trainer's)")
        self.name, self.spec, self.seed = name, spec, seed
        self.batch_size = spec.batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.position = 0  # samples handed to the loss so far
        self._iterator: Iterator | None = None

    def _loader(self) -> DataLoader:
        sampler = EndlessShuffle(len(self.spec.dataset), self.seed, self.position)
        return DataLoader(
            self.spec.dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),  # never draw from the global RNG
            worker_init_fn=ignore_stop_signals,  # the main process owns SIGTERM/SIGINT (it checkpoints)
        )

    def next(self, device: torch.device):
        if self._iterator is None:
            self._iterator = iter(self._loader())
        batch = next(self._iterator)
        self.position += self.batch_size
        if self.spec.drop_labels and isinstance(batch, (list, tuple)):
            batch = batch[0]
        return batch.to(device, non_blocking=True) if isinstance(batch, torch.Tensor) else batch

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position, self._iterator = int(state["position"]), None


def open_streams(
    specs: dict[str, Auxiliary], seed: int, num_workers: int, pin_memory: bool, batch_size: int | None = None
) -> dict[str, AuxiliaryStream]:
    """One stream per declared dataset; each gets its own seed so two streams never share an order.
    ``batch_size``: the training (global) batch size, for streams that declare none."""
    return {
        name: AuxiliaryStream(name, spec, seed * 7919 + index + 1, num_workers, pin_memory, batch_size)
        for index, (name, spec) in enumerate(sorted(specs.items()))
    }
