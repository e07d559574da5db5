"""Neighbour search on point sets with torch_cluster's interface: ``radius``, ``knn``,
``radius_graph`` and ``knn_graph``, called as torch_cluster's are (same positional order,
same keywords, same output rows), with no compiled extension (neither torch_cluster nor
pyg-lib).

Output rows, as torch_cluster's:

* ``radius(x, y, r)`` and ``knn(x, y, k)``: ``[2, E]``, row 0 indexes ``y`` (the query,
  the centre), row 1 indexes ``x`` (its neighbour);
* ``radius_graph(x, r)`` and ``knn_graph(x, k)``: with ``flow="source_to_target"`` (the
  default) ``edge_index[0]`` is the neighbour (source) and ``edge_index[1]`` the centre
  (target), torch_geometric's convention; ``flow="target_to_source"`` swaps the two rows.

Edges are sorted by centre, then by neighbour index (torch_cluster leaves the order to the
implementation). Points are rows of any dimension (a 1-D tensor is a column of 1-D points);
"within ``r``" is torch_cluster's strict ``distance < r``.

Where torch_cluster's behaviour is implementation-defined, structnets says what it does:
``max_num_neighbors`` (default 32, as torch_cluster) keeps each centre's *nearest* ones
(ties, down to about 1e-12 of the largest squared distance ranked, to the lower index) and
reports what it dropped in a :class:`NeighborCapWarning` (torch_cluster keeps an
arbitrary subset, silently); ``max_num_neighbors=None`` keeps all. Distances exactly ``r``
are out; so are those within an ulp or two of float64 below it on the k-d tree, which
searches ``d <= r'`` for the largest ``r'`` with ``r'^2 < r^2``.

Backends (the keyword-only ``backend=``, structnets' own, a :class:`NeighborBackend`):

* ``"kdtree"``: scipy's ``cKDTree`` on CPU copies (a sliding-midpoint tree, faster to build
  than scipy's default balanced one), one tree per graph of the batch; the pairs of
  ``query_pairs`` (both directions) / ``sparse_distance_matrix`` are sorted as one array of
  64-bit keys ``centre << bits | neighbour`` by numpy's vectorised sort, then split straight
  into the returned ``edge_index``;
* ``"cells"``: a cell list written in torch (any device, the default off the CPU): points are
  binned into cubes of side ``r``, sorted by cell, and each query is compared only with the
  points of its own and the adjacent cells, found by binary search. Above 3 dimensions
  (3^dim adjacent cells) it compares all pairs of a graph in blocks instead, by a matrix
  product with the exact distance checked for the candidates.

``knn`` uses ``cKDTree.query`` (with ``workers=num_workers``) for CPU tensors and blocked
all-pairs distances elsewhere.

Periodic boxes (the keyword-only ``box=`` and ``periodic=``, structnets' own; torch_cluster
has none): distances are minimum-image distances, the shortest over the box's translates,
as in LagrangeBench's periodic datasets and molecular dynamics. ``box`` is ``[D]`` side
lengths (the box ``[0, L)``, scipy's ``boxsize``) or ``[D, 2]`` lower and upper bounds;
``periodic`` a ``[D]`` mask of the axes that wrap (default: all). Coordinates are wrapped
into the box first, so a particle that stepped out of a periodic side comes back in at the
other. A radius search needs ``r`` below half of every periodic side, where each pair has
one nearest image (a larger ``r`` is refused). The k-d tree is scipy's periodic
``cKDTree(boxsize=...)``; the cell list and the blocked search add ghost copies of the points
within ``r`` of a periodic face, shifted by one box length, and map them back, exact for the
same reason.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
import numbers
import warnings

import numpy as np
import torch
from torch import Tensor

__all__ = ["radius", "knn", "radius_graph", "knn_graph", "NeighborBackend", "NeighborCapWarning"]

_FLOWS = ("source_to_target", "target_to_source")


class NeighborBackend(enum.Enum):
    """How :func:`radius` and :func:`radius_graph` search: scipy's k-d tree (CPU), a torch
    cell list (any device), or the first for CPU tensors and the second otherwise (``AUTO``)."""

    AUTO = "auto"
    KDTREE = "kdtree"
    CELLS = "cells"


class NeighborCapWarning(UserWarning):
    """``max_num_neighbors`` dropped neighbours; the message says how many."""


# ----------------------------------------------------------------------------- checks


def _points(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a [num_points, dim] tensor, got {type(x).__name__}")
    if x.dim() == 1:
        x = x.view(-1, 1)
    if x.dim() != 2 or x.shape[1] < 1:
        raise ValueError(f"{name} must be a [num_points, dim] tensor (dim >= 1), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must hold floating-point coordinates, got {x.dtype}")
    x = x.detach()
    if not bool(torch.isfinite(x).all()):
        bad = ~torch.isfinite(x).all(1)
        rows = bad.nonzero().view(-1)[:10].tolist()
        raise ValueError(f"{name} has NaN or infinite coordinates at point(s) {rows}")
    return x


def _batch(batch: Tensor | None, n: int, name: str, device: torch.device) -> Tensor | None:
    if batch is None:
        return None
    if not isinstance(batch, Tensor) or batch.shape != (n,):
        shape = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
        raise ValueError(f"{name} must be [num_points] = [{n}], got {shape}")
    if batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer graph indices, got {batch.dtype}")
    if batch.device != device:
        raise ValueError(f"{name} is on {batch.device} but the points are on {device}")
    batch = batch.long()
    if n and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError(f"{name} must be sorted (points of one graph together, graphs in order)")
    if n and int(batch[0]) < 0:
        raise ValueError(f"{name} has negative graph indices")
    return batch


def _num_graphs(batches: list[Tensor | None], batch_size: int | None) -> int:
    largest = max((int(b[-1]) + 1 for b in batches if b is not None and b.numel()), default=1)
    if batch_size is None:
        return largest
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if largest > batch_size:
        raise ValueError(f"batch_size={batch_size} but the batch vector holds graph index {largest - 1}")
    return int(batch_size)


def _pair_inputs(
    x: Tensor, y: Tensor | None, batch_x: Tensor | None, batch_y: Tensor | None, batch_size: int | None
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, int]:
    """The checked points, batch vectors and number of graphs of a search of ``y``'s
    neighbours among ``x`` (``y`` None: of ``x`` among themselves, one batch vector)."""
    graph = y is None
    x = _points(x, "x")
    y = x if graph else _points(y, "y")
    if y.shape[1] != x.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    if y.device != x.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}")
    batch_x = _batch(batch_x, x.shape[0], "batch" if graph else "batch_x", x.device)
    batch_y = batch_x if graph else _batch(batch_y, y.shape[0], "batch_y", x.device)
    graphs = _num_graphs([batch_x, batch_y], batch_size)
    if graphs > 1 and (batch_x is None or batch_y is None):
        raise ValueError("batch_x and batch_y must both be given when there are several graphs")
    return x, y, batch_x, batch_y, graphs


def _pointers(batch: Tensor | None, n: int, graphs: int) -> list[int]:
    """Start of each graph's rows, plus the end: ``graphs + 1`` offsets."""
    if batch is None:
        return [0] + [n] * graphs
    bounds = torch.arange(graphs + 1, device=batch.device)
    return torch.searchsorted(batch, bounds).tolist()


