import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from structnets.graphs.neighbors import NeighborBackend, NeighborCapWarning, knn_graph, radius_graph


def brute_radius(pos, r, batch, loop):
    d = torch.cdist(pos.double(), pos.double())
    ok = (d <= r) & (batch[:, None] == batch[None, :])
    if not loop:
        ok.fill_diagonal_(False)
    centre, neighbour = ok.nonzero(as_tuple=True)
    return torch.stack([neighbour, centre])


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 60),
    st.sampled_from([1, 2, 3]),
    st.floats(0.05, 0.6),
    st.integers(1, 3),
    st.booleans(),
    st.integers(0, 999),
)
def test_radius_graph_is_exact_for_both_backends(n, dim, r, graphs, loop, seed):
    generator = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, dim, generator=generator)
    batch = torch.sort(torch.randint(0, graphs, (n,), generator=generator)).values
    expected = brute_radius(pos, r, batch, loop)
    for backend in (NeighborBackend.KDTREE, NeighborBackend.CELLS, "kdtree", "cells"):
        got = radius_graph(pos, r, batch, loop=loop, backend=backend)
        assert torch.equal(got, expected), backend


def test_radius_graph_both_directions_and_duplicates():
    pos = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    edges = radius_graph(pos, 1.0)
    assert edges.tolist() == [[1, 2, 0, 2, 0, 1], [0, 0, 1, 1, 2, 2]]
    assert torch.equal(radius_graph(pos, 1.0, backend="cells"), edges)


def test_cap_is_explicit_and_reported():
    pos = torch.tensor([[0.0], [0.1], [0.2], [0.3]])
    with pytest.warns(NeighborCapWarning, match="dropped 4 of 12 neighbour pairs at 4 points"):
        edges = radius_graph(pos, 1.0, max_num_neighbors=2)
    # point 0 keeps its two nearest, 1 and 2
    assert edges[0, edges[1] == 0].tolist() == [1, 2]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"NaN or infinite coordinates at point\(s\) \[1\]"):
        radius_graph(torch.tensor([[0.0, 0.0], [float("nan"), 1.0]]), 1.0)
    with pytest.raises(ValueError, match="r must be a positive"):
        radius_graph(torch.zeros(3, 2), 0.0)
    with pytest.raises(ValueError, match="batch must be sorted"):
        radius_graph(torch.zeros(3, 2), 1.0, torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match=r"pos must be a \[num_points, 1\|2\|3\] tensor"):
        radius_graph(torch.zeros(3, 4), 1.0)
    with pytest.raises(ValueError, match="backend must be"):
        radius_graph(torch.zeros(3, 2), 1.0, backend="octree")


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.sampled_from([2, 3]), st.integers(1, 6), st.integers(1, 3), st.integers(0, 999))
def test_knn_graph_matches_brute_force(n, dim, k, graphs, seed):
    generator = torch.Generator().manual_seed(seed)
    pos = torch.rand(n, dim, generator=generator, dtype=torch.float64)
    batch = torch.sort(torch.randint(0, graphs, (n,), generator=generator)).values
    edges = knn_graph(pos, k, batch)
    d = torch.cdist(pos, pos)
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


def test_cell_list_in_small_chunks_gives_the_same_pairs():
    from structnets.graphs.neighbors import _radius_cells

    pos = torch.rand(500, 3, generator=torch.Generator().manual_seed(1))
    batch = torch.zeros(500, dtype=torch.long)
    expected = radius_graph(pos, 0.15, backend="kdtree")
    assert torch.equal(_radius_cells(pos, 0.15, batch, False, chunk=64), expected)
    assert expected.shape[1] > 1000


def test_knn_errors_and_small_graphs():
    assert knn_graph(torch.zeros(1, 2), 3).shape == (2, 0)  # a lone point has no neighbours
    with pytest.raises(ValueError, match="k must be at least 1"):
        knn_graph(torch.zeros(3, 2), 0)


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
