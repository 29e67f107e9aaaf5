"""Packing a sweep onto one machine: each parallel job claims its own GPU (or CPU share).

Hydra's parallel launchers (joblib, submitit_local) start several jobs at once on one
machine but give every job the same devices. A job here claims a free slot with a
non-blocking file lock, one slot per visible GPU, and holds it until it exits, so N jobs
on N GPUs never share one whatever order they finish in. On a CPU machine every job gets
``threads`` torch threads instead, so parallel jobs do not oversubscribe the cores.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)
_held: list = []  # open lock files: the slot is ours while the process lives


def claim_slot(lock_dir: Path | str, slots: int, poll_s: float = 2.0) -> int:
    """Block until one of ``slots`` slots is free; return its index and keep it until exit."""
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for index in range(slots):
            handle = open(lock_dir / f"slot{index}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.write(str(os.getpid()))
            handle.flush()
            _held.append(handle)
            return index
        if not waited:
            log.info("all %d device slots in %s are busy: waiting for one", slots, lock_dir)
            waited = True
        time.sleep(poll_s)


def release_slots() -> None:
    while _held:
        handle = _held.pop()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def packed_device(lock_dir: Path | str) -> torch.device:
    """A GPU of our own when several are visible, else the only device there is."""
    count = torch.cuda.device_count()
    if count <= 1:
        return torch.device("cuda" if count else "cpu")
    index = claim_slot(lock_dir, count)
    torch.cuda.set_device(index)
    log.info("packed sweep: this job runs on cuda:%d", index)
    return torch.device(f"cuda:{index}")
