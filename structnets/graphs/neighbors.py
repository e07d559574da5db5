"""Neighbour graphs of point sets: all pairs within a radius, and k nearest neighbours.

torch_geometric's ``radius_graph`` and ``knn_graph`` need the compiled pyg-lib or
torch-cluster packages; these functions need neither. Two backends:

* ``"kdtree"``: scipy's ``cKDTree`` (CPU tensors), building one tree per graph of the batch;
* ``"cells"``: a cell list written in torch (any device, the default on GPUs): points are
  binned into cubes of side ``r``, sorted by cell, and each point is compared only with
  the points of its own and the adjacent cells, found by binary search in the sorted
  order. Work and memory grow with the number of points times the neighbours per point,
  not with the square of the number of points.

Both return the same edges: torch_geometric's convention, ``edge_index[0]`` the neighbour
(sender) and ``edge_index[1]`` the centre (receiver), every pair in both directions,
sorted by receiver then sender. No neighbour is ever dropped silently: ``max_num_neighbors``
is off by default, and when set, what it drops is counted in a warning.
"""

from __future__ import annotations

import enum
import itertools
import math
import warnings

import numpy as np
import torch
from torch import Tensor

__all__ = ["radius_graph", "knn_graph", "NeighborBackend", "NeighborCapWarning"]


class NeighborBackend(enum.Enum):
    """How :func:`radius_graph` searches: scipy's k-d tree (CPU), a torch cell list (any device),
    or the first for CPU tensors and the second otherwise (``AUTO``)."""

    AUTO = "auto"
    KDTREE = "kdtree"
    CELLS = "cells"


class NeighborCapWarning(UserWarning):
    """``max_num_neighbors`` dropped neighbours; the message says how many."""


def _check(pos: Tensor, batch: Tensor | None) -> Tensor:
    if not isinstance(pos, Tensor) or pos.dim() != 2 or pos.shape[1] not in (1, 2, 3):
        shape = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
        raise ValueError(f"pos must be a [num_points, 1|2|3] tensor, got {shape}")
    if not pos.is_floating_point():
        raise TypeError(f"pos must hold floating-point coordinates, got {pos.dtype}")
    bad = ~torch.isfinite(pos).all(1)
    if bool(bad.any()):
        rows = bad.nonzero().view(-1)[:10].tolist()
        raise ValueError(f"pos has NaN or infinite coordinates at point(s) {rows}")
    if batch is None:
        return torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    if batch.shape != (pos.shape[0],):
        raise ValueError(f"batch must be [num_points] = [{pos.shape[0]}], got {tuple(batch.shape)}")
    if batch.numel() and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be sorted (points of one graph together, graphs in order)")
    return batch.long()


def _sorted_edges(senders: Tensor, receivers: Tensor, num_points: int) -> Tensor:
    order = torch.argsort(receivers * num_points + senders)
    return torch.stack([senders[order], receivers[order]])


def _cap(edge_index: Tensor, pos: Tensor, max_num_neighbors: int | None) -> Tensor:
    """Keeps each receiver's ``max_num_neighbors`` nearest senders, warning with the count dropped."""
    if max_num_neighbors is None or edge_index.shape[1] == 0:
        return edge_index
    senders, receivers = edge_index
    distance = (pos[senders] - pos[receivers]).norm(dim=1)
    # Sort by receiver, then distance; rank within each receiver's run.
    order = torch.argsort(distance, stable=True)
    order = order[torch.argsort(receivers[order], stable=True)]
    counts = torch.bincount(receivers, minlength=pos.shape[0])
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.numel(), device=pos.device) - starts[receivers[order]]
    kept = order[rank < max_num_neighbors]
    dropped = edge_index.shape[1] - kept.numel()
    if dropped:
        warnings.warn(
            f"max_num_neighbors={max_num_neighbors} dropped {dropped} of {edge_index.shape[1]} neighbour pairs "
            f"at {int((counts > max_num_neighbors).sum())} points",
            NeighborCapWarning,
            stacklevel=3,
        )
    return _sorted_edges(senders[kept], receivers[kept], pos.shape[0])


