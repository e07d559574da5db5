"""Schedules: the order in which nodes update.

Edges follow torch_geometric's convention throughout structnets: ``edge_index[0]`` holds
senders (sources), ``edge_index[1]`` receivers (targets), and state flows from sender to
receiver. A chain's edges point forward in time; a tree's point from child to parent.

* :class:`Synchronous`: every node updates in every one of ``rounds`` rounds.
* :class:`Topological`: a node updates once, after all its senders. Nodes are grouped into
  levels, a node's level being the length of the longest path to it from a source, and
  each level is one batched step over the whole batch. ``reverse=True`` runs against the
  edges (a backward RNN, a root-to-leaves tree pass).

:func:`topological_levels` computes the levels on the edge index's device with vectorised
frontier peeling (Kahn's algorithm, one batched step per level) and caches the result with
the edge index tensor, so a batch that is propagated many times is analysed once.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "CycleError",
    "Synchronous",
    "Topological",
    "LevelInputs",
    "Levels",
    "compute_levels",
    "build_levels",
    "topological_levels",
    "LevelLists",
    "level_lists",
    "check_edge_index",
]


class CycleError(ValueError):
    """Raised when a topological schedule meets a cycle; ``cycle`` lists nodes on it."""

    def __init__(self, message: str, cycle: list[int]) -> None:
        super().__init__(message)
        self.cycle = cycle


@dataclass(frozen=True)
class Synchronous:
    """Every node updates in each of ``rounds`` rounds (MPNN, interaction networks)."""

    rounds: int

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError(f"rounds must be non-negative, got {self.rounds}")


@dataclass(frozen=True)
class Topological:
    """Each node updates once, after its senders; ``reverse`` runs against the edges."""

    reverse: bool = False


@dataclass(frozen=True, eq=False)
class LevelInputs:
    """The edges arriving at one level, grouped by the level they come from.

    Attributes:
        groups: ``(source_level, rows, count)`` per group, in edge order. ``rows`` indexes
            the source level's state tensor; None means rows ``0 .. count - 1`` (a slice,
            the usual case on chains, so no gather is needed).
        receivers: ``[num_edges]`` each edge's receiving node, as a position in this level.
        edge_ids: ``[num_edges]`` the edges' columns in the original ``edge_index``.
        one_to_one: every node of the level receives exactly one edge, edge ``e`` going
            to node ``e``.
    """

    groups: tuple[tuple[int, Tensor | None, int], ...]
    receivers: Tensor
    edge_ids: Tensor
    one_to_one: bool


@dataclass(frozen=True, eq=False)
class Levels:
    """A topological schedule for one batch.

    Attributes:
        num_nodes: nodes in the batch.
        level: ``[num_nodes]`` level of each node.
        sizes: number of nodes per level.
        order: ``[num_nodes]`` node ids sorted by level (ties by id), or None when the
            node ids are already in that order.
        rank: ``[num_nodes]`` the inverse of ``order`` (None with it).
        inputs: per level its :class:`LevelInputs`; None for level 0, whose nodes are the
            sources and have no incoming edges.
    """

    num_nodes: int
    level: Tensor
    sizes: tuple[int, ...]
    order: Tensor | None
    rank: Tensor | None
    inputs: tuple[LevelInputs | None, ...]

    @property
    def num_levels(self) -> int:
        return len(self.sizes)

    @property
    def sources(self) -> Tensor:
        """Ids of the level-0 nodes (no incoming edges) in schedule order: increasing id
        unless the schedule was built with another ``tie_break``."""
        if not self.sizes:
            return self.level.new_zeros(0)
        if self.order is None:
            return torch.arange(self.sizes[0], device=self.level.device)
        return self.order[: self.sizes[0]]


def check_edge_index(edge_index: Tensor, num_nodes: int, nodes_device: torch.device | None = None) -> None:
    """Raises for an edge_index that is not ``[2, num_edges]`` integers within ``0 .. num_nodes - 1``,
    or that lies on another device than the nodes' ``nodes_device``.

    The range check reads the smallest and largest index, one synchronisation with the device.
    While ``torch.compile`` or ``torch.export`` traces the caller it is left out (a value
    check cannot be traced; the shape, dtype and device checks still run), so a traced
    program does not check the indices it is given.
    """
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index must be a tensor, got {type(edge_index).__name__}")
    if nodes_device is not None and edge_index.device != nodes_device:
        raise ValueError(
            f"edge_index is on {edge_index.device} but the node states are on {nodes_device}; move both to one device"
        )
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, num_edges], got {tuple(edge_index.shape)}")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"edge_index must hold integers, got dtype {edge_index.dtype}")
    if num_nodes < 0:
        raise ValueError(f"num_nodes must be non-negative, got {num_nodes}")
    if not torch.compiler.is_compiling() and edge_index.numel():
        low, high = (int(v) for v in torch.aminmax(edge_index))
        if low < 0 or high >= num_nodes:
            raise ValueError(f"edge_index refers to node {low if low < 0 else high}, but num_nodes is {num_nodes}")


def _find_cycle(edge_index: Tensor, unordered: Tensor) -> list[int]:
    """Nodes on one cycle among the nodes that frontier peeling could not order."""
    import networkx as nx  # error path only

    keep = torch.zeros(int(edge_index.max()) + 1, dtype=torch.bool, device=edge_index.device)
    keep[unordered] = True
    src, dst = edge_index
    mask = keep[src] & keep[dst]
    graph = nx.DiGraph(list(zip(src[mask].tolist(), dst[mask].tolist())))
    return [u for u, _ in nx.find_cycle(graph)]


def compute_levels(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Level of every node: the length of the longest path reaching it from a source.

    Vectorised Kahn's algorithm on the edge index's device: each round removes the
    current frontier (nodes whose senders have all been placed) and lowers the in-degree
    of its out-neighbours, touching only the frontier's edges, so the total work is
    linear in the number of edges; the number of rounds is the number of levels.

    Raises:
        CycleError: naming the nodes of a cycle, when the graph is not a DAG.

    Shapes:
        edge_index: ``[2, num_edges]``; returns ``[num_nodes]`` (int64).
    """
    check_edge_index(edge_index, num_nodes)
    device = edge_index.device
    src, dst = edge_index[0].long(), edge_index[1].long()
    level = torch.full((num_nodes,), -1, dtype=torch.long, device=device)
    indegree = torch.bincount(dst, minlength=num_nodes)
    by_sender = torch.argsort(src, stable=True)
    dst_by_sender = dst[by_sender]
    out_ptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=device)
    out_ptr[1:] = torch.cumsum(torch.bincount(src, minlength=num_nodes), 0)
    frontier = torch.nonzero(indegree == 0).view(-1)
    placed, depth = 0, 0
    while frontier.numel():
        level[frontier] = depth
        placed += frontier.numel()
        start = out_ptr[frontier]
        count = out_ptr[frontier + 1] - start
        total = int(count.sum())
        if total == 0:
            break
        # Positions of the frontier's out-edges in the sender-sorted edge list.
        first = torch.cumsum(count, 0) - count
        positions = torch.repeat_interleave(start - first, count) + torch.arange(total, device=device)
        receivers = dst_by_sender[positions]
        indegree.index_add_(0, receivers, torch.full_like(receivers, -1))
        frontier = torch.unique(receivers[indegree[receivers] == 0])
        depth += 1
    if placed < num_nodes:
        unordered = torch.nonzero(level < 0).view(-1)
        cycle = _find_cycle(edge_index.long(), unordered)
        shown = " -> ".join(str(v) for v in cycle + cycle[:1])
        raise CycleError(
            f"the graph has a cycle where a DAG is required: {shown} "
            f"({num_nodes - placed} of {num_nodes} nodes lie on or after a cycle)",
            cycle,
        )
    return level


