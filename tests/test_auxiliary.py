"""Auxiliary data streams: seeded endless order, exact resume from a saved position, workers included."""

from __future__ import annotations

import pytest
import torch

from clipcl_runner.auxiliary import Auxiliary, AuxiliaryStream, EndlessShuffle, open_streams
from clipcl_runner.data.stages import TensorImages


def indexed_images(count: int) -> TensorImages:
    """Image i is filled with the value i, so a batch tells which samples it holds."""
    return TensorImages(
        torch.arange(count, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).clone(),
        torch.zeros(count, dtype=torch.long),
    )


def ids(batch: torch.Tensor) -> list[int]:
    return batch[:, 0, 0, 0].long().tolist()


def test_every_pass_is_a_permutation_and_passes_differ():
    order = iter(EndlessShuffle(5, seed=3))
    first, second = [next(order) for _ in range(5)], [next(order) for _ in range(5)]
    assert sorted(first) == sorted(second) == list(range(5)) and first != second


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_the_saved_position_continues_the_same_batches(workers):
    data = indexed_images(7)
    plain = AuxiliaryStream("ref", Auxiliary(data, 3), seed=1, num_workers=workers, pin_memory=False)
    uninterrupted = [ids(plain.next(torch.device("cpu"))) for _ in range(6)]  # crosses two pass boundaries

    first = AuxiliaryStream("ref", Auxiliary(data, 3), seed=1, num_workers=workers, pin_memory=False)
    before = [ids(first.next(torch.device("cpu"))) for _ in range(2)]
    state = first.state_dict()  # prefetched batches in the workers must not count
    resumed = AuxiliaryStream("ref", Auxiliary(data, 3), seed=1, num_workers=0, pin_memory=False)
    resumed.load_state_dict(state)
    after = [ids(resumed.next(torch.device("cpu"))) for _ in range(4)]
    assert before + after == uninterrupted
    # a batch may straddle two passes: 7 samples in batches of 3
    flat = sum(uninterrupted, [])
    assert sorted(flat[:7]) == list(range(7)) and sorted(flat[7:14]) == list(range(7))


def test_streams_get_distinct_orders():
    data = indexed_images(20)
    streams = open_streams({"a": Auxiliary(data, 5), "b": Auxiliary(data, 5)}, seed=0, num_workers=0, pin_memory=False)
    assert ids(streams["a"].next(torch.device("cpu"))) != ids(streams["b"].next(torch.device("cpu")))
