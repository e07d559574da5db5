"""Neighbour search with torch_cluster's interface.

The ``test_tc_*`` tests pin, in our own words, what torch_cluster's test_radius.py and
test_knn.py pin: the square-corner examples (with batches, a skipped graph index, caps,
both flows), degree 1 under ``max_num_neighbors=1`` (duplicates and batches included), and
1,000 random points against scipy's ``cKDTree``, over float16/bfloat16/float32/float64.
"""

import itertools
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

import structnets as sn
from structnets.graphs.neighbors import (
    NeighborBackend,
    NeighborCapWarning,
    _knn_rows_brute,
    _radius_brute,
    _radius_cells,
    knn,
    knn_graph,
    radius,
    radius_graph,
)

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
BACKENDS = ["kdtree", "cells"]

CORNERS = [[-1, -1], [-1, 1], [1, 1], [1, -1]]


def pairs(edge_index):
    return {tuple(p) for p in edge_index.t().tolist()}


def degrees(edge_index, row=1):
    return torch.unique(edge_index[row], return_counts=True)[1].tolist()


def brute_radius(x, y, r, batch_x, batch_y, exclude_self):
    """(centre in y, neighbour in x) with squared distance < r^2, in float64, sorted."""
    d2 = ((y.double()[:, None] - x.double()[None]) ** 2).sum(-1)
    ok = (d2 < r * r) & (batch_y[:, None] == batch_x[None])
    if exclude_self:
        ok.fill_diagonal_(False)
    centre, neighbour = ok.nonzero(as_tuple=True)
    return torch.stack([centre, neighbour])