def build_levels(edge_index: Tensor, level: Tensor, tie_break: Tensor | None = None) -> Levels:
    """Groups nodes and edges by level, given each node's level.

    Within a level nodes are ordered by ``tie_break`` (default: node id). A builder that
    knows its structure can choose the order so that each level's senders form a prefix
    of the level before it, which the loop then reads as a slice instead of a gather.
    Every edge must go from a lower level to a higher one (checked). Work is vectorised;
    a handful of small host transfers fetch the group sizes.
    """
    num_nodes = level.numel()
    device = level.device
    src, dst = edge_index[0].long(), edge_index[1].long()
    num_levels = int(level.max()) + 1 if num_nodes else 0
    src_level, dst_level = level[src], level[dst]
    if edge_index.shape[1] and bool((src_level >= dst_level).any()):
        bad = int(torch.nonzero(src_level >= dst_level)[0, 0])
        raise ValueError(
            f"edge {bad} ({int(src[bad])} -> {int(dst[bad])}) does not go from a lower level to a higher one"
        )
    if tie_break is None:
        order = torch.argsort(level, stable=True)
    else:
        by_tie = torch.argsort(tie_break, stable=True)
        order = by_tie[torch.argsort(level[by_tie], stable=True)]
    sizes_t = torch.bincount(level, minlength=num_levels)
    identity = bool((order == torch.arange(num_nodes, device=device)).all())
    rank = torch.empty_like(order)
    rank[order] = torch.arange(num_nodes, device=device)
    level_start = torch.cumsum(sizes_t, 0) - sizes_t
    position = rank - level_start[level]

    # Edges sorted by receiver position, then (stably) by (receiver level, sender level).
    num_edges = src.numel()
    by_position = torch.argsort(position[dst], stable=True)
    key = dst_level * max(num_levels, 1) + src_level
    edge_order = by_position[torch.argsort(key[by_position], stable=True)]
    key = key[edge_order]
    rows = position[src[edge_order]]
    receivers = position[dst[edge_order]]
    group_keys, group_counts = torch.unique_consecutive(key, return_counts=True)
    group_id = torch.repeat_interleave(torch.arange(group_keys.numel(), device=device), group_counts)
    group_start = torch.cumsum(group_counts, 0) - group_counts
    within_group = torch.arange(num_edges, device=device) - group_start[group_id]
    not_prefix = torch.zeros(group_keys.numel(), dtype=torch.long, device=device)
    not_prefix.index_add_(0, group_id, (rows != within_group).long())
    edge_level = dst_level[edge_order]
    level_edges = torch.bincount(edge_level, minlength=num_levels)
    level_edge_start = torch.cumsum(level_edges, 0) - level_edges
    within_level = torch.arange(num_edges, device=device) - level_edge_start[edge_level]
    not_identity = torch.zeros(num_levels, dtype=torch.long, device=device)
    not_identity.index_add_(0, edge_level, (receivers != within_level).long())

    sizes = sizes_t.tolist()
    one_to_one = ((not_identity == 0) & (level_edges == sizes_t)).tolist()
    group_list = list(zip((group_keys // max(num_levels, 1)).tolist(), (group_keys % max(num_levels, 1)).tolist()))
    counts = group_counts.tolist()
    prefix = (not_prefix == 0).tolist()

    rows_split = rows.split(counts)
    inputs: list[LevelInputs | None] = [None] * num_levels
    edge_counts = level_edges.tolist()
    receivers_split, edge_ids_split = receivers.split(edge_counts), edge_order.split(edge_counts)
    per_level_groups: dict[int, list[tuple[int, Tensor | None, int]]] = {}
    for (target, source), count, is_prefix, group_rows in zip(group_list, counts, prefix, rows_split):
        per_level_groups.setdefault(target, []).append((source, None if is_prefix else group_rows, count))
    for target, groups in per_level_groups.items():
        inputs[target] = LevelInputs(tuple(groups), receivers_split[target], edge_ids_split[target], one_to_one[target])
    for target in range(1, num_levels):
        if inputs[target] is None:  # impossible for levels from compute_levels
            raise ValueError(f"level {target} has no incoming edges")
    return Levels(
        num_nodes=num_nodes,
        level=level,
        sizes=tuple(sizes),
        order=None if identity else order,
        rank=None if identity else rank,
        inputs=tuple(inputs),
    )


class LevelLists(NamedTuple):
    """A topological schedule as tensors alone, for traced programs (torch.export, ONNX).

    Attributes:
        nodes: per level, its node ids in increasing order (``[n_l]``); levels past the
            graph's last are empty.
        edges: per level from level 1 on, the columns of ``edge_index`` of the edges
            arriving at it (``[e_l]``), in increasing order; ``len(nodes) - 1`` of them.
    """

    nodes: list[Tensor]
    edges: list[Tensor]


def level_lists(edge_index: Tensor, num_nodes: int, num_levels: int, *, reverse: bool = False) -> LevelLists:
    """The schedule of a DAG as :class:`LevelLists` of exactly ``num_levels`` levels.

    Where :class:`Levels` keeps the level sizes as Python ints (a traced program would fix
    them), these carry them only in tensor shapes, so one traced program takes any graph
    of at most ``num_levels`` levels (:func:`structnets.core.propagate.propagate_level_lists`).

    Raises:
        CycleError: the graph (or its reverse) has a cycle.
        ValueError: it has more than ``num_levels`` levels.
    """
    if num_levels < 1:
        raise ValueError(f"num_levels must be at least 1, got {num_levels}")
    directed = edge_index.flip(0) if reverse else edge_index
    level = compute_levels(directed, num_nodes)
    depth = int(level.max()) + 1 if num_nodes else 0
    if depth > num_levels:
        raise ValueError(f"the graph has {depth} levels, more than the {num_levels} the schedule holds")
    order = torch.argsort(level, stable=True)
    nodes = list(order.split(torch.bincount(level, minlength=num_levels).tolist()))
    arriving = level[directed[1].long()]
    by_level = torch.argsort(arriving, stable=True)
    edges = list(by_level.split(torch.bincount(arriving, minlength=num_levels).tolist()))
    return LevelLists(nodes, edges[1:])


# id(edge_index) -> (weak reference to it, {(num_nodes, reverse, version): Levels}).
# Not a WeakKeyDictionary: that compares keys with ==, which tensors overload elementwise.
_CACHE: dict[int, tuple[weakref.ref, dict]] = {}


def _cache_entry(edge_index: Tensor) -> dict:
    key = id(edge_index)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is edge_index:
        return hit[1]
    entry: dict = {}
    _CACHE[key] = (weakref.ref(edge_index, lambda _, key=key: _CACHE.pop(key, None)), entry)
    return entry


def topological_levels(edge_index: Tensor, num_nodes: int, *, reverse: bool = False) -> Levels:
    """The :class:`Levels` of a DAG, cached with ``edge_index``.

    The cache entry lives as long as the ``edge_index`` tensor and is dropped when the
    tensor is modified in place.

    Raises:
        CycleError: when the graph (or its reverse) has a cycle.
    """
    entry = _cache_entry(edge_index)
    key = (num_nodes, reverse, edge_index._version)
    if key not in entry:
        if any(k[2] != edge_index._version for k in entry):
            entry.clear()
        directed = edge_index.flip(0) if reverse else edge_index
        entry[key] = build_levels(directed, compute_levels(directed, num_nodes))
    return entry[key]
