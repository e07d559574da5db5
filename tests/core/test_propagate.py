import copy
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from structnets import (
    ChildSumTreeGRUCell,
    ChildSumTreeLSTMCell,
    GRUCell,
    LSTMCell,
    NaryTreeLSTMCell,
    Synchronous,
    Topological,
    propagate,
)
from structnets.core.chains import forest_edges
from structnets.core.propagate import GraphState, max_aggregate, mean_aggregate, propagate_rounds, sum_aggregate
from structnets.core.schedules import topological_levels

EXACT = dict(atol=1e-10, rtol=0)


def _random_parents(rng: random.Random, size: int, max_children: int) -> list[int | None]:
    """A random tree on nodes 0..size-1 with node 0 the root (parents drawn among earlier nodes)."""
    parents: list[int | None] = [None]
    counts = [0] * size
    for v in range(1, size):
        choices = [u for u in range(v) if counts[u] < max_children]
        parent = rng.choice(choices)
        counts[parent] += 1
        parents.append(parent)
    return parents


def test_child_sum_on_a_chain_is_the_lstm():
    steps = 6
    cell = ChildSumTreeLSTMCell(3, 5).double()
    lstm = torch.nn.LSTMCell(3, 5).double()
    lstm.load_state_dict(cell.state_dict())
    x = torch.randn(steps, 3, dtype=torch.double)
    edge_index = torch.stack([torch.arange(steps - 1), torch.arange(1, steps)])
    h, c = propagate(cell, x, edge_index, Topological())
    state, hs, cs = None, [], []
    for t in range(steps):
        state = lstm(x[t : t + 1], state)
        hs.append(state[0])
        cs.append(state[1])
    assert_close(h, torch.cat(hs), **EXACT)
    assert_close(c, torch.cat(cs), **EXACT)


def test_child_sum_chain_gradients_match_lstm():
    steps = 5
    cell = ChildSumTreeLSTMCell(3, 4).double()
    lstm = torch.nn.LSTMCell(3, 4).double()
    lstm.load_state_dict(cell.state_dict())
    x = torch.randn(steps, 3, dtype=torch.double)
    edge_index = torch.stack([torch.arange(steps - 1), torch.arange(1, steps)])
    h, _ = propagate(cell, x, edge_index, Topological())
    (h * torch.arange(1.0, steps + 1, dtype=torch.double)[:, None]).sum().backward()
    state, total = None, 0
    for t in range(steps):
        state = lstm(x[t : t + 1], state)
        total = total + (t + 1) * state[0].sum()
    total.backward()
    for name, p in lstm.named_parameters():
        assert_close(getattr(cell, name).grad, p.grad, **EXACT, msg=name)


def _recursive_child_sum(cell, x, parents):
    children = {v: [] for v in range(len(parents))}
    for v, p in enumerate(parents):
        if p is not None:
            children[p].append(v)
    hs = cell.hidden_size
    w_i, w_f, w_g, w_o = cell.weight_hh.split(hs, 0)
    b_i, b_f, b_g, b_o = cell.bias_hh.split(hs, 0)
    memo = {}

    def node(v):
        if v in memo:
            return memo[v]
        x_i, x_f, x_g, x_o = (x[v] @ cell.weight_ih.T + cell.bias_ih).split(hs)
        kids = [node(k) for k in children[v]]
        h_sum = sum((k[0] for k in kids), torch.zeros(hs, dtype=x.dtype))
        i = torch.sigmoid(x_i + w_i @ h_sum + b_i)
        o = torch.sigmoid(x_o + w_o @ h_sum + b_o)
        u = torch.tanh(x_g + w_g @ h_sum + b_g)
        c = i * u + sum((torch.sigmoid(x_f + w_f @ hk + b_f) * ck for hk, ck in kids), torch.zeros(hs, dtype=x.dtype))
        memo[v] = (o * torch.tanh(c), c)
        return memo[v]

    return torch.stack([node(v)[0] for v in range(len(parents))])


