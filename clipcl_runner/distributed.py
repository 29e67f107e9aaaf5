"""Data-parallel training, driven by the environment as open_clip_train's distributed.py is.

Under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK) or SLURM's ``srun`` (SLURM_PROCID /
SLURM_NTASKS / SLURM_LOCALID, with MASTER_ADDR / MASTER_PORT exported by the batch script)
every process runs the same stage loop: each trains on its slice of every global batch with
the gradients averaged by torch's DistributedDataParallel, each encodes its share of every
evaluation set, and the features are gathered so that all ranks compute the same metrics.
Only rank 0 writes the run folder, checkpoints and the W&B run. A single process (no such
environment) is ``world_size == 1`` and nothing here does anything.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .console import environment_world

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _from_environment() -> World:
    # console.py reads the same environment to log on rank 0 alone, before torch is imported
    return World(*environment_world())


_world = World()


def world() -> World:
    return _world


def init_distributed(device_kind: str = "auto") -> World:
    """Join the process group the environment describes (idempotent); a single process returns World()."""
    global _world
    found = _from_environment()
    if not found.distributed:
        return found
    if not dist.is_initialized():
        os.environ.setdefault("RANK", str(found.rank))
        os.environ.setdefault("WORLD_SIZE", str(found.size))
        os.environ.setdefault("LOCAL_RANK", str(found.local_rank))
        use_cuda = torch.cuda.is_available() and device_kind not in ("cpu",)
        if use_cuda:
            torch.cuda.set_device(found.local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
        log.info("rank %d of %d (local %d) joined the process group", found.rank, found.size, found.local_rank)
    _world = found
    return found


def device_for(world_: World, requested: torch.device) -> torch.device:
    """Each rank's own GPU (cuda:LOCAL_RANK); CPU stays CPU."""
    if world_.distributed and requested.type == "cuda":
        return torch.device("cuda", world_.local_rank)
    return requested


def broadcast_object(value, src: int = 0):
    """``value`` of rank ``src`` on every rank (the run folder, a stop request)."""
    if not _world.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on any (a preemption signal reaches ranks at different steps)."""
    if not _world.distributed:
        return flag
    device = torch.device("cuda", _world.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def shard(length: int) -> range:
    """This rank's share of ``range(length)``: every size-th index (balanced to within one)."""
    return range(_world.rank, length, _world.size)


def gather_shards(local: torch.Tensor, length: int) -> torch.Tensor:
    """Reassemble the per-rank results of :func:`shard` into the order of ``range(length)`` on every rank."""
    if not _world.distributed:
        return local
    size = _world.size
    per_rank = -(-length // size)
    padded = local.new_zeros((per_rank, *local.shape[1:]))
    padded[: len(local)] = local
    gathered = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(gathered, padded)
    # Row j of rank r is index r + j * size: interleave, then drop the padding.
    return torch.stack(gathered, dim=1).reshape(per_rank * size, *local.shape[1:])[:length]


def barrier() -> None:
    if _world.distributed:
        dist.barrier()


def shutdown() -> None:
    global _world
    if dist.is_initialized():
        dist.destroy_process_group()
    _world = World()