def _graph_ranges(batch: Tensor) -> list[tuple[int, int]]:
    counts = torch.bincount(batch).tolist() if batch.numel() else []
    out, start = [], 0
    for count in counts:
        if count:
            out.append((start, start + count))
        start += count
    return out


def _radius_kdtree(pos: Tensor, r: float, batch: Tensor, loop: bool) -> Tensor:
    from scipy.spatial import cKDTree

    points = pos.detach().cpu().double().numpy()
    senders, receivers = [], []
    for start, end in _graph_ranges(batch.cpu()):
        pairs = cKDTree(points[start:end]).query_pairs(r, output_type="ndarray")
        pairs = pairs.astype(np.int64) + start
        senders += [pairs[:, 0], pairs[:, 1]]
        receivers += [pairs[:, 1], pairs[:, 0]]
        if loop:
            own = np.arange(start, end, dtype=np.int64)
            senders.append(own)
            receivers.append(own)
    if not senders:
        return torch.zeros(2, 0, dtype=torch.long, device=pos.device)
    s = torch.from_numpy(np.concatenate(senders)).to(pos.device)
    t = torch.from_numpy(np.concatenate(receivers)).to(pos.device)
    return _sorted_edges(s, t, pos.shape[0])


def _radius_cells(pos: Tensor, r: float, batch: Tensor, loop: bool, chunk: int = 1 << 24) -> Tensor:
    n, dim = pos.shape
    device = pos.device
    if n == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=device)
    cell = torch.floor((pos - pos.min(0).values) / r).long()  # >= 0
    extent = cell.max(0).values + 3  # room for the -1 / +1 offsets after shifting by 1
    cell = cell + 1
    strides = [1]
    for size in extent.tolist()[:-1]:
        strides.append(strides[-1] * size)
    stride = torch.tensor(strides, device=device)
    per_graph = int(math.prod(extent.tolist()))
    if per_graph * (int(batch.max()) + 1) >= 2**62:
        raise ValueError(
            f"r={r} is too small for the extent of the points for the cell list ({per_graph} cells a graph); "
            "use backend='kdtree'"
        )
    key = batch * per_graph + (cell * stride).sum(1)
    order = torch.argsort(key)
    sorted_key = key[order]
    senders, receivers = [], []
    for offset in itertools.product((-1, 0, 1), repeat=dim):
        shift = int((torch.tensor(offset, device=device) * stride).sum())
        target = key + shift
        lo = torch.searchsorted(sorted_key, target, side="left")
        hi = torch.searchsorted(sorted_key, target, side="right")
        counts = hi - lo
        total = int(counts.sum())
        if total == 0:
            continue
        # Candidate pairs (centre i, sorted position lo_i + k), in chunks to bound memory.
        centres = torch.arange(n, device=device)
        bounds = torch.cumsum(counts, 0)
        start = 0
        while start < n:
            # as many centres as fit in one chunk of candidates
            base = int(bounds[start - 1]) if start else 0
            limit = int(torch.searchsorted(bounds, torch.tensor([base + chunk], device=device), side="right")[0])
            end = max(start + 1, min(n, limit))
            c = counts[start:end]
            i = torch.repeat_interleave(centres[start:end], c)
            first = torch.cumsum(c, 0) - c
            k = torch.arange(int(c.sum()), device=device) - torch.repeat_interleave(first, c)
            j = order[torch.repeat_interleave(lo[start:end], c) + k]
            close = ((pos[i] - pos[j]) ** 2).sum(1) <= r * r
            if not loop:
                close &= i != j
            senders.append(j[close])
            receivers.append(i[close])
            start = end
    if not senders:
        return torch.zeros(2, 0, dtype=torch.long, device=device)
    return _sorted_edges(torch.cat(senders), torch.cat(receivers), n)