# ----------------------------------------------------------------------------- torch_cluster's cases


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_tc_radius_corners_with_batches_and_a_cap(dtype, backend):
    x = torch.tensor(CORNERS * 2, dtype=dtype)
    y = torch.tensor([[0, 0], [0, 1]], dtype=dtype)
    # y[0] sees all 8 points at sqrt(2); the cap keeps the nearest, ties to the lower index
    with pytest.warns(NeighborCapWarning, match="dropped 4 of 12 neighbour pairs at 1 points"):
        out = radius(x, y, 2, max_num_neighbors=4, backend=backend)
    assert pairs(out) == {(0, 0), (0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 5), (1, 6)}
    batch_x = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    batch_y = torch.tensor([0, 1])
    out = radius(x, y, 2, batch_x, batch_y, max_num_neighbors=4, backend=backend)
    assert pairs(out) == {(0, 0), (0, 1), (0, 2), (0, 3), (1, 5), (1, 6)}
    # a graph index that no point uses
    out = radius(x, y, 2, batch_x * 2, batch_y * 2, max_num_neighbors=4, backend=backend)
    assert pairs(out) == {(0, 0), (0, 1), (0, 2), (0, 3), (1, 5), (1, 6)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_tc_radius_graph_flows_and_degree_one_under_a_cap_of_one(dtype, backend):
    x = torch.tensor(CORNERS, dtype=dtype)
    square = {(0, 1), (0, 3), (1, 0), (1, 2), (2, 1), (2, 3), (3, 0), (3, 2)}
    out = radius_graph(x, r=2.5, flow="target_to_source", backend=backend)
    assert pairs(out) == square
    out = radius_graph(x, r=2.5, flow="source_to_target", backend=backend)
    assert pairs(out) == {(j, i) for i, j in square}
    with pytest.warns(NeighborCapWarning):
        assert set(degrees(radius_graph(x, r=100, max_num_neighbors=1, backend=backend))) == {1}
    duplicates = torch.tensor([[-1, -1]] * 4, dtype=dtype)
    with pytest.warns(NeighborCapWarning):
        out = radius_graph(duplicates, r=100, max_num_neighbors=1, backend=backend)
    assert degrees(out) == [1, 1, 1, 1] and bool((out[0] != out[1]).all())
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    with pytest.warns(NeighborCapWarning):
        out = radius_graph(torch.tensor(CORNERS * 2, dtype=dtype), 100, batch, max_num_neighbors=1, backend=backend)
    assert set(degrees(out)) == {1}
    assert (out[0] // 4).tolist() == batch.tolist()  # sorted by centre; each neighbour in its centre's graph


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tc_radius_graph_large_matches_scipy(dtype):
    x = torch.randn(1000, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    truth = {(i, j) for i, ns in enumerate(cKDTree(x.numpy()).query_ball_point(x.numpy(), r=0.5)) for j in ns}
    for backend in BACKENDS:
        out = radius_graph(x, r=0.5, flow="target_to_source", loop=True, max_num_neighbors=2000, backend=backend)
        assert pairs(out) == truth


@pytest.mark.parametrize("dtype", FLOATS)
def test_tc_knn_corners_batches_skipped_graph_and_cosine(dtype):
    x = torch.tensor(CORNERS * 2, dtype=dtype)
    y = torch.tensor([[1, 0], [-1, 0]], dtype=dtype)
    batch_x = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    batch_y = torch.tensor([0, 1])
    assert pairs(knn(x, y, 2)) == {(0, 2), (0, 3), (1, 0), (1, 1)}
    assert pairs(knn(x, y, 2, batch_x, batch_y)) == {(0, 2), (0, 3), (1, 4), (1, 5)}
    assert pairs(knn(x, y, 2, batch_x, batch_y, cosine=True)) == {(0, 2), (0, 3), (1, 4), (1, 5)}
    assert pairs(knn(x, y, 2, batch_x * 2, batch_y * 2)) == {(0, 2), (0, 3), (1, 4), (1, 5)}


@pytest.mark.parametrize("dtype", FLOATS)
def test_tc_knn_graph_flows(dtype):
    x = torch.tensor(CORNERS, dtype=dtype)
    square = {(0, 1), (0, 3), (1, 0), (1, 2), (2, 1), (2, 3), (3, 0), (3, 2)}
    assert pairs(knn_graph(x, k=2, flow="target_to_source")) == square
    assert pairs(knn_graph(x, k=2, flow="source_to_target")) == {(j, i) for i, j in square}


def test_tc_knn_graph_large_matches_scipy():
    x = torch.randn(1000, 3, generator=torch.Generator().manual_seed(1))
    _, col = cKDTree(x.numpy()).query(x.numpy(), k=5)
    truth = {(i, j) for i, ns in enumerate(col) for j in ns}
    assert pairs(knn_graph(x, k=5, flow="target_to_source", loop=True)) == truth
    assert pairs(knn_graph(x, 5, None, True, "target_to_source", False, 2)) == truth  # num_workers=2


# ----------------------------------------------------------------------------- signatures and rows


def test_positional_calls_in_torch_clusters_order():
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(40, 3, generator=g), torch.rand(10, 3, generator=g)
    batch_x = torch.tensor([0] * 20 + [1] * 20)
    batch_y = torch.tensor([0] * 5 + [1] * 5)
    # radius(x, y, r, batch_x, batch_y, max_num_neighbors, num_workers, batch_size)
    out = radius(x, y, 0.4, batch_x, batch_y, 100, 1, 2)
    assert torch.equal(out, brute_radius(x, y, 0.4, batch_x, batch_y, False))
    # radius_graph(x, r, batch, loop, max_num_neighbors, flow, num_workers, batch_size)
    expected = brute_radius(x, x, 0.4, batch_x, batch_x, True)
    assert torch.equal(radius_graph(x, 0.4, batch_x, False, 100, "target_to_source", 1, 2), expected)
    assert torch.equal(radius_graph(x, 0.4, batch_x, False, 100, "source_to_target", 1, 2), expected.flip(0))
    # knn(x, y, k, batch_x, batch_y, cosine, num_workers, batch_size); knn_graph(x, k, batch, loop, flow, ...)
    out = knn(x, y, 3, batch_x, batch_y, False, 1, 2)
    assert out.shape == (2, 30) and bool((batch_y[out[0]] == batch_x[out[1]]).all())
    out = knn_graph(x, 3, batch_x, False, "source_to_target", False, 1, 2)
    assert degrees(out) == [3] * 40 and bool((out[0] != out[1]).all())
    # the top-level names
    assert sn.radius is radius and sn.knn is knn and sn.radius_graph is radius_graph and sn.knn_graph is knn_graph


def test_rows_are_sorted_by_centre_then_neighbour():
    x = torch.rand(200, 3, generator=torch.Generator().manual_seed(3))
    for out, centre_row in (
        (radius_graph(x, 0.3, max_num_neighbors=None), 1),
        (radius_graph(x, 0.3, max_num_neighbors=None, flow="target_to_source"), 0),
        (radius(x, x[:50], 0.3, max_num_neighbors=None), 0),
        (knn_graph(x, 6), 1),
        (knn(x, x[:50], 6), 0),
    ):
        key = out[centre_row] * 1000 + out[1 - centre_row]
        assert bool((key[1:] > key[:-1]).all())


# ----------------------------------------------------------------------------- exactness


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 60),
    st.integers(0, 30),
    st.sampled_from([1, 2, 3, 4, 6]),
    st.floats(0.05, 0.8),
    st.integers(1, 3),
    st.booleans(),
    st.integers(0, 999),
)
def test_radius_and_radius_graph_are_exact_for_both_backends(n, m, dim, r, graphs, loop, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, dim, generator=generator, dtype=torch.float64)
    y = torch.rand(m, dim, generator=generator, dtype=torch.float64)
    batch_x = torch.sort(torch.randint(0, graphs, (n,), generator=generator)).values
    batch_y = torch.sort(torch.randint(0, graphs, (m,), generator=generator)).values
    graph = brute_radius(x, x, r, batch_x, batch_x, not loop)
    bipartite = brute_radius(x, y, r, batch_x, batch_y, False)
    for backend in (NeighborBackend.KDTREE, NeighborBackend.CELLS, "kdtree", "cells"):
        got = radius_graph(x, r, batch_x, loop=loop, max_num_neighbors=None, backend=backend)
        assert torch.equal(got, graph.flip(0)), backend
        got = radius(x, y, r, batch_x, batch_y, max_num_neighbors=None, batch_size=graphs, backend=backend)
        assert torch.equal(got, bipartite), backend


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_boundary_is_strict(dtype, backend):
    grid = torch.stack(torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij"), -1).reshape(-1, 2).to(dtype)
    assert radius_graph(grid, 1.0, backend=backend).shape[1] == 0  # neighbours at exactly 1
    assert radius(grid, grid, 1.0, backend=backend).tolist() == [list(range(25))] * 2  # only the point itself
    out = radius_graph(grid, 2.0, max_num_neighbors=None, backend=backend)
    d2 = ((grid[out[0]] - grid[out[1]]) ** 2).sum(1)
    assert d2.max() == 2 and out.shape[1] == 144  # sqrt(2) in, 2 out
    # in 4-D (where the cell list hands over to blocked brute force): the origin and e_1..e_4
    star = torch.cat([torch.zeros(1, 4), torch.eye(4)]).to(dtype)
    assert radius_graph(star, 1.0, backend=backend).shape[1] == 0
    assert radius_graph(star, 1.0001, backend=backend).shape[1] == 8
    assert radius_graph(star, math.sqrt(2) * 1.0001, backend=backend).shape[1] == 20


def test_large_random_radius_in_several_dimensions_matches_scipy():
    g = torch.Generator().manual_seed(4)
    for dim, r in ((2, 0.05), (3, 0.12), (7, 0.5)):
        x, y = (
            torch.rand(3000, dim, generator=g, dtype=torch.float64),
            torch.rand(700, dim, generator=g, dtype=torch.float64),
        )
        truth = {(i, j) for i, ns in enumerate(cKDTree(x.numpy()).query_ball_point(y.numpy(), r)) for j in ns}
        for backend in BACKENDS:
            assert pairs(radius(x, y, r, max_num_neighbors=None, backend=backend)) == truth, (dim, backend)
        truth = {(j, i) for i, ns in enumerate(cKDTree(x.numpy()).query_ball_point(x.numpy(), r)) for j in ns if j != i}
        assert pairs(radius_graph(x, r, max_num_neighbors=None)) == truth


def test_blocked_paths_in_small_chunks_give_the_same_pairs():
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(500, 3, generator=g), torch.rand(300, 3, generator=g)
    zeros = torch.zeros(500, dtype=torch.long)
    expected = radius_graph(x, 0.15, max_num_neighbors=None, backend="kdtree")
    assert expected.shape[1] > 1000
    centre, neighbour = _radius_cells(x, x, 0.15, zeros, zeros, 1, True, chunk=64)
    key = torch.sort(centre * 500 + neighbour).values
    assert torch.equal(torch.stack([key % 500, key // 500]), expected)
    centre, neighbour = _radius_brute(x, y, 0.15, [0, 500], [0, 300], False, chunk=1000)
    key = torch.sort(centre * 500 + neighbour).values
    assert torch.equal(torch.stack([key // 500, key % 500]), radius(x, y, 0.15, max_num_neighbors=None))


def test_blocked_knn_matches_the_kdtree():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(400, 5, generator=g, dtype=torch.float64), torch.randn(90, 5, generator=g, dtype=torch.float64)
    index = _knn_rows_brute(x, y, 7, False, chunk=800).sort(1).values
    assert torch.equal(torch.stack([torch.arange(90).repeat_interleave(7), index.reshape(-1)]), knn(x, y, 7))
    own = _knn_rows_brute(x, x, 4, True, chunk=800).sort(1).values
    graph = knn_graph(x, 4, flow="target_to_source")
    assert torch.equal(graph[1], own.reshape(-1))


# ----------------------------------------------------------------------------- the cap


def test_cap_keeps_the_nearest_and_reports_what_it_dropped():
    pos = torch.tensor([[0.0], [0.1], [0.2], [0.3]])
    for backend in BACKENDS:
        with pytest.warns(NeighborCapWarning, match="dropped 4 of 12 neighbour pairs at 4 points"):
            edges = radius_graph(pos, 1.0, max_num_neighbors=2, backend=backend)
        assert edges[0, edges[1] == 0].tolist() == [1, 2]  # point 0 keeps its two nearest
        assert edges[0, edges[1] == 1].tolist() == [0, 2]  # 0 and 2 tie at 0.1: both kept
        assert edges[0, edges[1] == 2].tolist() == [1, 3]
    with pytest.warns(NeighborCapWarning):  # with loops, the point itself counts (and is nearest)
        edges = radius_graph(pos, 1.0, loop=True, max_num_neighbors=2)
    assert edges[0, edges[1] == 3].tolist() == [2, 3]


@pytest.mark.parametrize("numpy_keys", [True, False])  # the CPU path; the torch one (other devices)
def test_cap_matches_a_reference_on_random_points_and_lattice_ties(numpy_keys):
    from structnets.graphs.neighbors import _bits, _cap

    g = torch.Generator().manual_seed(12)
    lattice = torch.stack(torch.meshgrid(*[torch.arange(6.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for pos, r, cap in ((torch.rand(400, 3, generator=g, dtype=torch.float64), 0.3, 7), (lattice, 1.5, 5)):
        full = radius_graph(pos, r, max_num_neighbors=None, flow="target_to_source")
        bits = _bits(pos.shape[0])
        keys = (full[0] << bits) | full[1]
        for chunk in (None, 50):  # one block of crowded centres, or many
            kept, dropped = _cap(keys.numpy().copy() if numpy_keys else keys, bits, pos, pos, cap, chunk=chunk)
            kept = torch.as_tensor(kept)
            expected = []
            d2 = ((pos[:, None] - pos[None]) ** 2).sum(-1).tolist()
            for centre in range(pos.shape[0]):
                mine = full[1, full[0] == centre].tolist()
                nearest = sorted(mine, key=lambda j: (d2[centre][j], j))[:cap]  # ties to the lower index
                expected += [(centre << bits) | j for j in sorted(nearest)]
            assert kept.tolist() == expected
            assert dropped[0] == full.shape[1] - kept.numel() > 0


def test_default_cap_is_torch_clusters_32_and_none_keeps_all():
    pos = torch.rand(50, 3, generator=torch.Generator().manual_seed(6)) * 0.01
    with pytest.warns(NeighborCapWarning, match="max_num_neighbors=32 dropped 850 of 2450"):
        assert degrees(radius_graph(pos, 1.0)) == [32] * 50
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert radius_graph(pos, 1.0, max_num_neighbors=None).shape[1] == 50 * 49
        assert radius_graph(pos, 1.0, max_num_neighbors=49).shape[1] == 50 * 49


def test_structnets_callers_keep_every_neighbour():
    from structnets.graphs.pointgraph import build_point_graph
    from structnets.physics.sph import SPHConfig, _forces

    points = torch.rand(400, 4, generator=torch.Generator().manual_seed(7)) * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", NeighborCapWarning)
        graph = build_point_graph(points, voxel_size=0.1, radius=4.0)
        assert graph.edge_index.shape[1] == graph.vertices.shape[0] * (graph.vertices.shape[0] - 1) > 32 * 100
        config = SPHConfig()
        pos = torch.rand(300, 2, generator=torch.Generator().manual_seed(8)) * config.smoothing
        assert torch.isfinite(_forces(pos, torch.zeros_like(pos), config)).all()


# ----------------------------------------------------------------------------- knn


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.sampled_from([1, 2, 3, 5]), st.integers(1, 6), st.integers(1, 3), st.integers(0, 999))
def test_knn_graph_matches_brute_force(n, dim, k, graphs, seed):
    generator = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, dim, generator=generator, dtype=torch.float64)
    batch = torch.sort(torch.randint(0, graphs, (n,), generator=generator)).values
    edges = knn_graph(pos, k, batch)
    d = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    d[batch[:, None] != batch[None, :]] = float("inf")
    d.fill_diagonal_(float("inf"))
    for centre in range(n):
        mine = sorted(edges[0, edges[1] == centre].tolist())
        available = int(torch.isfinite(d[centre]).sum())
        assert len(mine) == min(k, available)
        if mine:  # the chosen are no farther than the nearest left out
            chosen = d[centre, mine].max()
            others = [j for j in range(n) if j not in mine and torch.isfinite(d[centre, j])]
            assert all(d[centre, j] >= chosen for j in others)


def test_knn_cosine_is_one_minus_cosine_similarity():
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(300, 6, generator=g, dtype=torch.float64), torch.randn(40, 6, generator=g, dtype=torch.float64)
    distance = 1 - (y @ x.T) / (y.norm(dim=1)[:, None] * x.norm(dim=1)[None])
    truth = torch.sort(distance.topk(5, largest=False).indices, 1).values.reshape(-1)
    out = knn(x, y, 5, cosine=True)
    assert torch.equal(out[1], truth) and torch.equal(out[0], torch.arange(40).repeat_interleave(5))
    scaled = knn(x * torch.rand(300, 1, generator=g, dtype=torch.float64) * 10, y, 5, cosine=True)
    assert torch.equal(scaled, out)  # only directions count
    with pytest.raises(ValueError, match=r"cosine distance is undefined for zero vectors: x rows \[2\]"):
        knn(torch.tensor([[1.0, 0], [0, 1], [0, 0]]), y[:, :2], 1, cosine=True)


def test_knn_errors_and_small_graphs():
    assert knn_graph(torch.zeros(1, 2), 3).shape == (2, 0)  # a lone point has no neighbours
    with pytest.raises(ValueError, match="k must be at least 1"):
        knn_graph(torch.zeros(3, 2), 0)
    # duplicates: the point itself is never its own neighbour, each gets exactly k
    out = knn_graph(torch.zeros(6, 2), 2)
    assert degrees(out) == [2] * 6 and bool((out[0] != out[1]).all())


def test_knn_graph_with_k_above_n_links_every_other_point():
    # Documented: a graph with fewer than k other points links each point to all of them.
    pos = torch.randn(14, 3)
    batch = torch.tensor([0] * 4 + [1] * 10)
    edges = knn_graph(pos, 6, batch)
    incoming = torch.bincount(edges[1], minlength=14)
    assert incoming[:4].tolist() == [3] * 4 and incoming[4:].tolist() == [6] * 10
    small = edges[:, edges[1] < 4]
    assert {tuple(p) for p in small.t().tolist()} == {(s, r) for s in range(4) for r in range(4) if s != r}
    assert knn_graph(pos[:4], 6, loop=True).shape[1] == 16  # with loops: every point, itself included
    assert knn(pos[:4], pos, 6).shape[1] == 14 * 4


# ----------------------------------------------------------------------------- inputs


def test_dtypes_one_dimensional_and_empty_inputs():
    pos = torch.rand(300, 3, generator=torch.Generator().manual_seed(10)).half()
    expected = radius_graph(pos.float(), 0.2, max_num_neighbors=None)
    for dtype in (torch.float16, torch.bfloat16):
        coarse = pos.to(dtype)
        for backend in BACKENDS:  # searched in float32 (cells) or float64 (kdtree), the same values
            got = radius_graph(coarse, 0.2, max_num_neighbors=None, backend=backend)
            assert torch.equal(got, radius_graph(coarse.float(), 0.2, max_num_neighbors=None, backend=backend))
    assert torch.equal(radius_graph(pos, 0.2, max_num_neighbors=None), expected)
    with pytest.raises(TypeError, match="floating-point"):
        radius_graph(torch.zeros(3, 2, dtype=torch.long), 1.0)
    line = torch.tensor([0.0, 0.5, 2.0])  # 1-D: a column of 1-D points, as torch_cluster
    assert radius_graph(line, 1.0).tolist() == [[1, 0], [0, 1]]
    assert knn(line, line[:1], 2).tolist() == [[0, 0], [0, 1]]
    for empty in (radius(torch.zeros(0, 3), torch.rand(4, 3), 1.0), knn(torch.rand(4, 3), torch.zeros(0, 3), 2)):
        assert empty.shape == (2, 0) and empty.dtype == torch.long
    assert radius_graph(torch.zeros(0, 2), 1.0).shape == (2, 0)


def test_batch_size_and_batch_vectors():
    x = torch.rand(8, 2, generator=torch.Generator().manual_seed(11))
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    base = radius_graph(x, 2.0, batch)
    assert torch.equal(radius_graph(x, 2.0, batch, batch_size=4), base)  # trailing empty graphs
    assert base.shape[1] == 3 * 2 + 5 * 4
    with pytest.raises(ValueError, match="batch_size=1 but the batch vector holds graph index 1"):
        radius_graph(x, 2.0, batch, batch_size=1)
    with pytest.raises(ValueError, match="batch_x and batch_y must both be given"):
        radius(x, x, 2.0, batch)
    with pytest.raises(ValueError, match="batch_x and batch_y must both be given"):
        knn(x, x, 2, None, batch)
    many = torch.arange(8).repeat_interleave(1)  # one point per graph: no pairs
    assert radius_graph(x, 2.0, many).shape[1] == 0 and knn_graph(x, 3, many).shape[1] == 0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"NaN or infinite coordinates at point\(s\) \[1\]"):
        radius_graph(torch.tensor([[0.0, 0.0], [float("nan"), 1.0]]), 1.0)
    with pytest.raises(ValueError, match="r must be a positive"):
        radius_graph(torch.zeros(3, 2), 0.0)
    with pytest.raises(ValueError, match="batch must be sorted"):
        radius_graph(torch.zeros(3, 2), 1.0, torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match=r"x must be a \[num_points, dim\] tensor"):
        radius_graph(torch.zeros(3, 4, 1), 1.0)
    with pytest.raises(ValueError, match="x and y must have the same dimension"):
        radius(torch.zeros(3, 4), torch.zeros(3, 3), 1.0)
    with pytest.raises(ValueError, match="backend must be"):
        radius_graph(torch.zeros(3, 2), 1.0, backend="octree")
    with pytest.raises(ValueError, match="flow must be one of"):
        knn_graph(torch.zeros(3, 2), 1, flow="sideways")
    with pytest.raises(ValueError, match="max_num_neighbors must be at least 1 or None"):
        radius_graph(torch.zeros(3, 2), 1.0, max_num_neighbors=0)
    with pytest.raises(ValueError, match="num_workers"):
        knn(torch.zeros(3, 2), torch.zeros(3, 2), 1, num_workers=0)


# ----------------------------------------------------------------------------- periodic boxes


def wrapped(x, low, side, mask):
    """Coordinates shifted to the box's corner, wrapped on the periodic axes (float64)."""
    u = x.double() - low
    return torch.where(mask, torch.remainder(u, side), u)


def minimum_image_d2(x, y, low, side, mask):
    """[M, N] squared minimum-image distances, from the wrapped coordinates."""
    d = wrapped(y, low, side, mask)[:, None] - wrapped(x, low, side, mask)[None]
    d = torch.where(mask, d - side * torch.round(d / side), d)
    return (d**2).sum(-1)


def box_case(dim, seed, graphs=1, n=50, m=20):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(dim, generator=g, dtype=torch.float64) * 4 - 2
    side = 0.5 + torch.rand(dim, generator=g, dtype=torch.float64) * 2
    mask = torch.rand(dim, generator=g) < 0.8
    # Points fill the box, and some lie up to half a side outside it (a rollout steps out).
    x = low + side * (torch.rand(n, dim, generator=g, dtype=torch.float64) * 1.4 - 0.2)
    y = low + side * (torch.rand(m, dim, generator=g, dtype=torch.float64) * 1.4 - 0.2)
    batch_x = torch.sort(torch.randint(0, graphs, (n,), generator=g)).values
    batch_y = torch.sort(torch.randint(0, graphs, (m,), generator=g)).values
    bounds = torch.stack([low, low + side], 1)
    return x, y, batch_x, batch_y, low, side, mask, bounds


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from([1, 2, 3, 4]),
    st.floats(0.02, 0.49),
    st.integers(1, 3),
    st.booleans(),
    st.integers(0, 10_000),
)
def test_periodic_radius_is_exact_against_brute_force_with_wrapped_coordinates(dim, fraction, graphs, loop, seed):
    x, y, batch_x, batch_y, low, side, mask, bounds = box_case(dim, seed, graphs)
    r = float(fraction * side[mask].min()) if mask.any() else float(fraction)
    same = batch_x[:, None] == batch_x[None]
    d2 = minimum_image_d2(x, x, low, side, mask)
    ok = (d2 < r * r) & same
    if not loop:
        ok.fill_diagonal_(False)
    centre, neighbour = ok.nonzero(as_tuple=True)
    graph = torch.stack([neighbour, centre])
    ok = (minimum_image_d2(x, y, low, side, mask) < r * r) & (batch_y[:, None] == batch_x[None])
    bipartite = torch.stack(ok.nonzero(as_tuple=True))
    for backend in ("kdtree", "cells"):
        for box in (bounds, side if not low.any() else bounds):
            got = radius_graph(x, r, batch_x, loop, None, box=box, periodic=mask, backend=backend)
            assert torch.equal(got, graph), (backend, dim)
        got = radius(x, y, r, batch_x, batch_y, None, batch_size=graphs, box=bounds, periodic=mask, backend=backend)
        assert torch.equal(got, bipartite), (backend, dim)


def test_periodic_radius_graph_finds_pairs_across_every_face_and_corner():
    side = 1.0
    for dim in (2, 3):
        corners = torch.tensor(list(itertools.product((0.01, 0.99), repeat=dim)), dtype=torch.float64)
        for backend in ("kdtree", "cells"):
            edges = radius_graph(corners, 0.1, box=[side] * dim, max_num_neighbors=None, backend=backend)
            # Every corner is within 0.02 * sqrt(dim) of every other one through the faces.
            assert edges.shape[1] == len(corners) * (len(corners) - 1), (dim, backend)
            assert radius_graph(corners, 0.1, backend=backend).shape[1] == 0
            # Wrapping only the first axis links the corners that differ in that axis alone.
            mask = [True] + [False] * (dim - 1)
            edges = radius_graph(corners, 0.1, box=[side] * dim, periodic=mask, backend=backend)
            assert edges.shape[1] == len(corners)
            assert ((corners[edges[0]] - corners[edges[1]]).abs()[:, 1:] == 0).all()


def test_periodic_float32_points_on_the_upper_face_are_wrapped_not_refused():
    x = torch.tensor([[1.0, 0.5], [0.02, 0.5], [-1e-8, 0.5], [0.97, 0.5]], dtype=torch.float32)
    for backend in ("kdtree", "cells"):
        edges = radius_graph(x, 0.05, box=[1.0, 1.0], backend=backend)
        assert pairs(edges) >= {(0, 1), (1, 0), (0, 2), (2, 0), (2, 3), (3, 2)}, backend


def test_periodic_cap_keeps_the_nearest_minimum_image_neighbours():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(400, 2, generator=g, dtype=torch.float64)
    box = torch.ones(2, dtype=torch.float64)
    d2 = minimum_image_d2(x, x, torch.zeros(2), box, torch.ones(2, dtype=torch.bool))
    d2.fill_diagonal_(float("inf"))
    with pytest.warns(NeighborCapWarning):
        for backend in ("kdtree", "cells"):
            edges = radius_graph(x, 0.2, max_num_neighbors=4, box=box, backend=backend)
            for centre in range(0, 400, 37):
                mine = edges[0, edges[1] == centre]
                assert len(mine) == 4
                assert set(mine.tolist()) == set(d2[centre].topk(4, largest=False).indices.tolist())


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([1, 2, 3]), st.integers(1, 8), st.integers(1, 3), st.booleans(), st.integers(0, 10_000))
def test_periodic_knn_matches_brute_force(dim, k, graphs, loop, seed):
    x, y, batch_x, batch_y, low, side, mask, bounds = box_case(dim, seed, graphs, n=40, m=15)
    graph = knn_graph(x, k, batch_x, loop, box=bounds, periodic=mask)  # row 1 the centre
    bipartite = knn(x, y, k, batch_x, batch_y, batch_size=graphs, box=bounds, periodic=mask)  # row 0 the centre
    cases = (
        (graph[1], graph[0], minimum_image_d2(x, x, low, side, mask), batch_x, not loop),
        (bipartite[0], bipartite[1], minimum_image_d2(x, y, low, side, mask), batch_y, False),
    )
    for centres, neighbours, d2, batch_c, exclude in cases:
        d2[batch_c[:, None] != batch_x[None]] = float("inf")
        if exclude:
            d2.fill_diagonal_(float("inf"))
        for centre in range(d2.shape[0]):
            mine = neighbours[centres == centre].tolist()
            available = int(torch.isfinite(d2[centre]).sum())
            assert len(mine) == min(k, available)
            if mine and available > len(mine):
                left = torch.ones(d2.shape[1], dtype=torch.bool)
                left[mine] = False
                assert d2[centre, mine].max() <= d2[centre][left].min()


def test_periodic_knn_off_the_kdtree_matches_it():
    x, _, batch, _, low, side, mask, bounds = box_case(3, 5, graphs=2, n=200)
    from structnets.graphs.neighbors import _box_value, _knn_rows_periodic

    box = _box_value(bounds, mask, 3, None)
    u = box.wrap(x)
    one = batch == 0
    mine = _knn_rows_periodic(u[one], u[one], 6, True, box, chunk=64).sort(1).values
    reference = knn_graph(x[one], 6, box=bounds, periodic=mask)[0].view(-1, 6)
    assert torch.equal(mine, reference)


def test_periodic_boxes_refuse_what_has_no_single_nearest_image():
    x = torch.rand(10, 2)
    with pytest.raises(ValueError, match=r"r=0.5 is not below half the periodic side on axis 0 \(1\)"):
        radius_graph(x, 0.5, box=[1.0, 2.0])
    assert radius_graph(x, 0.5, box=[1.0, 2.0], periodic=[False, True]).shape[0] == 2  # axis 0 does not wrap
    with pytest.raises(ValueError, match=r"box must be \[2\] side lengths or \[2, 2\] bounds"):
        radius_graph(x, 0.1, box=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="finite sides with low < high"):
        radius_graph(x, 0.1, box=[[0.0, 1.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="finite sides"):
        radius(x, x, 0.1, box=[1.0, float("nan")])
    with pytest.raises(ValueError, match="periodic must be 2 booleans"):
        radius_graph(x, 0.1, box=[1.0, 1.0], periodic=[1, 0])
    with pytest.raises(ValueError, match="periodic= needs box="):
        knn_graph(x, 2, periodic=[True, True])
    with pytest.raises(ValueError, match="pass one of cosine or box"):
        knn(x, x, 2, cosine=True, box=[1.0, 1.0])