def _recursive_nary(cell, x, parents, slots):
    n_slots, hs = cell.num_children, cell.hidden_size
    children = {v: [None] * n_slots for v in range(len(parents))}
    for v, (p, s) in enumerate(zip(parents, slots)):
        if p is not None:
            children[p][s] = v
    memo = {}

    def node(v):
        if v in memo:
            return memo[v]
        zero = torch.zeros(hs, dtype=x.dtype)
        kids = [node(k) if k is not None else (zero, zero) for k in children[v]]
        h_cat = torch.cat([k[0] for k in kids])
        pre = x[v] @ cell.weight_ih.T + cell.bias_ih + cell.weight_hh @ h_cat + cell.bias_hh
        blocks = pre.split(hs)
        i, fs, g, o = blocks[0], blocks[1 : 1 + n_slots], blocks[-2], blocks[-1]
        c = torch.sigmoid(i) * torch.tanh(g) + sum(torch.sigmoid(f) * k[1] for f, k in zip(fs, kids))
        memo[v] = (torch.sigmoid(o) * torch.tanh(c), c)
        return memo[v]

    return torch.stack([node(v)[0] for v in range(len(parents))])


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 25), st.integers(0, 10_000))
def test_child_sum_matches_recursive_formula(size, seed):
    rng = random.Random(seed)
    parents = _random_parents(rng, size, max_children=4)
    cell = ChildSumTreeLSTMCell(3, 4).double()
    x = torch.randn(size, 3, dtype=torch.double)
    h, _ = propagate(cell, x, forest_edges(parents), Topological())
    assert_close(h, _recursive_child_sum(cell, x, parents), **EXACT)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 25), st.integers(0, 10_000))
def test_nary_matches_recursive_formula(size, seed):
    rng = random.Random(seed)
    parents = _random_parents(rng, size, max_children=3)
    slots, used = [], {}
    for p in parents:
        if p is None:
            slots.append(0)
            continue
        free = [s for s in range(3) if s not in used.setdefault(p, set())]
        s = rng.choice(free)
        used[p].add(s)
        slots.append(s)
    edge_slots = torch.tensor([s for s, p in zip(slots, parents) if p is not None], dtype=torch.long)
    cell = NaryTreeLSTMCell(3, 4, num_children=3).double()
    x = torch.randn(size, 3, dtype=torch.double)
    h, _ = propagate(cell, x, forest_edges(parents), Topological(), edge_attr=edge_slots)
    assert_close(h, _recursive_nary(cell, x, parents, slots), **EXACT)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 15), min_size=1, max_size=6), st.integers(0, 10_000))
def test_batched_forest_equals_each_tree_alone(sizes, seed):
    rng = random.Random(seed)
    cell = ChildSumTreeLSTMCell(3, 4).double()
    trees = [_random_parents(rng, size, max_children=3) for size in sizes]
    inputs = [torch.randn(size, 3, dtype=torch.double) for size in sizes]
    forest, offset = [], 0
    for parents in trees:
        forest += [None if p is None else p + offset for p in parents]
        offset += len(parents)
    h_all, c_all = propagate(cell, torch.cat(inputs), forest_edges(forest), Topological())
    alone = [propagate(cell, x, forest_edges(p), Topological()) for x, p in zip(inputs, trees)]
    assert_close(h_all, torch.cat([a[0] for a in alone]), **EXACT)
    assert_close(c_all, torch.cat([a[1] for a in alone]), **EXACT)


def test_nary_rejects_bad_slots():
    cell = NaryTreeLSTMCell(2, 3, num_children=2)
    edges = forest_edges([None, 0, 0])
    with pytest.raises(ValueError, match="child slots must lie in"):
        propagate(cell, torch.randn(3, 2), edges, Topological(), edge_attr=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="share a child slot"):
        propagate(cell, torch.randn(3, 2), edges, Topological(), edge_attr=torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="edge_attr"):
        propagate(cell, torch.randn(3, 2), edges, Topological())


