"""Data-parallel training under ``torchrun``: joining the process group, sharding, rank-0 decisions.

A task runs unchanged as one process or as several launched by ``torchrun``
(``torchrun --nproc_per_node N -m structnets ...``): :func:`distributed` joins the group
only when ``WORLD_SIZE`` says there is one (gloo on CPUs, NCCL on GPUs), the engine wraps
the model in ``DistributedDataParallel``, :func:`shard` gives each rank its part of an
epoch through torch's ``DistributedSampler``, and :func:`decide` makes every rank follow
rank 0's decision (stop for time, stop early), so that no rank waits on a collective the
others have left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

__all__ = ["World", "distributed", "world", "shard", "shuffled", "decide"]


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes outputs and shows progress (rank 0)."""
        return self.rank == 0


def world() -> World:
    """The current process group's rank and size; one process when none is joined."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return World(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return World()


@contextlib.contextmanager
def distributed(device: torch.device | str = "cpu") -> Iterator[World]:
    """Joins the torchrun process group when launched by torchrun (``WORLD_SIZE`` > 1), else a no-op."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or world().world_size > 1:
        yield world()
        return
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":  # one GPU per process, as torchrun numbers them on each node
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend)
    try:
        yield world()
    finally:
        torch.distributed.destroy_process_group()


def shard(count: int, epoch: int, seed: int, shuffle: bool = True) -> Tensor:
    """This rank's indices of ``range(count)`` for ``epoch``: a seeded permutation, split across ranks.

    One process gets the whole permutation; under torchrun each rank gets its share, as
    torch's ``DistributedSampler`` deals it (padded so that every rank takes as many steps).
    """
    here = world()
    if here.world_size == 1:
        if not shuffle:
            return torch.arange(count)
        return torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    sampler = torch.utils.data.distributed.DistributedSampler(
        range(count), num_replicas=here.world_size, rank=here.rank, shuffle=shuffle, seed=seed
    )
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def shuffled(batches: Sequence[T], seed: int) -> Callable[[int], list[T]]:
    """``batches(epoch)`` for :func:`structnets.train.engine.fit`: this rank's share of
    ready-made batches, in a seeded order that changes with the epoch."""
    return lambda epoch: [batches[k] for k in shard(len(batches), epoch, seed)]


def decide(flag: bool, device: torch.device | str = "cpu") -> bool:
    """Rank 0's ``flag`` on every rank (the flag itself with one process)."""
    here = world()
    if here.world_size == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.broadcast(value, 0)
    return bool(value.item())
