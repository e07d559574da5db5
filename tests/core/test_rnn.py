import functools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.testing import assert_close

from structnets import RNN, GRUCell, LSTMCell
from structnets.core.cells import ElmanCell, Nonlinearity

EXACT = dict(atol=1e-10, rtol=0)
REFERENCES = [
    functools.partial(torch.nn.LSTM),
    functools.partial(torch.nn.GRU),
    functools.partial(torch.nn.RNN, nonlinearity="tanh"),
    functools.partial(torch.nn.RNN, nonlinearity="relu"),
]


def _reference_run(ref, x, lengths, hx):
    packed = pack_padded_sequence(x, lengths, batch_first=ref.batch_first, enforce_sorted=False)
    out, h_n = ref(packed, hx)
    out, _ = pad_packed_sequence(out, batch_first=ref.batch_first, total_length=x.shape[1 if ref.batch_first else 0])
    return out, h_n


def _weighted(out, h_n):
    parts = (out,) + (h_n if isinstance(h_n, tuple) else (h_n,))
    return sum((p * torch.linspace(-1, 1, p.numel(), dtype=p.dtype).view_as(p)).sum() for p in parts)


PATHS = {"fused kernels": (True, True), "level loop": (False, True), "level loop, autograd cell": (False, False)}
# fuse_cell changes only LSTM cells, so the autograd-cell path is checked for the LSTM alone.
CASES = [(r, p) for r in REFERENCES for p in PATHS if PATHS[p][1] or r.func is torch.nn.LSTM]


