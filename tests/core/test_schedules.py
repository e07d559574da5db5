import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from structnets import CycleError, GRUCell, Synchronous, Topological, propagate, topological_levels
from structnets.core.schedules import compute_levels


@st.composite
def dags(draw, max_nodes=14):
    """Random DAGs: edges only from a lower to a higher id under a random relabelling."""
    n = draw(st.integers(0, max_nodes))
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=3 * n)) if pairs else []
    relabel = draw(st.permutations(range(n))) if n else []
    edges = [(relabel[a], relabel[b]) for a, b in chosen]
    edge_index = torch.tensor(edges, dtype=torch.long).t().reshape(2, -1)
    return n, edge_index


def _longest_paths(n, edge_index):
    senders = {v: [] for v in range(n)}
    for a, b in edge_index.t().tolist():
        senders[b].append(a)

    @functools.cache
    def depth(v):
        return 0 if not senders[v] else 1 + max(depth(u) for u in senders[v])

    return [depth(v) for v in range(n)], senders


@settings(max_examples=60, deadline=None)
@given(dags())
def test_levels_are_longest_paths(dag):
    n, edge_index = dag
    expected, _ = _longest_paths(n, edge_index)
    assert compute_levels(edge_index, n).tolist() == expected
    levels = topological_levels(edge_index, n)
    assert sum(levels.sizes) == n
    level = levels.level
    if edge_index.numel():
        assert bool((level[edge_index[0]] < level[edge_index[1]]).all())


@settings(max_examples=40, deadline=None)
@given(dags(), st.booleans())
def test_level_loop_matches_recursive_evaluation(dag, reverse):
    """A DAG-RNN (GRU cell, incoming states summed) against plain recursion, in float64."""
    n, edge_index = dag
    cell = GRUCell(3, 4).double()
    x = torch.randn(n, 3, dtype=torch.double)
    out = propagate(cell, x, edge_index, Topological(reverse=reverse))
    directed = edge_index.flip(0) if reverse else edge_index
    _, senders = _longest_paths(n, directed)

    @functools.cache
    def state(v):
        if not senders[v]:
            return cell(x[v : v + 1])
        return cell(x[v : v + 1], sum(state(u) for u in senders[v]))

    expected = torch.cat([state(v) for v in range(n)]) if n else torch.zeros(0, 4, dtype=torch.double)
    assert_close(out, expected, atol=1e-10, rtol=0)


def test_cycle_is_named():
    edge_index = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 1, 0]])
    with pytest.raises(CycleError, match="cycle where a DAG is required") as info:
        compute_levels(edge_index, 6)
    assert sorted(info.value.cycle) == [1, 2, 3]
    assert "1 -> 2 -> 3" in str(info.value) or "2 -> 3 -> 1" in str(info.value) or "3 -> 1 -> 2" in str(info.value)


def test_self_loop_is_a_cycle():
    with pytest.raises(CycleError):
        propagate(GRUCell(2, 2), torch.randn(3, 2), torch.tensor([[0, 1], [1, 1]]), Topological())


def test_bad_edge_index():
    with pytest.raises(ValueError, match="num_nodes is 3"):
        compute_levels(torch.tensor([[0], [5]]), 3)
    with pytest.raises(ValueError, match=r"shape \[2, num_edges\]"):
        compute_levels(torch.tensor([0, 1]), 3)


def test_empty_graph_and_single_node():
    cell = GRUCell(2, 3)
    empty = propagate(cell, torch.zeros(0, 2), torch.zeros(2, 0, dtype=torch.long), Topological())
    assert empty.shape == (0, 3)
    x = torch.randn(1, 2)
    single = propagate(cell, x, torch.zeros(2, 0, dtype=torch.long), Topological())
    assert_close(single, cell(x))


def test_levels_are_cached_with_the_edge_index():
    edge_index = torch.tensor([[0, 1], [1, 2]])
    first = topological_levels(edge_index, 3)
    assert topological_levels(edge_index, 3) is first
    assert topological_levels(edge_index, 3, reverse=True) is not first
    edge_index[1, 1] = 0  # in place: 0 -> 1, 1 -> 0 is now a cycle
    with pytest.raises(CycleError):
        topological_levels(edge_index, 3)


def test_synchronous_needs_non_negative_rounds():
    assert Synchronous(0).rounds == 0
    with pytest.raises(ValueError, match="rounds must be non-negative"):
        Synchronous(-1)


def test_the_edge_index_value_check_gives_way_to_tracing():
    """Traced by torch.export, check_edge_index keeps its shape and dtype checks but reads no values."""
    from structnets.core.schedules import check_edge_index

    class Gather(torch.nn.Module):
        def forward(self, x, edge_index):
            check_edge_index(edge_index, x.shape[0], x.device)
            return x.index_select(0, edge_index[0])

    x, edges = torch.randn(4, 2), torch.tensor([[0, 1, 3], [1, 2, 0]])
    nodes, count = torch.export.Dim("nodes"), torch.export.Dim("edges")
    program = torch.export.export(Gather(), (x, edges), dynamic_shapes=({0: nodes}, {1: count}))
    other = torch.tensor([[4, 0, 2, 1], [0, 1, 2, 3]])
    assert_close(program.module()(torch.randn(5, 2).abs(), other).shape, torch.Size([4, 2]))
    with pytest.raises(ValueError, match="refers to node 7, but num_nodes is 4"):
        Gather()(x, torch.tensor([[7], [0]]))
    with pytest.raises(TypeError, match="must hold integers"):
        torch.export.export(Gather(), (x, edges.double()))
