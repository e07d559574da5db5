"""Structure builders: turning sequences (and, in later modules, trees) into graphs.

A batch of sequences becomes a batch of chains laid out exactly like a
``torch.nn.utils.rnn.PackedSequence``: sequences sorted by decreasing length, node
``offset[t] + j`` being step ``t`` of the ``j``-th sequence in that order. Time steps are
then topological levels and each level's nodes are a prefix of the previous level's, so
the level loop needs no gathers on chains and the packed data is the node feature matrix.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.schedules import Levels, build_levels

__all__ = ["Chains", "chains", "forest_edges"]


@dataclass(frozen=True, eq=False)
class Chains:
    """A batch of chains in packed layout, with both directions' schedules.

    Attributes:
        batch_sizes: sequences still running at each step (the packed ``batch_sizes``).
        edge_index: ``[2, num_nodes - num_sequences]`` edges from step t to step t + 1.
        sequence: ``[num_nodes]`` each node's sequence, by its position in sorted order.
        last: ``[num_sequences]`` node id of each sequence's last step. It is also the row
            of each sequence's final state in the level-ordered states of *either*
            direction: both schedules have one level per step, with the running sequences
            in sorted order, so a sequence of length L ends at its own row of level L - 1.
        forward: the topological schedule along the chains.
        backward: the schedule against them (last step first).
    """

    batch_sizes: tuple[int, ...]
    edge_index: Tensor
    sequence: Tensor
    last: Tensor
    forward: Levels
    backward: Levels


@functools.lru_cache(maxsize=64)
def _chains(batch_sizes: tuple[int, ...], device: torch.device) -> Chains:
    sizes = torch.tensor(batch_sizes, dtype=torch.long, device=device)
    steps = len(batch_sizes)
    num_sequences = batch_sizes[0] if steps else 0
    offset = torch.cumsum(sizes, 0) - sizes
    step = torch.repeat_interleave(torch.arange(steps, device=device), sizes)
    node = torch.arange(int(sizes.sum()), device=device)
    sequence = node - offset[step]
    lengths = torch.bincount(sequence, minlength=num_sequences)
    has_next = sequence < sizes[torch.clamp(step + 1, max=steps - 1)]
    has_next &= step + 1 < steps
    senders = node[has_next]
    edge_index = torch.stack([senders, senders + (sizes[step[has_next]])])
    last = offset[lengths - 1] + torch.arange(num_sequences, device=device)
    return Chains(
        batch_sizes=batch_sizes,
        edge_index=edge_index,
        sequence=sequence,
        last=last,
        forward=build_levels(edge_index, step),
        # Against the chains, order each level by sequence: the sequences still running at
        # reverse step k are then a prefix of those at step k - 1, as in the forward direction.
        backward=build_levels(edge_index.flip(0), lengths[sequence] - 1 - step, tie_break=sequence),
    )


def chains(batch_sizes: Tensor | tuple[int, ...], device: torch.device | str = "cpu") -> Chains:
    """The chains of a packed batch, built once per ``batch_sizes`` and device (cached).

    Args:
        batch_sizes: non-increasing positive counts, as in a ``PackedSequence``.
    """
    key = tuple(int(b) for b in (batch_sizes.tolist() if isinstance(batch_sizes, Tensor) else batch_sizes))
    if any(b <= 0 for b in key) or any(a < b for a, b in zip(key, key[1:])):
        raise ValueError(f"batch_sizes must be positive and non-increasing, got {list(key)[:20]}")
    return _chains(key, torch.device(device))


def forest_edges(parents: list[int | None]) -> Tensor:
    """Child -> parent edges of a forest given each node's parent (None for roots).

    Shapes:
        returns ``[2, num_nodes - num_roots]`` (row 0 children, row 1 parents).
    """
    pairs = [(child, parent) for child, parent in enumerate(parents) if parent is not None]
    if not pairs:
        return torch.zeros(2, 0, dtype=torch.long)
    for child, parent in pairs:
        if not 0 <= parent < len(parents):
            raise ValueError(f"node {child} names parent {parent}, but there are {len(parents)} nodes")
    return torch.tensor(pairs, dtype=torch.long).t().contiguous()
