import functools

import pytest
import torch
from torch.testing import assert_close

from structnets.core.cells import (
    ElmanCell,
    GRUCell,
    LSTMCell,
    NaryTreeLSTMCell,
    Nonlinearity,
    gated_update,
)

EXACT = dict(atol=1e-10, rtol=0)
CASES = [
    (
        functools.partial(ElmanCell, nonlinearity=Nonlinearity.TANH),
        functools.partial(torch.nn.RNNCell, nonlinearity="tanh"),
    ),
    (
        functools.partial(ElmanCell, nonlinearity=Nonlinearity.RELU),
        functools.partial(torch.nn.RNNCell, nonlinearity="relu"),
    ),
    (GRUCell, torch.nn.GRUCell),
    (LSTMCell, torch.nn.LSTMCell),
]


def _grads(module):
    # With a zero initial state, structnets skips the recurrent product, so weight_hh gets
    # no gradient where torch computes a zero one.
    return {name: torch.zeros_like(p) if p.grad is None else p.grad for name, p in module.named_parameters()}


def _loss(state):
    parts = state if isinstance(state, tuple) else (state,)
    return sum((p * torch.linspace(-1, 1, p.numel(), dtype=p.dtype).view_as(p)).sum() for p in parts)


@pytest.mark.parametrize("ours_factory, theirs_factory", CASES)
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_matches_torch(ours_factory, theirs_factory, with_state, bias):
    theirs = theirs_factory(5, 7, bias=bias).double()
    ours = ours_factory(5, 7, bias=bias).double()
    ours.load_state_dict(theirs.state_dict())  # same names, shapes and gate order
    x = torch.randn(4, 5, dtype=torch.double, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    hx = None
    if with_state:
        h = torch.randn(4, 7, dtype=torch.double)
        hx = (h, torch.randn(4, 7, dtype=torch.double)) if isinstance(theirs, torch.nn.LSTMCell) else h
    out_ours, out_theirs = ours(x, hx), theirs(x2, hx)
    assert_close(out_ours, out_theirs, **EXACT)
    _loss(out_ours).backward()
    _loss(out_theirs).backward()
    assert_close(x.grad, x2.grad, **EXACT)
    assert_close(_grads(ours), _grads(theirs), **EXACT)


def test_state_dict_moves_both_ways():
    ours = LSTMCell(3, 4)
    theirs = torch.nn.LSTMCell(3, 4)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3)
    assert_close(ours(x), theirs(x))


def test_unbatched_input_like_torch():
    ours, theirs = GRUCell(3, 4).double(), torch.nn.GRUCell(3, 4).double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, dtype=torch.double)
    assert_close(ours(x), theirs(x), **EXACT)


@pytest.mark.parametrize("cell", [ElmanCell, GRUCell, LSTMCell])
def test_orthogonal_initialisation(cell):
    made = cell(6, 8, orthogonal=True).double()
    for block in made.weight_hh.split(8, 0):
        assert_close(block.T @ block, torch.eye(8, dtype=torch.double), atol=1e-6, rtol=0)
    plain = cell(6, 8)
    block = plain.weight_hh[:8]
    assert not torch.allclose(block.T @ block, torch.eye(8), atol=1e-2)


def test_gated_update_formula():
    z, h_prev, h_bar = torch.rand(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    assert_close(gated_update(z, h_prev, h_bar), z * h_prev + (1 - z) * h_bar)
    assert_close(gated_update(torch.ones(5, 3), h_prev, h_bar), h_prev)
    assert_close(gated_update(torch.zeros(5, 3), h_prev, h_bar), h_bar)
    # Mixed dtypes (a float32 state beside bfloat16 gates under autocast) promote, as * and + do.
    mixed = gated_update(z.bfloat16(), h_prev, h_bar.bfloat16())
    assert mixed.dtype == torch.float32
    assert_close(mixed, z.bfloat16().float() * h_prev + (1 - z.bfloat16().float()) * h_bar.bfloat16().float())


def test_nary_with_one_slot_is_the_lstm():
    nary = NaryTreeLSTMCell(5, 7, num_children=1).double()
    lstm = torch.nn.LSTMCell(5, 7).double()
    nary.load_state_dict(lstm.state_dict())
    x = torch.randn(3, 5, dtype=torch.double)
    h, c = torch.randn(3, 7, dtype=torch.double), torch.randn(3, 7, dtype=torch.double)
    assert_close(nary(x, (h.unsqueeze(1), c.unsqueeze(1))), lstm(x, (h, c)), **EXACT)


def test_wrong_feature_size_is_a_clear_error():
    with pytest.raises(ValueError, match="expects input features of size 5"):
        LSTMCell(5, 7)(torch.randn(2, 6))


def test_bad_sizes_and_nonlinearity():
    with pytest.raises(ValueError, match="must be positive"):
        GRUCell(0, 3)
    with pytest.raises(TypeError, match="Nonlinearity"):
        ElmanCell(2, 3, nonlinearity="tanh")
