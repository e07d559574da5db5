"""The fused LSTM level loop against the autograd one, and its backward against gradcheck."""

import functools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from structnets import LSTMCell, topological_levels
from structnets.core.fused import FusedLSTMLevels
from structnets.core.propagate import run_levels

EXACT = dict(atol=1e-10, rtol=0)


def _dag(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    pairs = torch.combinations(torch.arange(n), 2) if n > 1 else torch.zeros(0, 2, dtype=torch.long)
    keep = pairs[torch.rand(len(pairs), generator=generator) < 0.3]
    relabel = torch.randperm(n, generator=generator)
    return relabel[keep.t()].reshape(2, -1)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 16), st.integers(0, 10_000), st.booleans())
def test_fused_matches_autograd_loop_on_random_dags(n, seed, with_initial):
    torch.manual_seed(seed)
    edge_index = _dag(n, seed)
    levels = topological_levels(edge_index, n)
    cell = LSTMCell(3, 4).double()
    x = torch.randn(n, 3, dtype=torch.double)
    initial = None
    if with_initial:
        sources = levels.sizes[0]
        initial = (torch.randn(sources, 4, dtype=torch.double), torch.randn(sources, 4, dtype=torch.double))
    weights = [torch.randn(n, 4, dtype=torch.double) for _ in range(2)]

    def run(fuse):
        cell.zero_grad()
        h, c = run_levels(cell, x, levels, initial=initial, fuse_cell=fuse)
        ((h * weights[0]).sum() + (c * weights[1]).sum()).backward()
        grads = {name: torch.zeros_like(p) if p.grad is None else p.grad.clone() for name, p in cell.named_parameters()}
        return h, c, grads

    h1, c1, g1 = run(True)
    h2, c2, g2 = run(False)
    assert_close(h1, h2, **EXACT)
    assert_close(c1, c2, **EXACT)
    for name in g1:
        assert_close(g1[name], g2[name], **EXACT, msg=name)


def test_gradcheck_with_gathers_and_initial_state():
    edge_index = torch.tensor([[0, 1, 2, 0, 3, 4], [2, 2, 3, 3, 5, 5]])  # sums and skips levels
    levels = topological_levels(edge_index, 6)
    projected = torch.randn(6, 12, dtype=torch.double, requires_grad=True)
    weight = torch.randn(12, 3, dtype=torch.double, requires_grad=True)
    sources = levels.sizes[0]
    h0 = torch.randn(sources, 3, dtype=torch.double, requires_grad=True)
    c0 = torch.randn(sources, 3, dtype=torch.double, requires_grad=True)
    apply = functools.partial(FusedLSTMLevels.apply, levels=levels)
    assert torch.autograd.gradcheck(lambda p, w, h, c: apply(p, w, h, c), (projected, weight, h0, c0))
    assert torch.autograd.gradcheck(lambda p, w: apply(p, w, None, None), (projected, weight))
