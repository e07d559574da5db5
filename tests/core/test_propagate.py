import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from structnets import ChildSumTreeGRUCell, ChildSumTreeLSTMCell, NaryTreeLSTMCell, Topological, propagate
from structnets.graphs.chains import forest_edges

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