@pytest.mark.parametrize("reference, path", CASES)
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("with_state", [False, True])
def test_rnn_matches_torch(reference, path, batch_first, with_state):
    fused, fuse_cell = PATHS[path]
    ref = reference(5, 6, num_layers=2, bidirectional=True, batch_first=batch_first).double()
    ours = RNN.from_torch(ref, fused=fused, fuse_cell=fuse_cell)
    assert ours.uses_fused_kernel == fused
    lengths = torch.tensor([3, 7, 1, 5, 7])
    shape = (5, 7, 5) if batch_first else (7, 5, 5)
    x = torch.randn(*shape, dtype=torch.double, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    hx = None
    if with_state:
        h0 = torch.randn(4, 5, 6, dtype=torch.double)
        hx = (h0, torch.randn(4, 5, 6, dtype=torch.double)) if isinstance(ref, torch.nn.LSTM) else h0
    out, h_n = ours(x, lengths, hx)
    out_ref, h_ref = _reference_run(ref, x_ref, lengths, hx)
    assert_close(out, out_ref, **EXACT)
    assert_close(h_n, h_ref, **EXACT)
    _weighted(out, h_n).backward()
    _weighted(out_ref, h_ref).backward()
    assert_close(x.grad, x_ref.grad, **EXACT)
    theirs = dict(ref.named_parameters())
    for name, mine in ours.torch_state_dict(keep_vars=True).items():
        assert_close(mine.grad, theirs[name].grad, **EXACT, msg=name)


@pytest.mark.parametrize("fused", [True, False])
def test_padded_positions_are_zero(fused):
    rnn = RNN(3, 4, cell=GRUCell, batch_first=True, bidirectional=True, fused=fused)
    out, _ = rnn(torch.randn(3, 6, 3), torch.tensor([6, 2, 4]))
    assert out[1, 2:].abs().sum() == 0 and out[2, 4:].abs().sum() == 0
    assert out[1, :2].abs().sum() > 0


@pytest.mark.parametrize("fused", [True, False])
def test_packed_sequence_input(fused):
    ref = torch.nn.LSTM(4, 5, num_layers=2).double()
    ours = RNN.from_torch(ref, fused=fused)
    x = torch.randn(6, 3, 4, dtype=torch.double)
    packed = pack_padded_sequence(x, torch.tensor([2, 6, 4]), enforce_sorted=False)
    out, (h, c) = ours(packed)
    out_ref, (h_ref, c_ref) = ref(packed)
    assert_close(out.data, out_ref.data, **EXACT)
    assert_close((h, c), (h_ref, c_ref), **EXACT)


def test_full_length_batch_without_lengths():
    ref = torch.nn.GRU(3, 4).double()
    x = torch.randn(5, 2, 3, dtype=torch.double)
    for fused in (True, False):
        out, h = RNN.from_torch(ref, fused=fused)(x)
        out_ref, h_ref = ref(x)
        assert_close(out, out_ref, **EXACT)
        assert_close(h, h_ref, **EXACT)


@pytest.mark.parametrize("reference", REFERENCES)
def test_to_torch_round_trip(reference):
    ours = RNN(3, 4, num_layers=2, bidirectional=True, cell=LSTMCell)
    if reference.func is not torch.nn.LSTM:
        cell = (
            GRUCell
            if reference.func is torch.nn.GRU
            else functools.partial(ElmanCell, nonlinearity=Nonlinearity(reference.keywords["nonlinearity"]))
        )
        ours = RNN(3, 4, num_layers=2, bidirectional=True, cell=cell)
    back = ours.to_torch()
    assert isinstance(back, reference.func)
    x = torch.randn(5, 2, 3)
    assert_close(back(x)[0], ours(x)[0])
    again = RNN.from_torch(back, fused=False)
    assert_close(again(x)[0], ours(x)[0])


def test_custom_cell_runs_the_level_loop():
    class Doubled(GRUCell):
        """A user cell: not a plain GRU, so no fused kernel applies."""

        def step(self, projected, hx):
            return 0.5 * super().step(projected, hx)

    rnn = RNN(3, 4, cell=Doubled)
    assert not rnn.uses_fused_kernel
    out, h = rnn(torch.randn(5, 2, 3), torch.tensor([5, 3]))
    assert out.shape == (5, 2, 4) and h.shape == (1, 2, 4)
    with pytest.raises(TypeError, match="torch.nn equivalent"):
        rnn.to_torch()


def test_dropout_between_layers_only_in_training():
    rnn = RNN(3, 4, num_layers=2, dropout=0.5, fused=False)
    x = torch.randn(5, 2, 3)
    rnn.eval()
    assert_close(rnn(x)[0], rnn(x)[0])
    rnn.train()
    torch.manual_seed(1)
    a = rnn(x)[0]
    torch.manual_seed(2)
    assert not torch.allclose(a, rnn(x)[0])


@pytest.mark.parametrize(
    "make_input, lengths, message",
    [
        (lambda: torch.randn(5, 2, 4), None, "expected 3 input features, got 4"),
        (lambda: torch.randn(5, 2, 3), torch.tensor([0, 3]), "sequence 0 has length 0"),
        (lambda: torch.randn(5, 2, 3), torch.tensor([3, -1]), "sequence 1 has length -1"),
        (lambda: torch.randn(5, 2, 3), torch.tensor([6, 3]), "longer than the padded batch"),
        (lambda: torch.randn(5, 0, 3), None, "empty batch"),
        (lambda: torch.randn(5, 2, 3), torch.tensor([3, 2, 1]), "one entry per sequence"),
        (lambda: torch.randn(5, 2, 3), torch.tensor([3.0, 2.0]), "must be integers"),
        (lambda: torch.randn(2, 3), None, "3 dimensions"),
    ],
)
@pytest.mark.parametrize("fused", [True, False])
def test_bad_input_is_a_clear_error(make_input, lengths, message, fused):
    rnn = RNN(3, 4, fused=fused)
    with pytest.raises((ValueError, TypeError), match=message):
        rnn(make_input(), lengths)


def test_bad_initial_state():
    rnn = RNN(3, 4, cell=LSTMCell)
    with pytest.raises(ValueError, match="tuple"):
        rnn(torch.randn(5, 2, 3), hx=torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"shape \(1, 2, 4\)"):
        rnn(torch.randn(5, 2, 3), hx=(torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)))