def _recursive_child_sum_gru(cell, x, parents):
    children = {v: [] for v in range(len(parents))}
    for v, p in enumerate(parents):
        if p is not None:
            children[p].append(v)
    hs = cell.hidden_size
    w_r, w_z, w_n = cell.weight_hh.split(hs, 0)
    b_r, b_z, b_n = cell.bias_hh.split(hs, 0)
    memo = {}

    def node(v):
        if v in memo:
            return memo[v]
        x_r, x_z, x_n = (x[v] @ cell.weight_ih.T + cell.bias_ih).split(hs)
        kids = [node(k) for k in children[v]]
        if not kids:  # a leaf: the GRU step from a zero state
            kids_for_reset = [torch.zeros(hs, dtype=x.dtype)]
        else:
            kids_for_reset = kids
        h_sum = sum(kids, torch.zeros(hs, dtype=x.dtype))
        z = torch.sigmoid(x_z + w_z @ h_sum + b_z)
        reset = sum(torch.sigmoid(x_r + w_r @ hk + b_r) * (w_n @ hk + b_n) for hk in kids_for_reset)
        n = torch.tanh(x_n + reset)
        memo[v] = z * h_sum + (1 - z) * n
        return memo[v]

    return torch.stack([node(v) for v in range(len(parents))])


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 25), st.integers(0, 10_000))
def test_child_sum_gru_matches_recursive_formula(size, seed):
    rng = random.Random(seed)
    parents = _random_parents(rng, size, max_children=4)
    cell = ChildSumTreeGRUCell(3, 4).double()
    x = torch.randn(size, 3, dtype=torch.double)
    h = propagate(cell, x, forest_edges(parents), Topological())
    assert_close(h, _recursive_child_sum_gru(cell, x, parents), **EXACT)


def test_child_sum_gru_on_a_chain_is_the_gru():
    torch.manual_seed(0)
    cell = ChildSumTreeGRUCell(3, 5).double()
    reference = torch.nn.GRUCell(3, 5).double()
    reference.load_state_dict(cell.state_dict())
    x = torch.randn(6, 3, dtype=torch.double)
    chain = forest_edges([None, 0, 1, 2, 3, 4])  # node k's parent is k - 1: a chain from node 5 to node 0
    h = propagate(cell, x, chain, Topological())
    state = None
    for v in reversed(range(6)):
        state = reference(x[v : v + 1], state)
        assert_close(h[v : v + 1], state, **EXACT)


# ---------------------------------------------------------------- the synchronous schedule

GRAPH = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 2, 2], [1, 2, 0, 4, 5, 3, 3, 5, 5]])  # a multi-edge, a node (6) alone