def _radius_value(r) -> float:
    if isinstance(r, Tensor) and r.numel() == 1:
        r = r.item()
    if isinstance(r, bool) or not isinstance(r, numbers.Real) or not (math.isfinite(r) and r > 0):
        raise ValueError(f"r must be a positive finite number, got {r!r}")
    return float(r)


def _cap_value(max_num_neighbors) -> int | None:
    if max_num_neighbors is None:
        return None
    if isinstance(max_num_neighbors, bool) or not isinstance(max_num_neighbors, numbers.Integral):
        raise ValueError(f"max_num_neighbors must be an integer or None, got {max_num_neighbors!r}")
    if max_num_neighbors < 1:
        raise ValueError(f"max_num_neighbors must be at least 1 or None, got {max_num_neighbors}")
    return int(max_num_neighbors)


def _k_value(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be at least 1, got {k!r}")
    return int(k)


def _workers(num_workers) -> int:
    if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral):
        raise ValueError(f"num_workers must be an integer, got {num_workers!r}")
    if num_workers == 0 or num_workers < -1:
        raise ValueError(f"num_workers must be at least 1, or -1 for all cores, got {num_workers}")
    return int(num_workers)


def _backend(backend, device: torch.device) -> NeighborBackend:
    try:
        backend = NeighborBackend(backend)
    except ValueError:
        raise ValueError(f"backend must be one of {[b.value for b in NeighborBackend]}, got {backend!r}") from None
    if backend is NeighborBackend.AUTO:
        backend = NeighborBackend.KDTREE if device.type == "cpu" else NeighborBackend.CELLS
    return backend


def _compute_dtype(x: Tensor) -> torch.dtype:
    """Half and bfloat16 coordinates are searched in float32 (cells, brute force)."""
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _empty(device: torch.device) -> Tensor:
    return torch.zeros(2, 0, dtype=torch.long, device=device)


# ----------------------------------------------------------------------------- periodic boxes


def minimum_image(delta: Tensor, side: Tensor) -> Tensor:
    """Displacements ``[..., D]`` shifted to their nearest image in a box of sides ``side``
    ``[D]`` (0 on an axis that does not wrap)."""
    periodic = side > 0
    safe = torch.where(periodic, side, torch.ones_like(side))
    return torch.where(periodic, delta - side * torch.round(delta / safe), delta)