def radius_graph(
    pos: Tensor,
    r: float,
    batch: Tensor | None = None,
    *,
    loop: bool = False,
    max_num_neighbors: int | None = None,
    backend: NeighborBackend | str = NeighborBackend.AUTO,
) -> Tensor:
    """All ordered pairs of points of the same graph within distance ``r`` (inclusive).

    Args:
        pos: ``[num_points, dim]`` coordinates, dim 1-3.
        r: the radius (positive).
        batch: ``[num_points]`` sorted graph index of each point; pairs never cross graphs.
        loop: include each point as its own neighbour.
        max_num_neighbors: keep only each point's nearest ones; the number dropped is
            reported with a :class:`NeighborCapWarning`. ``None`` (default) keeps all.
        backend: a :class:`NeighborBackend` (or its value: ``"kdtree"``, ``"cells"``,
            ``"auto"``).

    Returns:
        ``edge_index`` ``[2, num_pairs]``: row 0 neighbour, row 1 centre, sorted by centre.

    Raises:
        ValueError: a bad shape, NaN or infinite coordinates (their rows named), a
            non-positive radius, an unsorted batch, an unknown backend.
    """
    batch = _check(pos, batch)
    if not (isinstance(r, (int, float)) and math.isfinite(r) and r > 0):
        raise ValueError(f"r must be a positive finite number, got {r!r}")
    if max_num_neighbors is not None and max_num_neighbors < 1:
        raise ValueError(f"max_num_neighbors must be at least 1 or None, got {max_num_neighbors}")
    try:
        backend = NeighborBackend(backend)
    except ValueError:
        raise ValueError(f"backend must be one of {[b.value for b in NeighborBackend]}, got {backend!r}") from None
    if backend is NeighborBackend.AUTO:
        backend = NeighborBackend.KDTREE if pos.device.type == "cpu" else NeighborBackend.CELLS
    if backend is NeighborBackend.KDTREE:
        edges = _radius_kdtree(pos, float(r), batch, loop)
    else:
        edges = _radius_cells(pos.detach(), float(r), batch, loop)
    return _cap(edges, pos.detach(), max_num_neighbors)


def knn_graph(pos: Tensor, k: int, batch: Tensor | None = None, *, loop: bool = False) -> Tensor:
    """Each point's ``k`` nearest points of the same graph.

    A graph with fewer than ``k`` other points links each point to all of them, without a
    warning, as torch_cluster's ``knn_graph`` does; count a graph's edges per node if a
    fixed ``k`` matters.

    Row 0 the neighbour, row 1 the centre, as :func:`radius_graph`; not symmetric. CPU
    tensors use scipy's ``cKDTree``; other devices compare each graph's points in blocks
    (quadratic in the points of one graph, so meant for graphs of up to some ten
    thousand points). Ties are broken by index.
    """
    batch = _check(pos, batch)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    senders, receivers = [], []
    for start, end in _graph_ranges(batch.cpu()):
        m = end - start
        want = min(k + (0 if loop else 1), m)
        if pos.device.type == "cpu":
            from scipy.spatial import cKDTree

            points = pos[start:end].detach().double().numpy()
            _, index = cKDTree(points).query(points, k=want)
            index = torch.from_numpy(np.asarray(index, dtype=np.int64).reshape(m, want))
        else:
            block = pos[start:end].detach()
            index = torch.cdist(block, block).topk(want, largest=False).indices
        centre = torch.arange(m, device=index.device).unsqueeze(1).expand_as(index)
        if not loop:
            keep = index != centre
            # Drop the centre itself; if duplicates pushed it out, drop the farthest instead.
            extra = keep.sum(1, keepdim=True) > min(k, m - 1)
            last = torch.zeros_like(keep)
            last[:, -1] = True
            keep &= ~(extra & last)
            index, centre = index[keep], centre[keep]
        senders.append(index.reshape(-1).to(pos.device) + start)
        receivers.append(centre.reshape(-1).to(pos.device) + start)
    if not senders:
        return torch.zeros(2, 0, dtype=torch.long, device=pos.device)
    return _sorted_edges(torch.cat(senders), torch.cat(receivers), pos.shape[0])