class _EdgeMLP(torch.nn.Module):
    """``e' = e + tanh(W [e, h_s, h_r])``: an interaction network's edge update."""

    def __init__(self, edge_size: int, hidden: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(edge_size + 2 * hidden, edge_size)

    def forward(self, edges, nodes, edge_index):
        return edges + torch.tanh(self.linear(torch.cat([edges, nodes[edge_index[0]], nodes[edge_index[1]]], -1)))


class _NodeMLP(torch.nn.Module):
    """``h' = h + tanh(W [h, m])``."""

    def __init__(self, message_size: int, hidden: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(hidden + message_size, hidden)

    def forward(self, aggregated, state):
        return state + torch.tanh(self.linear(torch.cat([state, aggregated], -1)))


def _rounds_by_hand(node_steps, edge_steps, h, e, edge_index):
    """The synchronous rounds written out edge by edge and node by node."""
    pairs = edge_index.t().tolist()
    for node_step, edge_step in zip(node_steps, edge_steps):
        e = torch.stack(
            [e[k] + torch.tanh(edge_step.linear(torch.cat([e[k], h[s], h[r]]))) for k, (s, r) in enumerate(pairs)]
        )
        rows = []
        for v in range(h.shape[0]):
            incoming = [e[k] for k, (_, r) in enumerate(pairs) if r == v]
            rows.append(sum(incoming) if incoming else torch.zeros_like(e[0]))
        m = torch.stack(rows)
        h = torch.stack([h[v] + torch.tanh(node_step.linear(torch.cat([h[v], m[v]]))) for v in range(h.shape[0])])
    return h, e


def test_synchronous_rounds_with_edge_steps_match_a_loop_by_hand():
    rounds = 3
    node_steps = torch.nn.ModuleList(_NodeMLP(2, 4) for _ in range(rounds)).double()
    edge_steps = torch.nn.ModuleList(_EdgeMLP(2, 4) for _ in range(rounds)).double()
    h = torch.randn(7, 4, dtype=torch.double, requires_grad=True)
    e = torch.randn(GRAPH.shape[1], 2, dtype=torch.double, requires_grad=True)
    out = propagate(node_steps, None, GRAPH, Synchronous(rounds), state=h, edges=e, edge_step=edge_steps)
    assert isinstance(out, GraphState)
    h_ref, e_ref = _rounds_by_hand(node_steps, edge_steps, h, e, GRAPH)
    assert_close(out.nodes, h_ref, **EXACT)
    assert_close(out.edges, e_ref, **EXACT)
    weights = torch.linspace(-1, 1, 28, dtype=torch.double).view(7, 4)
    inputs = [h, e, *node_steps.parameters(), *edge_steps.parameters()]
    ours = torch.autograd.grad((out.nodes * weights).sum() + out.edges.sum(), inputs)
    theirs = torch.autograd.grad((h_ref * weights).sum() + e_ref.sum(), inputs)
    for a, b in zip(ours, theirs):
        assert_close(a, b, **EXACT)


def test_synchronous_rounds_without_edge_steps_match_dense_reference():
    n = 7
    adjacency = torch.zeros(n, n, dtype=torch.double)
    adjacency.index_put_((GRAPH[1], GRAPH[0]), torch.ones(GRAPH.shape[1], dtype=torch.double), accumulate=True)
    cell = GRUCell(4, 4).double()
    h = torch.randn(n, 4, dtype=torch.double)
    out = propagate(cell, None, GRAPH, Synchronous(rounds=3), state=h)
    expected = h
    for _ in range(3):
        expected = cell(adjacency @ expected, expected)
    assert_close(out.nodes, expected, **EXACT)
    assert out.edges is None
    mean = propagate(cell, None, GRAPH, Synchronous(rounds=1), state=h, aggregate=mean_aggregate).nodes
    degree = adjacency.sum(1, keepdim=True).clamp(min=1)
    assert_close(mean, cell(adjacency @ h / degree, h), **EXACT)


def test_an_lstm_cell_carries_its_cell_state_through_the_rounds():
    cell = LSTMCell(3, 3).double()
    h, c = torch.randn(7, 3, dtype=torch.double), torch.randn(7, 3, dtype=torch.double)
    out = propagate(cell, None, GRAPH, Synchronous(2), state=(h, c), aggregate=max_aggregate).nodes
    expected = (h, c)
    for _ in range(2):
        expected = cell(max_aggregate(expected[0][GRAPH[0]], GRAPH[1], 7), expected)
    assert_close(out, expected, **EXACT)


def test_shared_rounds_equal_copies_of_one_step():
    node_step, edge_step = _NodeMLP(2, 4).double(), _EdgeMLP(2, 4).double()
    h = torch.randn(7, 4, dtype=torch.double)
    e = torch.randn(GRAPH.shape[1], 2, dtype=torch.double)
    shared = propagate(node_step, None, GRAPH, Synchronous(3), state=h, edges=e, edge_step=edge_step)
    copies = [copy.deepcopy(node_step) for _ in range(3)], [copy.deepcopy(edge_step) for _ in range(3)]
    unshared = propagate(copies[0], None, GRAPH, Synchronous(3), state=h, edges=e, edge_step=copies[1])
    assert_close(unshared.nodes, shared.nodes, **EXACT)
    assert_close(unshared.edges, shared.edges, **EXACT)
    # ... and unshared rounds really take a different step per round.
    with torch.no_grad():
        copies[1][1].linear.weight.add_(0.5)
    changed = propagate(copies[0], None, GRAPH, Synchronous(3), state=h, edges=e, edge_step=copies[1])
    assert not torch.allclose(changed.nodes, shared.nodes)
    # A shared node step with one edge step per round (mixed) is allowed too.
    mixed = propagate(node_step, None, GRAPH, Synchronous(3), state=h, edges=e, edge_step=copies[1])
    assert_close(mixed.nodes, changed.nodes, **EXACT)


def test_identity_steps_leave_the_states_unchanged():
    h = torch.randn(7, 4, dtype=torch.double)
    e = torch.randn(GRAPH.shape[1], 4, dtype=torch.double)
    out = propagate(
        lambda aggregated, state: state,
        None,
        GRAPH,
        Synchronous(4),
        state=h,
        edges=e,
        edge_step=lambda edges, nodes, edge_index: edges,
    )
    assert torch.equal(out.nodes, h) and torch.equal(out.edges, e)
    # With no rounds, whatever the steps, the states come back as they went in.
    none = propagate(_NodeMLP(4, 4).double(), None, GRAPH, Synchronous(0), state=h, edges=e, edge_step=_EdgeMLP(4, 4))
    assert none.nodes is h and none.edges is e
    # The node step sees exactly the aggregated edges.
    seen = propagate(lambda m, state: m, None, GRAPH, Synchronous(1), state=h, edges=e, edge_step=lambda x, n, i: x)
    assert_close(seen.nodes, sum_aggregate(e, GRAPH[1], 7), **EXACT)


def test_a_graph_without_edges_and_one_without_nodes():
    cell = GRUCell(3, 3).double()
    h = torch.randn(4, 3, dtype=torch.double)
    no_edges = torch.zeros(2, 0, dtype=torch.long)
    for aggregate in (sum_aggregate, mean_aggregate, max_aggregate):
        out = propagate(cell, None, no_edges, Synchronous(2), state=h, aggregate=aggregate)
        assert_close(out.nodes, cell(torch.zeros_like(h), cell(torch.zeros_like(h), h)), **EXACT)
    edge_step = _EdgeMLP(2, 3).double()
    out = propagate(
        _NodeMLP(2, 3).double(),
        None,
        no_edges,
        Synchronous(2),
        state=h,
        edges=torch.zeros(0, 2, dtype=torch.double),
        edge_step=edge_step,
    )
    assert out.edges.shape == (0, 2) and out.nodes.shape == (4, 3)
    empty = propagate(cell, None, no_edges, Synchronous(3), state=torch.zeros(0, 3, dtype=torch.double))
    assert empty.nodes.shape == (0, 3)
    out = propagate(
        _NodeMLP(2, 3).double(),
        None,
        no_edges,
        Synchronous(3),
        state=torch.zeros(0, 3, dtype=torch.double),
        edges=torch.zeros(0, 2, dtype=torch.double),
        edge_step=edge_step,
    )
    assert out.nodes.shape == (0, 3) and out.edges.shape == (0, 2)


@settings(max_examples=20, deadline=None)
@given(st.permutations(range(7)), st.permutations(range(GRAPH.shape[1])))
def test_synchronous_rounds_are_equivariant_to_node_permutation(node_order, edge_order):
    """Relabelling the nodes (and listing the edges in another order) permutes the result alike."""
    node_order, edge_order = torch.tensor(node_order), torch.tensor(edge_order)
    torch.manual_seed(0)
    node_steps = [_NodeMLP(2, 3).double() for _ in range(2)]
    edge_steps = [_EdgeMLP(2, 3).double() for _ in range(2)]
    h = torch.randn(7, 3, dtype=torch.double)
    e = torch.randn(GRAPH.shape[1], 2, dtype=torch.double)
    out = propagate(node_steps, None, GRAPH, Synchronous(2), state=h, edges=e, edge_step=edge_steps)
    new_label = torch.argsort(node_order)  # node node_order[i] becomes node i
    relabelled = new_label[GRAPH][:, edge_order]
    moved = propagate(
        node_steps, None, relabelled, Synchronous(2), state=h[node_order], edges=e[edge_order], edge_step=edge_steps
    )
    assert_close(moved.nodes, out.nodes[node_order], atol=1e-12, rtol=0)
    assert_close(moved.edges, out.edges[edge_order], atol=1e-12, rtol=0)


def test_arguments_that_do_not_apply_raise():
    cell = GRUCell(3, 3)
    h = torch.randn(7, 3)
    e = torch.randn(GRAPH.shape[1], 3)
    sync = Synchronous(2)
    edge_step = _EdgeMLP(3, 3)
    for wrong, match in [
        (dict(inputs=h, state=h), "inputs does not apply to the Synchronous"),
        (dict(state=h, initial=h), "initial does not apply to the Synchronous"),
        (dict(state=h, edge_attr=e), "edge_attr does not apply to the Synchronous"),
        (dict(), "needs every node's initial state"),
        (dict(state=h, edges=e), "need an edge_step"),
        (dict(state=h, edges=e[:3], edge_step=edge_step), "edges have 3 rows but edge_index has 9 edges"),
        (dict(state=h, step=[cell]), "step holds 1 steps, one per round, but the schedule has 2 rounds"),
        (dict(state=h, edges=e, edge_step=[edge_step] * 3), "edge_step holds 3 steps"),
    ]:
        arguments = dict(step=cell, inputs=None) | wrong
        with pytest.raises(ValueError, match=match):
            propagate(arguments.pop("step"), arguments.pop("inputs"), GRAPH, sync, **arguments)
    dag = torch.tensor([[0, 1], [1, 2]])
    x = torch.randn(3, 3)
    for wrong, match in [
        (dict(state=x), "state does not apply to the Topological"),
        (dict(edges=e[:2]), "edges does not apply to the Topological"),
        (dict(edge_step=edge_step), "edge_step does not apply to the Topological"),
        (dict(aggregate=sum_aggregate), "aggregate does not apply to the Topological"),
    ]:
        with pytest.raises(ValueError, match=match):
            propagate(cell, x, dag, Topological(), **wrong)
    with pytest.raises(ValueError, match="one step per round applies to the Synchronous"):
        propagate([cell], x, dag, Topological())
    with pytest.raises(ValueError, match="inputs must be a"):
        propagate(cell, None, dag, Topological())
    with pytest.raises(TypeError, match="schedule must be"):
        propagate(cell, x, dag, "synchronous")
    with pytest.raises(ValueError, match=r"shape \[2, num_edges\]"):
        propagate_rounds(cell, h, GRAPH[0], 1)


@pytest.mark.parametrize(
    ("edge_index", "error", "match"),
    [
        (torch.tensor([[0, 1], [1, 7]]), ValueError, "edge_index refers to node 7, but num_nodes is 7"),
        (torch.tensor([[0, -1], [1, 2]]), ValueError, "edge_index refers to node -1, but num_nodes is 7"),
        (torch.tensor([[0.0, 1.0], [1.0, 2.0]]), TypeError, "edge_index must hold integers, got dtype torch.float32"),
        (torch.tensor([0, 1]), ValueError, r"edge_index must have shape \[2, num_edges\]"),
    ],
)
def test_bad_edge_index_gets_the_same_error_under_both_schedules(edge_index, error, match):
    cell = GRUCell(3, 3)
    h = torch.randn(7, 3)
    with pytest.raises(error, match=match):
        propagate(cell, None, edge_index, Synchronous(1), state=h)
    with pytest.raises(error, match=match):
        propagate(cell, h, edge_index, Topological())


def test_mismatched_devices_name_both_devices():
    cell = GRUCell(3, 3)
    h = torch.randn(7, 3, device="meta")  # a second device without an accelerator
    with pytest.raises(ValueError, match="edge_index is on cpu but the node states are on meta"):
        propagate(cell, None, GRAPH, Synchronous(1), state=h)
    with pytest.raises(ValueError, match="edge_index is on cpu but the node states are on meta"):
        propagate(cell, h, GRAPH, Topological())
    edges = torch.randn(GRAPH.shape[1], 3, device="meta")
    with pytest.raises(ValueError, match="the edge states are on meta but the node states are on cpu"):
        propagate(cell, None, GRAPH, Synchronous(1), state=torch.randn(7, 3), edges=edges, edge_step=_EdgeMLP(3, 3))


# ---------------------------------------------------------------- graph containers, tracing, autocast


def test_a_graph_container_stands_in_for_the_tensors():
    from torch_geometric.data import Data

    torch.manual_seed(0)
    edges = forest_edges([None, 0, 0, 1, 1])
    slots = torch.tensor([0, 1, 0, 1])
    x = torch.randn(5, 3, dtype=torch.double)
    cell = NaryTreeLSTMCell(3, 4).double()
    data = Data(x=x, edge_index=edges, edge_attr=slots)
    expected = propagate(cell, x, edges, Topological(), edge_attr=slots)
    for out in (propagate(cell, data, Topological()), propagate(cell, data, schedule=Topological())):
        assert_close(out, expected, **EXACT)
    # Synchronous: x is the initial state, edge_attr the edges' (read by an edge step).
    h, e = torch.randn(7, 3, dtype=torch.double), torch.randn(GRAPH.shape[1], 2, dtype=torch.double)
    node_step, edge_step = _NodeMLP(2, 3).double(), _EdgeMLP(2, 3).double()
    graph = Data(x=h, edge_index=GRAPH, edge_attr=e)
    out = propagate(node_step, graph, Synchronous(2), edge_step=edge_step)
    reference = propagate(node_step, None, GRAPH, Synchronous(2), state=h, edges=e, edge_step=edge_step)
    assert_close(out.nodes, reference.nodes, **EXACT)
    assert_close(out.edges, reference.edges, **EXACT)
    # Without an edge step the messages are the senders' states; an explicit keyword wins.
    gru = GRUCell(3, 3).double()
    plain = propagate(gru, None, GRAPH, Synchronous(2), state=2 * h).nodes
    assert_close(propagate(gru, graph, Synchronous(2), state=2 * h).nodes, plain, **EXACT)
    with pytest.raises(ValueError, match="edges are its edge_index"):
        propagate(cell, data, edges, Topological())
    with pytest.raises(ValueError, match="give the schedule once"):
        propagate(cell, data, Topological(), Topological())
    with pytest.raises(ValueError, match="needs node inputs as x"):
        propagate(cell, Data(edge_index=edges, num_nodes=5), Topological())
    with pytest.raises(TypeError, match="schedule must be"):
        propagate(cell, data, schedule="topological")


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("make", [ChildSumTreeLSTMCell, ChildSumTreeGRUCell, NaryTreeLSTMCell, LSTMCell, GRUCell])
def test_the_level_loop_from_level_lists_is_the_level_loop(make, reverse):
    """The schedule as index tensors (empty levels past the depth included) gives propagate's states."""
    from structnets.core.propagate import propagate_level_lists
    from structnets.core.schedules import level_lists

    rng = random.Random(3)
    parents = _random_parents(rng, 12, max_children=3) + [None] + [None, 13, 14]  # a tree, a lone node, a chain
    edges = forest_edges(parents)
    children: dict[int, int] = {}
    slots = []
    for p in parents:
        if p is not None:
            slots.append(children.get(p, 0))
            children[p] = children.get(p, 0) + 1
    slots = torch.tensor(slots)
    cell = (make(3, 4, num_children=3) if make is NaryTreeLSTMCell else make(3, 4)).double()
    x = torch.randn(len(parents), 3, dtype=torch.double, requires_grad=True)
    edge_attr = slots if make is NaryTreeLSTMCell else None
    expected = propagate(cell, x, edges, Topological(reverse=reverse), edge_attr=edge_attr)
    depth = topological_levels(edges, len(parents), reverse=reverse).num_levels
    nodes, arriving = level_lists(edges, len(parents), depth + 3, reverse=reverse)
    assert len(nodes) == depth + 3 and len(arriving) == depth + 2 and nodes[-1].numel() == 0
    assert sorted(torch.cat(nodes).tolist()) == list(range(len(parents)))
    out = propagate_level_lists(cell, x, edges, nodes, arriving, edge_attr=edge_attr, reverse=reverse)
    parts = (lambda s: s) if isinstance(expected, tuple) else (lambda s: (s,))
    for a, b in zip(parts(out), parts(expected)):
        assert_close(a, b, **EXACT)
    ours = torch.autograd.grad(sum(p.square().sum() for p in parts(out)), [x, cell.weight_hh])
    theirs = torch.autograd.grad(sum(p.square().sum() for p in parts(expected)), [x, cell.weight_hh])
    for a, b in zip(ours, theirs):
        assert_close(a, b, **EXACT)
    with pytest.raises(ValueError, match="more than the 2 the schedule holds"):
        level_lists(edges, len(parents), 2, reverse=reverse)
    with pytest.raises(ValueError, match="not one less"):
        propagate_level_lists(cell, x, edges, nodes, arriving[:-1], edge_attr=edge_attr)


def test_the_level_loop_compiles_whole_given_its_schedule():
    from structnets.core.propagate import propagate_levels
    from structnets.core.schedules import topological_levels

    torch._dynamo.reset()
    edges = forest_edges([None, 0, 0, 1, 1, 2])
    slots = torch.tensor([0, 1, 0, 1, 0])
    cell = NaryTreeLSTMCell(3, 4)
    x = torch.randn(6, 3, requires_grad=True)
    levels = topological_levels(edges, 6)
    compiled = torch.compile(propagate_levels, fullgraph=True)
    h, c = compiled(cell, x, levels, edge_attr=slots)
    expected_h, expected_c = propagate_levels(cell, x, levels, edge_attr=slots)
    assert_close(h, expected_h)
    assert_close(c, expected_c)
    ours = torch.autograd.grad(h.sum() + c.square().sum(), [x, cell.weight_hh])
    theirs = torch.autograd.grad(expected_h.sum() + expected_c.square().sum(), [x, cell.weight_hh])
    for a, b in zip(ours, theirs):
        assert_close(a, b)


@pytest.mark.parametrize("make", [ChildSumTreeLSTMCell, ChildSumTreeGRUCell, NaryTreeLSTMCell, LSTMCell, GRUCell])
def test_the_level_loop_runs_under_bfloat16_autocast(make):
    """The level loop under CPU bf16 autocast: bf16 results near float32's, gradients in float32."""
    torch.manual_seed(0)
    edges = forest_edges([None, 0, 0, 1, 1, 2, 5])
    slots = torch.tensor([0, 1, 0, 1, 0, 0])
    cell = make(8, 16)
    x = torch.randn(7, 8)
    edge_attr = slots if make is NaryTreeLSTMCell else None
    expected = propagate(cell, x, edges, Topological(), edge_attr=edge_attr)
    initial = None
    if make in (LSTMCell, GRUCell):  # float32 initial states beside bf16 steps
        sources = torch.randn(3, 16)  # the leaves 3, 4 and 6
        initial = (sources, sources.clone()) if make is LSTMCell else sources
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = propagate(cell, x, edges, Topological(), edge_attr=edge_attr)
        with_initial = propagate(cell, x, edges, Topological(), edge_attr=edge_attr, initial=initial)
    first = (lambda s: s[0]) if isinstance(expected, tuple) else (lambda s: s)
    assert first(out).dtype == torch.bfloat16
    assert_close(first(out).float(), first(expected), atol=3e-2, rtol=0)
    assert torch.isfinite(first(with_initial)).all()
    first(out).float().sum().backward()
    assert cell.weight_hh.grad.dtype == torch.float32 and torch.isfinite(cell.weight_hh.grad).all()