@dataclasses.dataclass(frozen=True)
class _Box:
    """A checked periodic box: ``low`` ``[D]`` and ``length`` ``[D]`` (0 on axes that do not wrap), float64."""

    low: np.ndarray
    length: np.ndarray

    @property
    def boxsize(self) -> np.ndarray:
        """scipy's ``boxsize``: the side on periodic axes, 0 (no wrapping) elsewhere."""
        return self.length

    def wrap(self, x: Tensor) -> Tensor:
        """``x - low``, wrapped into ``[0, length)`` on the periodic axes.

        float64 on the CPU (what the k-d tree searches in, and scipy's periodic tree refuses
        a coordinate equal to the side, which float32 rounding can make), the cell list's
        dtype elsewhere."""
        dtype = torch.float64 if x.device.type == "cpu" else _compute_dtype(x)
        u = x.to(dtype) - torch.as_tensor(self.low, dtype=dtype, device=x.device)
        length = torch.as_tensor(self.length, dtype=dtype, device=x.device)
        periodic = length > 0
        safe = torch.where(periodic, length, torch.ones_like(length))
        wrapped = u - torch.floor(u / safe) * safe
        # A point a rounding error below a face lands on the opposite face, not beyond it.
        wrapped = torch.where(wrapped >= safe, wrapped - safe, wrapped).clamp(min=0)
        return torch.where(periodic, wrapped, u)

    def minimum_image(self, diff):
        """Displacements (numpy or torch, ``[..., D]``) shifted to their nearest image."""
        if isinstance(diff, np.ndarray):
            length = self.length
            return np.where(length > 0, diff - length * np.round(diff / np.where(length > 0, length, 1.0)), diff)
        return minimum_image(diff, torch.as_tensor(self.length, dtype=diff.dtype, device=diff.device))

    def ghosts(self, x: Tensor, batch: Tensor, r: float) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` (wrapped) with copies of its points within ``r`` of a periodic face, shifted by
        one side across it; returns the points, each one's original index, and its batch.

        With ``r`` below half of every periodic side, a point has at most one image within
        ``r`` of any other, so a plain search over the extended set finds each minimum-image
        pair exactly once."""
        n, dim = x.shape
        length = torch.as_tensor(self.length, dtype=x.dtype, device=x.device)
        points, source, batches = [x], [torch.arange(n, device=x.device)], [batch]
        axes = [a for a in range(dim) if self.length[a] > 0]
        for offset in itertools.product((-1, 0, 1), repeat=len(axes)):
            if not any(offset):
                continue
            near = torch.ones(n, dtype=torch.bool, device=x.device)
            shift = torch.zeros(dim, dtype=x.dtype, device=x.device)
            for axis, o in zip(axes, offset):
                if o == 1:  # near the low face: its copy sits beyond the high face
                    near &= x[:, axis] < r
                elif o == -1:
                    near &= x[:, axis] >= length[axis] - r
                shift[axis] = o * length[axis]
            index = near.nonzero().view(-1)
            if index.numel():
                points.append(x[index] + shift)
                source.append(index)
                batches.append(batch[index])
        return torch.cat(points), torch.cat(source), torch.cat(batches)


def _box_value(box, periodic, dim: int, r: float | None) -> _Box | None:
    """The checked :class:`_Box` of the ``box=`` and ``periodic=`` arguments (None: no box)."""
    if box is None:
        if periodic is not None:
            raise ValueError("periodic= needs box= (the side lengths or bounds of the periodic box)")
        return None
    try:
        values = np.asarray(box.detach().cpu() if isinstance(box, Tensor) else box, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"box must be [dim] side lengths or [dim, 2] bounds of numbers, got {box!r}") from None
    if values.ndim == 0:
        values = np.full(dim, float(values))
    if values.shape == (dim,):
        low, high = np.zeros(dim), values
    elif values.shape == (dim, 2):
        low, high = values[:, 0], values[:, 1]
    else:
        raise ValueError(
            f"box must be [{dim}] side lengths or [{dim}, 2] bounds for {dim}-D points, got shape {values.shape}"
        )
    if not (np.isfinite(low).all() and np.isfinite(high).all() and (high > low).all()):
        raise ValueError(f"box must have finite sides with low < high on every axis, got {values.tolist()}")
    if periodic is None:
        mask = np.ones(dim, dtype=bool)
    else:
        mask = np.asarray(periodic.cpu() if isinstance(periodic, Tensor) else periodic)
        if mask.shape != (dim,) or mask.dtype != bool:
            raise ValueError(f"periodic must be {dim} booleans (one per axis), got {periodic!r}")
    length = np.where(mask, high - low, 0.0)
    if r is not None:
        too_small = mask & (r >= (high - low) / 2)
        if too_small.any():
            axis = int(np.argmax(too_small))
            raise ValueError(
                f"r={r} is not below half the periodic side on axis {axis} ({high[axis] - low[axis]:g}): "
                "a pair would have several nearest images"
            )
    return _Box(low=low, length=length)


# ----------------------------------------------------------------------------- sorting and the cap


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def _decode(keys: np.ndarray | Tensor, bits: int, centre_row: int, device: torch.device) -> Tensor:
    """The ``[2, E]`` edges from sorted keys ``centre << bits | neighbour``, the centre in row
    ``centre_row`` (numpy keys: written straight into the array that is returned)."""
    if isinstance(keys, np.ndarray):
        out = np.empty((2, keys.size), dtype=np.int64)
        np.right_shift(keys, bits, out=out[centre_row])
        np.bitwise_and(keys, (1 << bits) - 1, out=out[1 - centre_row])
        return torch.from_numpy(out).to(device)
    rows = [keys >> bits, keys & ((1 << bits) - 1)]
    return torch.stack(rows if centre_row == 0 else rows[::-1])


def _sorted_keys(centre: Tensor, neighbour: Tensor, bits: int) -> np.ndarray | Tensor:
    """Sorted keys ``centre << bits | neighbour``: numpy on CPU (its sort is several times faster), else torch."""
    keys = (centre << bits) | neighbour
    if keys.device.type == "cpu":
        keys = keys.numpy()
        keys.sort()
        return keys
    return torch.sort(keys).values


class _Numpy:
    """The array operations of :func:`_cap` in numpy (CPU: several times faster than torch's
    single-threaded ``repeat_interleave``, stable sort and gathers at these sizes)."""

    arange = staticmethod(np.arange)
    cumsum = staticmethod(np.cumsum)
    flatnonzero = staticmethod(np.flatnonzero)
    searchsorted = staticmethod(np.searchsorted)
    repeat = staticmethod(lambda a, counts: np.repeat(a, counts, axis=0))
    stable_argsort = staticmethod(lambda a: np.argsort(a, kind="stable"))
    take = staticmethod(lambda a, index: np.take(a, index, axis=0))
    ones = staticmethod(lambda n: np.ones(n, dtype=bool))
    to_int = staticmethod(lambda a: a.astype(np.int64))
    double = staticmethod(lambda a: a)  # float64 already
    host = staticmethod(lambda a: a)

    @staticmethod
    def compact(keys: np.ndarray, keep: np.ndarray, chunk: int) -> np.ndarray:
        """``keys[keep]`` in place, a cache-sized piece at a time (no second array of all the keys)."""
        done = 0
        for start in range(0, keys.size, chunk):
            piece = keys[start : start + chunk][keep[start : start + chunk]]
            keys[done : done + piece.size] = piece
            done += piece.size
        return keys[:done]


class _Torch:
    """The same in torch, for other devices."""

    def __init__(self, device: torch.device):
        self.device = device

    def arange(self, n):
        return torch.arange(n, device=self.device)

    def ones(self, n):
        return torch.ones(n, dtype=torch.bool, device=self.device)

    cumsum = staticmethod(lambda a: torch.cumsum(a, 0))
    flatnonzero = staticmethod(lambda a: a.nonzero().view(-1))
    searchsorted = staticmethod(torch.searchsorted)
    repeat = staticmethod(lambda a, counts: torch.repeat_interleave(a, counts, dim=0))
    stable_argsort = staticmethod(lambda a: torch.argsort(a, stable=True))
    take = staticmethod(lambda a, index: a.index_select(0, index))
    to_int = staticmethod(lambda a: a.long())
    double = staticmethod(lambda a: a.double())  # so that 2**52 - 1 is exact below
    host = staticmethod(lambda a: a.cpu().numpy())
    compact = staticmethod(lambda keys, keep, chunk: keys[keep])


def _cap(
    keys: np.ndarray | Tensor,
    bits: int,
    x: Tensor,
    y: Tensor,
    cap: int | None,
    chunk: int | None = None,
    box: _Box | None = None,
) -> tuple[np.ndarray | Tensor, tuple[int, int, int] | None]:
    """Keeps each centre's ``cap`` nearest neighbours, ties to the lower index.

    ``keys`` are the sorted ``centre << bits | neighbour`` (centres index ``y``, neighbours
    ``x``), numpy (the CPU) or torch; distances are minimum-image ones in a periodic ``box``. Only the pairs of crowded centres are ranked, a block
    of centres at a time (about ``chunk`` pairs: small on CPU, so that the temporaries stay
    in cache rather than being fresh memory each time): their squared distances (float64
    on CPU), scaled to integers of up to 52 bits below the block's centre bits, in one
    stable sort of ``centre << bits | distance``. Returns the kept keys, still sorted, and,
    if any were dropped, (dropped, total, crowded centres) for the warning.
    """
    if cap is None or keys.shape[0] == 0:
        return keys, None
    cpu = isinstance(keys, np.ndarray)
    xp = _Numpy if cpu else _Torch(keys.device)
    chunk = chunk or (1 << 18 if cpu else 1 << 24)
    total_pairs = keys.shape[0]
    bounds = xp.searchsorted(keys, xp.arange(y.shape[0] + 1) << bits)  # each centre's first pair
    counts = bounds[1:] - bounds[:-1]
    over = xp.flatnonzero(counts > cap)
    if over.shape[0] == 0:
        return keys, None
    if cpu:
        x, y = _numpy(x), _numpy(y)
    else:
        x, y = x.to(_compute_dtype(x)), y.to(_compute_dtype(x))
    group = counts[over]
    ends = xp.host(xp.cumsum(group))
    blocks = sorted({0, *np.searchsorted(ends, np.arange(chunk, int(ends[-1]), chunk)).tolist(), over.shape[0]})
    keep = xp.ones(total_pairs)
    mask = (1 << bits) - 1
    for lo, hi in itertools.pairwise(blocks):
        g = group[lo:hi]
        first = xp.cumsum(g) - g  # each centre's start within the block
        total = int(first[-1] + g[-1])
        local = xp.repeat(xp.arange(hi - lo), g)
        pair = xp.arange(total) + xp.repeat(bounds[over[lo:hi]] - first, g)
        diff = xp.take(x, keys[pair] & mask) - xp.repeat(xp.take(y, over[lo:hi]), g)
        if box is not None:
            diff = box.minimum_image(diff)
        distance = xp.double((diff * diff).sum(1))
        shift = min(52, 62 - _bits(hi - lo))
        top = float(distance.max())
        scale = (2**shift - 1) / top if top > 0 else 0.0
        quantised = xp.to_int((distance * scale).clip(0, 2**shift - 1))
        order = xp.stable_argsort((local << shift) | quantised)  # by centre, distance, then index
        rank = xp.arange(total) - first[local[order]]
        keep[pair[order[rank >= cap]]] = False
    keys = xp.compact(keys, keep, chunk)
    return keys, (total_pairs - keys.shape[0], total_pairs, int(over.shape[0]))


def _warn_cap(dropped: tuple[int, int, int] | None, cap: int | None) -> None:
    if dropped is not None:
        warnings.warn(
            f"max_num_neighbors={cap} dropped {dropped[0]} of {dropped[1]} neighbour pairs at {dropped[2]} points "
            "(each kept its nearest; max_num_neighbors=None keeps all)",
            NeighborCapWarning,
            stacklevel=3,
        )


# ----------------------------------------------------------------------------- k-d tree (scipy)


def _numpy(x: Tensor) -> np.ndarray:
    """float64 numpy coordinates (converted by numpy where it can: one thread, whatever torch's)."""
    x = x.cpu()
    if x.dtype in (torch.float16, torch.float32, torch.float64):
        return np.ascontiguousarray(x.numpy(), dtype=np.float64)
    return np.ascontiguousarray(x.to(torch.float64).numpy())


def _below(r: float) -> float:
    """The largest double ``s`` with ``s * s < r * r``: scipy's ``d**2 <= s**2`` is then ``d**2 < r**2``
    (up to an ulp or two of ``r**2``, computed in float64)."""
    square, s = r * r, math.nextafter(r, 0.0)
    for _ in range(8):
        if s * s < square:
            break
        s = math.nextafter(s, 0.0)
    return s


def _tree(points: np.ndarray, boxsize: np.ndarray | None = None):
    from scipy.spatial import cKDTree

    return cKDTree(points, balanced_tree=False, compact_nodes=False, boxsize=boxsize)


def _radius_graph_kdtree(
    x: Tensor, r: float, ptr: list[int], loop: bool, boxsize: np.ndarray | None = None
) -> np.ndarray:
    points = _numpy(x)
    n = points.shape[0]
    bits, radius_below = _bits(n), _below(r)
    keys = []
    for start, end in itertools.pairwise(ptr):
        if end - start == 0:
            continue
        pairs = _tree(points[start:end], boxsize).query_pairs(radius_below, output_type="ndarray")
        count = pairs.shape[0]
        pairs = pairs.astype(np.int64, copy=False)  # scipy's intp; no copy on 64-bit platforms
        if start:
            pairs += start
        a, b = pairs[:, 0], pairs[:, 1]
        both = np.empty(2 * count + (end - start if loop else 0), dtype=np.int64)
        np.left_shift(b, bits, out=both[:count])
        both[:count] |= a
        np.left_shift(a, bits, out=both[count : 2 * count])
        both[count : 2 * count] |= b
        if loop:
            own = np.arange(start, end, dtype=np.int64)
            both[2 * count :] = (own << bits) | own
        keys.append(both)
    if not keys:
        return np.zeros(0, dtype=np.int64)
    keys = np.concatenate(keys) if len(keys) > 1 else keys[0]
    keys.sort()
    return keys


def _radius_kdtree(
    x: Tensor, y: Tensor, r: float, ptr_x: list[int], ptr_y: list[int], boxsize: np.ndarray | None = None
) -> np.ndarray:
    points_x, points_y = _numpy(x), _numpy(y)
    bits, radius_below = _bits(points_x.shape[0]), _below(r)
    keys = []
    for (xs, xe), (ys, ye) in zip(itertools.pairwise(ptr_x), itertools.pairwise(ptr_y)):
        if xe == xs or ye == ys:
            continue
        found = _tree(points_y[ys:ye], boxsize).sparse_distance_matrix(
            _tree(points_x[xs:xe], boxsize), radius_below, output_type="ndarray"
        )
        keys.append(((found["i"].astype(np.int64) + ys) << bits) | (found["j"].astype(np.int64) + xs))
    if not keys:
        return np.zeros(0, dtype=np.int64)
    keys = np.concatenate(keys)
    keys.sort()
    return keys


# ----------------------------------------------------------------------------- cell list and brute force (torch)


def _radius_cells(
    x: Tensor,
    y: Tensor,
    r: float,
    batch_x: Tensor,
    batch_y: Tensor,
    graphs: int,
    exclude_self: bool,
    chunk: int = 1 << 24,
) -> tuple[Tensor, Tensor]:
    """Unsorted (centre in y, neighbour in x) pairs with ``|x_j - y_i| < r``, dim 1-3."""
    n, dim = x.shape
    device = x.device
    dtype = _compute_dtype(x)
    x, y = x.to(dtype), y.to(dtype)
    origin = torch.minimum(x.min(0).values, y.min(0).values)
    cell_x = torch.floor((x - origin) / r).long() + 1  # >= 1: room for the -1 offset
    cell_y = torch.floor((y - origin) / r).long() + 1
    extent = torch.maximum(cell_x.max(0).values, cell_y.max(0).values) + 2
    strides = [1]
    for size in extent.tolist()[:-1]:
        strides.append(strides[-1] * size)
    stride = torch.tensor(strides, device=device)
    per_graph = int(math.prod(extent.tolist()))
    if per_graph * graphs >= 2**62:
        raise ValueError(
            f"r={r} is too small for the extent of the points for the cell list ({per_graph} cells a graph); "
            "use backend='kdtree'"
        )
    key_x = batch_x * per_graph + (cell_x * stride).sum(1)
    key_y = batch_y * per_graph + (cell_y * stride).sum(1)
    sorted_key, order = torch.sort(key_x)
    # Occupied cells of x (first sorted position and count), and the distinct cells of the
    # queries: the binary searches run once per distinct cell, on sorted targets.
    cells_x, count_x = torch.unique_consecutive(sorted_key, return_counts=True)
    first_x = torch.cumsum(count_x, 0) - count_x
    cells_y, cell_of_query = torch.unique(key_y, return_inverse=True)
    m = y.shape[0]
    queries = torch.argsort(cell_of_query)  # queries in cell order: neighbouring memory for neighbouring work
    cell_of_query = cell_of_query[queries]
    r2 = r * r
    centres, neighbours = [], []
    for offset in itertools.product((-1, 0, 1), repeat=dim):
        shift = int((torch.tensor(offset, device=device) * stride).sum())
        target = cells_y + shift
        at = torch.searchsorted(cells_x, target).clamp_(max=cells_x.numel() - 1)
        found = cells_x[at] == target
        lo = torch.where(found, first_x[at], 0)[cell_of_query]
        counts = torch.where(found, count_x[at], 0)[cell_of_query]
        bounds = torch.cumsum(counts, 0)
        if int(bounds[-1]) == 0:
            continue
        start = 0
        while start < m:  # as many queries as fit in one chunk of candidates
            base = int(bounds[start - 1]) if start else 0
            limit = int(torch.searchsorted(bounds, torch.tensor([base + chunk], device=device), side="right")[0])
            end = max(start + 1, min(m, limit))
            c = counts[start:end]
            i = torch.repeat_interleave(queries[start:end], c)
            first = torch.cumsum(c, 0) - c
            k = torch.arange(int(c.sum()), device=device) - torch.repeat_interleave(first, c)
            j = order[torch.repeat_interleave(lo[start:end], c) + k]
            close = ((y[i] - x[j]) ** 2).sum(1) < r2
            if exclude_self:
                close &= i != j
            centres.append(i[close])
            neighbours.append(j[close])
            start = end
    if not centres:
        return torch.zeros(0, dtype=torch.long, device=device), torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat(centres), torch.cat(neighbours)


def _blocks(x: Tensor, y: Tensor, ptr_x: list[int], ptr_y: list[int], chunk: int):
    """Per graph and block of queries: (query offset, neighbour offset, approximate squared
    distances [queries, neighbours] by a matrix product, their rounding bound)."""
    for (xs, xe), (ys, ye) in zip(itertools.pairwise(ptr_x), itertools.pairwise(ptr_y)):
        if xe == xs or ye == ys:
            continue
        xg, yg = x[xs:xe], y[ys:ye]
        origin = xg.mean(0)
        xc, yc = xg - origin, yg - origin
        norm_x = (xc * xc).sum(1)
        scale = float(torch.maximum(xg.abs().max(), yg.abs().max())) ** 2 * x.shape[1]
        eps = torch.finfo(x.dtype).eps
        step = max(1, chunk // (xe - xs))
        for q in range(0, ye - ys, step):
            block = yc[q : q + step]
            norm_y = (block * block).sum(1)
            approx = norm_y[:, None] + norm_x[None, :] - 2 * block @ xc.T
            slack = 32 * (x.shape[1] + 4) * eps * (norm_y[:, None] + norm_x[None, :] + scale)
            yield ys + q, xs, approx, slack


def _radius_brute(
    x: Tensor, y: Tensor, r: float, ptr_x: list[int], ptr_y: list[int], exclude_self: bool, chunk: int = 1 << 22
) -> tuple[Tensor, Tensor]:
    """Unsorted (centre, neighbour) pairs within ``r``, any dimension and device: candidates from
    a matrix product (with a bound on its rounding), the exact distance checked for each."""
    dtype = _compute_dtype(x)
    x, y = x.to(dtype), y.to(dtype)
    r2 = r * r
    centres, neighbours = [], []
    for y0, x0, approx, slack in _blocks(x, y, ptr_x, ptr_y, chunk):
        i, j = (approx <= r2 * (1 + 1e-3) + slack).nonzero(as_tuple=True)
        i, j = i + y0, j + x0
        close = ((y[i] - x[j]) ** 2).sum(1) < r2
        if exclude_self:
            close &= i != j
        centres.append(i[close])
        neighbours.append(j[close])
    if not centres:
        return torch.zeros(0, dtype=torch.long, device=x.device), torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat(centres), torch.cat(neighbours)


# ----------------------------------------------------------------------------- radius


def _radius(
    x: Tensor,
    y: Tensor | None,
    r,
    batch_x: Tensor | None,
    batch_y: Tensor | None,
    max_num_neighbors,
    num_workers,
    batch_size,
    backend,
    loop: bool,
    centre_row: int,
    box=None,
    periodic=None,
) -> tuple[Tensor, tuple[int, int, int] | None, int | None]:
    """``[2, E]`` pairs sorted by centre then neighbour, the centre in row ``centre_row``, for
    ``radius`` (``y`` given) or ``radius_graph`` (``y`` None); what the cap dropped; the cap."""
    graph = y is None
    x, y, batch_x, batch_y, graphs = _pair_inputs(x, y, batch_x, batch_y, batch_size)
    r = _radius_value(r)
    cap = _cap_value(max_num_neighbors)
    _workers(num_workers)
    backend = _backend(backend, x.device)
    periodic_box = _box_value(box, periodic, x.shape[1], r)
    if x.shape[0] == 0 or y.shape[0] == 0:
        return _empty(x.device), None, cap
    if periodic_box is not None:
        x = periodic_box.wrap(x)
        y = x if graph else periodic_box.wrap(y)
    ptr_x = _pointers(batch_x, x.shape[0], graphs)
    ptr_y = ptr_x if graph else _pointers(batch_y, y.shape[0], graphs)
    bits = _bits(x.shape[0])
    if backend is NeighborBackend.KDTREE:
        boxsize = None if periodic_box is None else periodic_box.boxsize
        if graph:
            keys = _radius_graph_kdtree(x, r, ptr_x, loop, boxsize)
        else:
            keys = _radius_kdtree(x, y, r, ptr_x, ptr_y, boxsize)
    else:
        bx = torch.zeros(x.shape[0], dtype=torch.long, device=x.device) if batch_x is None else batch_x
        if graph:
            by = bx
        else:
            by = torch.zeros(y.shape[0], dtype=torch.long, device=x.device) if batch_y is None else batch_y
        searched, source = x, None
        if periodic_box is not None:
            searched, source, bx = periodic_box.ghosts(x, bx, r)
            order = torch.argsort(bx, stable=True)  # the blocked search wants each graph's rows together
            searched, source, bx = searched[order], source[order], bx[order]
            ptr_x = _pointers(bx, searched.shape[0], graphs)
        if x.shape[1] <= 3:
            centre, neighbour = _radius_cells(searched, y, r, bx, by, graphs, False)
        else:
            centre, neighbour = _radius_brute(searched, y, r, ptr_x, ptr_y, False)
        if source is not None:
            neighbour = source[neighbour]  # a ghost is its original
        if graph and not loop:
            keep = centre != neighbour  # a point's ghosts lie a box side away, beyond r
            centre, neighbour = centre[keep], neighbour[keep]
        keys = _sorted_keys(centre, neighbour, bits)
    keys, dropped = _cap(keys, bits, x, y, cap, box=periodic_box)
    return _decode(keys, bits, centre_row, x.device), dropped, cap


def radius(
    x: Tensor,
    y: Tensor,
    r: float,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    max_num_neighbors: int | None = 32,
    num_workers: int = 1,
    batch_size: int | None = None,
    *,
    backend: NeighborBackend | str = NeighborBackend.AUTO,
    box=None,
    periodic=None,
) -> Tensor:
    """For each point of ``y``, the points of ``x`` of the same graph closer than ``r``
    (torch_cluster's ``radius``).

    Args:
        x: ``[N, dim]`` the points searched (a 1-D tensor is ``[N, 1]``); any dimension,
            float16/bfloat16/float32/float64 (integer coordinates are refused).
        y: ``[M, dim]`` the query points (centres).
        r: the radius: pairs at distance ``d < r`` (strictly, as torch_cluster), ``d``
            computed in float64 by the k-d tree, in the points' dtype (at least float32)
            by the cell list.
        batch_x, batch_y: ``[N]`` / ``[M]`` sorted graph index of each point; pairs never
            cross graphs. Both are needed when there are several graphs.
        max_num_neighbors: at most this many neighbours per query point: its nearest ones,
            ties to the lower index, the number dropped reported with a
            :class:`NeighborCapWarning` (torch_cluster keeps an unspecified subset,
            silently). ``None`` keeps all of them.
        num_workers: accepted for torch_cluster compatibility; scipy's pair searches are
            single-threaded, so it changes nothing here (it must be >= 1 or -1).
        batch_size: the number of graphs; inferred from the batch vectors when ``None``.
        backend: structnets' own, keyword-only: a :class:`NeighborBackend` (or its value).
        box: structnets' own, keyword-only: a periodic box, ``[dim]`` side lengths (the
            box ``[0, L)``) or ``[dim, 2]`` bounds; distances are then minimum-image ones,
            coordinates are wrapped into the box first, and ``r`` must be below half of
            every periodic side. None (default): no box.
        periodic: keyword-only, with ``box``: ``[dim]`` booleans, the axes that wrap
            (default: all of them).

    Returns:
        ``[2, E]`` long: row 0 indexes ``y`` (the centre), row 1 ``x`` (the neighbour),
        sorted by row 0 then row 1.

    Raises:
        ValueError: bad shapes or devices, NaN or infinite coordinates (their rows named),
            a non-positive radius, an unsorted batch, a batch index beyond ``batch_size``.
        TypeError: integer coordinates.
    """
    edges, dropped, cap = _radius(
        x, y, r, batch_x, batch_y, max_num_neighbors, num_workers, batch_size, backend, loop=False, centre_row=0,
        box=box, periodic=periodic,
    )  # fmt: skip
    _warn_cap(dropped, cap)
    return edges


def radius_graph(
    x: Tensor,
    r: float,
    batch: Tensor | None = None,
    loop: bool = False,
    max_num_neighbors: int | None = 32,
    flow: str = "source_to_target",
    num_workers: int = 1,
    batch_size: int | None = None,
    *,
    backend: NeighborBackend | str = NeighborBackend.AUTO,
    box=None,
    periodic=None,
) -> Tensor:
    """All ordered pairs of points of the same graph closer than ``r`` (torch_cluster's
    ``radius_graph``): every pair comes in both directions.

    Args:
        x: ``[N, dim]`` coordinates (a 1-D tensor is ``[N, 1]``); any dimension,
            float16/bfloat16/float32/float64.
        r: the radius: pairs at distance ``d < r`` (strictly, as torch_cluster).
        batch: ``[N]`` sorted graph index of each point; pairs never cross graphs.
        loop: include each point as its own neighbour (it then counts towards the cap).
        max_num_neighbors: at most this many neighbours per centre (default 32, as
            torch_cluster): its nearest ones, ties to the lower index, the number dropped
            reported with a :class:`NeighborCapWarning`. ``None`` keeps all of them (what
            structnets' own callers pass). A point's neighbours never include itself
            unless ``loop``; duplicates of it (distance 0) are neighbours.
        flow: ``"source_to_target"``: ``edge_index[0]`` the neighbour (source), ``[1]``
            the centre (target); ``"target_to_source"``: the rows swapped.
        num_workers: accepted for torch_cluster compatibility (scipy's ``query_pairs`` is
            single-threaded); must be >= 1 or -1.
        batch_size: the number of graphs; inferred from ``batch`` when ``None``.
        backend: structnets' own, keyword-only: a :class:`NeighborBackend` (or its value:
            ``"kdtree"``, ``"cells"``, ``"auto"``).
        box: structnets' own, keyword-only: a periodic box, ``[dim]`` side lengths (the
            box ``[0, L)``) or ``[dim, 2]`` bounds; distances are then minimum-image ones,
            coordinates are wrapped into the box first, and ``r`` must be below half of
            every periodic side. None (default): no box.
        periodic: keyword-only, with ``box``: ``[dim]`` booleans, the axes that wrap
            (default: all of them).

    Returns:
        ``edge_index`` ``[2, E]`` long, sorted by centre, then neighbour.

    Raises:
        ValueError: a bad shape, NaN or infinite coordinates (their rows named), a
            non-positive radius, an unsorted batch, an unknown backend or flow, a malformed
            box or a radius not below half of a periodic side.
        TypeError: integer coordinates.
    """
    if flow not in _FLOWS:
        raise ValueError(f"flow must be one of {list(_FLOWS)}, got {flow!r}")
    centre_row = 1 if flow == "source_to_target" else 0
    edges, dropped, cap = _radius(
        x, None, r, batch, None, max_num_neighbors, num_workers, batch_size, backend, bool(loop), centre_row,
        box=box, periodic=periodic,
    )  # fmt: skip
    _warn_cap(dropped, cap)
    return edges


# ----------------------------------------------------------------------------- knn


def _unit(x: Tensor, name: str) -> Tensor:
    norm = x.to(_compute_dtype(x) if x.device.type != "cpu" else torch.float64).norm(dim=1, keepdim=True)
    zero = (norm == 0).view(-1)
    if bool(zero.any()):
        rows = zero.nonzero().view(-1)[:10].tolist()
        raise ValueError(f"cosine distance is undefined for zero vectors: {name} rows {rows}")
    return x.to(norm.dtype) / norm


def _knn_rows_kdtree(
    x: np.ndarray, y: np.ndarray, want: int, workers: int, boxsize: np.ndarray | None = None
) -> np.ndarray:
    from scipy.spatial import cKDTree

    _, index = cKDTree(x, boxsize=boxsize).query(y, k=want, workers=workers)
    return np.asarray(index, dtype=np.int64).reshape(y.shape[0], want)


def _knn_rows_brute(x: Tensor, y: Tensor, want: int, exclude_self: bool, chunk: int = 1 << 22) -> Tensor:
    """[M, want] indices of the nearest points of ``x`` for each row of ``y``, by blocks of a matrix product."""
    rows = []
    for y0, _, approx, _ in _blocks(x, y, [0, x.shape[0]], [0, y.shape[0]], chunk):
        if exclude_self:
            own = torch.arange(y0, y0 + approx.shape[0], device=x.device)
            approx[torch.arange(approx.shape[0], device=x.device), own] = float("inf")
        rows.append(approx.topk(want, dim=1, largest=False).indices)
    return torch.cat(rows)


def _knn_rows_periodic(x: Tensor, y: Tensor, want: int, exclude_self: bool, box: _Box, chunk: int = 1 << 22) -> Tensor:
    """The same with minimum-image distances, computed exactly per block (no matrix-product shortcut)."""
    rows = []
    step = max(1, chunk // max(1, x.shape[0] * x.shape[1]))
    for q in range(0, y.shape[0], step):
        d2 = (box.minimum_image(y[q : q + step, None] - x[None]) ** 2).sum(-1)
        if exclude_self:
            own = torch.arange(q, q + d2.shape[0], device=x.device)
            d2[torch.arange(d2.shape[0], device=x.device), own] = float("inf")
        rows.append(d2.topk(want, dim=1, largest=False).indices)
    return torch.cat(rows)


def _knn(
    x: Tensor,
    y: Tensor | None,
    k,
    batch_x: Tensor | None,
    batch_y: Tensor | None,
    cosine: bool,
    num_workers,
    batch_size,
    loop: bool,
    box=None,
    periodic=None,
) -> tuple[Tensor, Tensor]:
    graph = y is None
    x, y, batch_x, batch_y, graphs = _pair_inputs(x, y, batch_x, batch_y, batch_size)
    k = _k_value(k)
    workers = _workers(num_workers)
    periodic_box = _box_value(box, periodic, x.shape[1], None)
    if periodic_box is not None and cosine:
        raise ValueError("cosine=True ranks directions, which have no periodic box: pass one of cosine or box")
    empty = torch.zeros(0, dtype=torch.long, device=x.device)
    if x.shape[0] == 0 or y.shape[0] == 0:
        return empty, empty
    if periodic_box is not None:
        x = periodic_box.wrap(x)
        y = x if graph else periodic_box.wrap(y)
    if cosine:
        x = _unit(x, "x")
        y = x if graph else _unit(y, "y")
    ptr_x = _pointers(batch_x, x.shape[0], graphs)
    ptr_y = ptr_x if graph else _pointers(batch_y, y.shape[0], graphs)
    exclude_self = graph and not loop
    on_cpu = x.device.type == "cpu"
    if on_cpu:
        points_x = _numpy(x)
        points_y = points_x if graph else _numpy(y)
    else:
        dtype = _compute_dtype(x)
        x, y = x.to(dtype), y.to(dtype)
    centres, neighbours = [], []
    for (xs, xe), (ys, ye) in zip(itertools.pairwise(ptr_x), itertools.pairwise(ptr_y)):
        n, m = xe - xs, ye - ys
        if n == 0 or m == 0:
            continue
        keep = min(k, n - 1) if exclude_self else min(k, n)
        if keep == 0:
            continue
        if on_cpu:
            want = min(keep + 1, n) if exclude_self else keep
            boxsize = None if periodic_box is None else periodic_box.boxsize
            index = _knn_rows_kdtree(points_x[xs:xe], points_y[ys:ye], want, workers, boxsize)
            if exclude_self:
                # Drop the point itself; where duplicates pushed it out, drop the farthest instead.
                kept = index != np.arange(m)[:, None]
                surplus = kept.sum(1) > keep
                kept[surplus, -1] = False
                index = index[kept].reshape(m, keep)
            index = torch.from_numpy(np.sort(index, axis=1)).to(x.device)
        elif periodic_box is not None:
            index = _knn_rows_periodic(x[xs:xe], y[ys:ye], keep, exclude_self, periodic_box).sort(dim=1).values
        else:
            index = _knn_rows_brute(x[xs:xe], y[ys:ye], keep, exclude_self).sort(dim=1).values
        centres.append(torch.arange(ys, ye, device=x.device).repeat_interleave(keep))
        neighbours.append(index.reshape(-1) + xs)
    if not centres:
        return empty, empty
    return torch.cat(centres), torch.cat(neighbours)


def knn(
    x: Tensor,
    y: Tensor,
    k: int,
    batch_x: Tensor | None = None,
    batch_y: Tensor | None = None,
    cosine: bool = False,
    num_workers: int = 1,
    batch_size: int | None = None,
    *,
    box=None,
    periodic=None,
) -> Tensor:
    """For each point of ``y``, its ``k`` nearest points of ``x`` in the same graph
    (torch_cluster's ``knn``).

    A graph with fewer than ``k`` points of ``x`` gives each query all of them. Which of
    equally distant points are kept is unspecified (as in torch_cluster). CPU tensors use
    scipy's ``cKDTree.query`` with ``workers=num_workers`` (``-1``: all cores); other
    devices compare each graph's points in blocks (quadratic in the points of one graph).

    Args:
        x: ``[N, dim]`` the points searched, any dimension, floating point.
        y: ``[M, dim]`` the queries.
        k: the number of neighbours.
        batch_x, batch_y: sorted graph index of each point; both needed for several graphs.
        cosine: rank by cosine distance, ``1 - x.y / (|x| |y|)``, instead of the Euclidean
            distance (zero vectors are refused: their cosine is undefined). Supported on
            every device, unlike torch_cluster (GPU only).
        num_workers: scipy's ``workers`` for the CPU search.
        batch_size: the number of graphs; inferred when ``None``.
        box: structnets' own, keyword-only: a periodic box (``[dim]`` side lengths or
            ``[dim, 2]`` bounds): rank by minimum-image distance, coordinates wrapped into
            the box first. Not with ``cosine``.
        periodic: keyword-only, with ``box``: ``[dim]`` booleans, the axes that wrap (default: all).

    Returns:
        ``[2, E]`` long: row 0 indexes ``y``, row 1 ``x``, sorted by row 0 then row 1.
    """
    centre, neighbour = _knn(
        x, y, k, batch_x, batch_y, bool(cosine), num_workers, batch_size, loop=True, box=box, periodic=periodic
    )
    return torch.stack([centre, neighbour])


def knn_graph(
    x: Tensor,
    k: int,
    batch: Tensor | None = None,
    loop: bool = False,
    flow: str = "source_to_target",
    cosine: bool = False,
    num_workers: int = 1,
    batch_size: int | None = None,
    *,
    box=None,
    periodic=None,
) -> Tensor:
    """Each point's ``k`` nearest points of the same graph (torch_cluster's ``knn_graph``).

    Without ``loop`` the point itself is never its own neighbour, even among duplicates:
    each point gets exactly ``min(k, points in its graph - 1)`` neighbours (torch_cluster
    can give ``k + 1`` where duplicates hide the point itself). A graph with fewer than
    ``k`` other points links each point to all of them, without a warning, as
    torch_cluster's ``knn_graph`` does; count a graph's edges per node if a fixed ``k``
    matters. Not symmetric. Which of equally distant points are kept is unspecified.

    Args:
        x: ``[N, dim]`` coordinates, any dimension, floating point.
        k: the number of neighbours.
        batch: ``[N]`` sorted graph index of each point.
        loop: count each point as one of its own ``k`` neighbours.
        flow: ``"source_to_target"``: row 0 the neighbour, row 1 the centre;
            ``"target_to_source"``: swapped.
        cosine: rank by cosine distance (see :func:`knn`).
        num_workers: scipy's ``workers`` for the CPU search.
        batch_size: the number of graphs; inferred when ``None``.
        box: structnets' own, keyword-only: a periodic box (``[dim]`` side lengths or
            ``[dim, 2]`` bounds): rank by minimum-image distance, coordinates wrapped into
            the box first. Not with ``cosine``.
        periodic: keyword-only, with ``box``: ``[dim]`` booleans, the axes that wrap (default: all).

    Returns:
        ``edge_index`` ``[2, N * k]`` (fewer for small graphs) long, sorted by centre then neighbour.
    """
    if flow not in _FLOWS:
        raise ValueError(f"flow must be one of {list(_FLOWS)}, got {flow!r}")
    centre, neighbour = _knn(
        x, None, k, batch, None, bool(cosine), num_workers, batch_size, loop=bool(loop), box=box, periodic=periodic
    )
    rows = [neighbour, centre] if flow == "source_to_target" else [centre, neighbour]
    return torch.stack(rows)
