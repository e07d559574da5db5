"""``sn.RNN`` against torch.nn.LSTM/GRU/RNN, called as torch's are: ``rnn(input, hx)``.

What torch's own RNN tests check (argument checks, initial states, parity with and without
variable lengths, packed sequences sorted or not, dropout between layers, projections,
unbatched and empty batches), here run against both of structnets' schedules: torch's fused
kernels and the generic level loop. Then what torch.nn does not do: torch.export and ONNX
with dynamic batch, time and lengths, and torch.compile with gradients.
"""

import functools
import warnings

import pytest
import torch
from torch.export import Dim
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence, pad_packed_sequence
from torch.testing import assert_close

import structnets.core.rnn as rnn_module
from structnets import RNN, ElmanCell, GRUCell, LSTMCell
from structnets.core.rnn import ProjectedLSTMCell, RNNArgumentError, RNNCallError

EXACT = dict(atol=1e-10, rtol=0)
FLOAT = dict(atol=2e-6, rtol=1e-5)

KINDS = {
    "lstm": torch.nn.LSTM,
    "lstm-proj": functools.partial(torch.nn.LSTM, proj_size=2),
    "gru": torch.nn.GRU,
    "rnn-tanh": functools.partial(torch.nn.RNN, nonlinearity="tanh"),
    "rnn-relu": functools.partial(torch.nn.RNN, nonlinearity="relu"),
}
MODES = {"fused": dict(fused=True), "loop": dict(fused=False), "loop-autograd": dict(fused=False, fuse_cell=False)}
# fuse_cell changes only plain LSTM cells, so the autograd-cell loop is checked for the LSTM alone.
KIND_MODES = [(k, m) for k in KINDS for m in MODES if m != "loop-autograd" or k == "lstm"]
LENGTHS = torch.tensor([3, 5, 1, 4])  # batch 4, time 5, unsorted


def _pair(kind, mode, dtype=torch.double, **options):
    options = dict(dict(input_size=3, hidden_size=4, num_layers=2), **options)
    reference = KINDS[kind](**options).to(dtype)
    ours = RNN.from_torch(reference, **MODES[mode])
    assert ours.uses_fused_kernel == (mode == "fused")
    return reference, ours


def _state(rnn, batch, unbatched=False):
    layers = rnn.num_layers * rnn.num_directions
    shape = (layers,) if unbatched else (layers, batch)
    h = torch.randn(*shape, rnn.proj_size or rnn.hidden_size, dtype=torch.double)
    if not rnn.state_is_tuple:
        return h
    return h, torch.randn(*shape, rnn.hidden_size, dtype=torch.double)


def _clone(state, grad=True):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(_clone(s, grad) for s in state)
    return state.detach().clone().requires_grad_(grad)


def _tensors(state):
    return list(state) if isinstance(state, tuple) else [state]


def _weighted(out, h_n):
    """A loss that weighs every element differently, so gradients tell positions apart."""
    parts = [out] + _tensors(h_n)
    return sum((p * torch.linspace(-1, 1, p.numel(), dtype=p.dtype).view_as(p)).sum() for p in parts)


def _torch_padded(reference, x, hx, lengths):
    """torch.nn's way to variable lengths: pack, run, pad."""
    if lengths is None:
        return reference(x, hx)
    steps = x.shape[1 if reference.batch_first else 0]
    packed = pack_padded_sequence(x, lengths, batch_first=reference.batch_first, enforce_sorted=False)
    out, h_n = reference(packed, hx)
    return pad_packed_sequence(out, batch_first=reference.batch_first, total_length=steps)[0], h_n


def _assert_grads_match(ours, reference):
    theirs = dict(reference.named_parameters())
    for name, mine in ours.torch_state_dict(keep_vars=True).items():
        assert_close(mine.grad, theirs[name].grad, **EXACT, msg=name)


# ---------------------------------------------------------------- parity with torch.nn
@pytest.mark.parametrize("kind, mode", KIND_MODES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-first", "batch-first"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_matches_torch(kind, mode, bias, bidirectional, batch_first, lengths):
    reference, ours = _pair(kind, mode, bias=bias, bidirectional=bidirectional, batch_first=batch_first)
    x = torch.randn(*((4, 5, 3) if batch_first else (5, 4, 3)), dtype=torch.double, requires_grad=True)
    x_ref = _clone(x)
    # The state goes second and positionally, as torch.nn takes it; half the cases start from zeros.
    hx = _state(ours, 4) if bidirectional != bias else None
    hx, hx_ref = _clone(hx), _clone(hx)
    out, h_n = ours(x, hx, lengths=lengths)
    out_ref, h_ref = _torch_padded(reference, x_ref, hx_ref, lengths)
    assert_close(out, out_ref, **EXACT)
    assert_close(h_n, h_ref, **EXACT)
    _weighted(out, h_n).backward()
    _weighted(out_ref, h_ref).backward()
    assert_close(x.grad, x_ref.grad, **EXACT)
    if hx is not None:
        for mine, theirs in zip(_tensors(hx), _tensors(hx_ref)):
            assert_close(mine.grad, theirs.grad, **EXACT)
    _assert_grads_match(ours, reference)


@pytest.mark.parametrize("kind, mode", KIND_MODES)
@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
def test_variable_sequences_as_packed_sequence(kind, mode, enforce_sorted):
    """torch's test_variable_sequence: a PackedSequence against torch and against each
    sequence run on its own, with the initial states permuted like the batch."""
    reference, ours = _pair(kind, mode, bidirectional=True)
    sizes = [5, 4, 4, 2, 1] if enforce_sorted else [2, 5, 1, 4, 4]
    sequences = [torch.randn(n, 3, dtype=torch.double) for n in sizes]
    hx = _state(ours, len(sizes))
    leaves = [_clone(s) for s in sequences]
    packed = pack_sequence(leaves, enforce_sorted=enforce_sorted)
    out, h_n = ours(packed, hx)
    assert isinstance(out, type(packed)) and torch.equal(out.batch_sizes, packed.batch_sizes)
    out_ref, h_ref = reference(pack_sequence(sequences, enforce_sorted=enforce_sorted), hx)
    assert_close(out.data, out_ref.data, **EXACT)
    assert_close(h_n, h_ref, **EXACT)
    padded, _ = pad_packed_sequence(out)
    for j, sequence in enumerate(sequences):  # one at a time, unbatched, from its own state
        own_state = tuple(s[:, j] for s in hx) if isinstance(hx, tuple) else hx[:, j]
        alone, alone_h = ours(sequence, own_state)
        assert_close(padded[: sizes[j], j], alone, **EXACT)
        assert_close(padded[sizes[j] :, j].abs().sum().item(), 0.0)
        for mine, theirs in zip(_tensors(h_n), _tensors(alone_h)):
            assert_close(mine[:, j], theirs, **EXACT)
    _weighted(out.data, h_n).backward()
    grads = [leaf.grad for leaf in leaves]
    references = [_clone(s) for s in sequences]
    again, again_h = reference(pack_sequence(references, enforce_sorted=enforce_sorted), hx)
    _weighted(again.data, again_h).backward()
    for mine, theirs in zip(grads, references):
        assert_close(mine, theirs.grad, **EXACT)


@pytest.mark.parametrize("kind, mode", [(k, m) for k, m in KIND_MODES if m != "loop-autograd"])
def test_initial_hidden_state(kind, mode):
    """torch's test_rnn_initial_hidden_state: zeros passed as hx are no state at all."""
    _, ours = _pair(kind, mode, bidirectional=True)
    x = torch.randn(5, 4, 3, dtype=torch.double)
    zeros = _state(ours, 4)
    zeros = tuple(torch.zeros_like(z) for z in zeros) if isinstance(zeros, tuple) else torch.zeros_like(zeros)
    for lengths in (None, LENGTHS):
        out, h_n = ours(x, lengths=lengths)
        out_zero, h_zero = ours(x, zeros, lengths=lengths)
        assert_close(out, out_zero, **EXACT)
        assert_close(h_n, h_zero, **EXACT)


@pytest.mark.parametrize("kind, mode", [(k, m) for k, m in KIND_MODES if m != "loop-autograd"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-first", "batch-first"])
def test_unbatched_input(kind, mode, batch_first):
    reference, ours = _pair(kind, mode, bidirectional=True, batch_first=batch_first)
    x = torch.randn(5, 3, dtype=torch.double)
    for hx in (None, _state(ours, 1, unbatched=True)):
        out, h_n = ours(x, hx)
        out_ref, h_ref = reference(x, hx)
        assert out.shape == out_ref.shape == (5, 2 * (ours.proj_size or 4))
        assert_close(out, out_ref, **EXACT)
        assert_close(h_n, h_ref, **EXACT)
    with pytest.raises(RuntimeError, match="unbatched 2-D input, hx should also be 2-D"):
        ours(x, _state(ours, 1))  # a batched state for an unbatched input
    with pytest.raises(RuntimeError, match="batched 3-D input, hx should also be 3-D"):
        ours(x.unsqueeze(1), _state(ours, 1, unbatched=True))


@pytest.mark.parametrize("kind, mode", [(k, m) for k, m in KIND_MODES if m != "loop-autograd"])
def test_zero_batch_like_torch(kind, mode):
    """torch's test_RNN_input_size_zero: an empty batch gives empty outputs and zero gradients."""
    reference, ours = _pair(kind, mode, bidirectional=True)
    x = torch.zeros(5, 0, 3, dtype=torch.double, requires_grad=True)
    x_ref = _clone(x)
    out, h_n = ours(x)
    out_ref, h_ref = reference(x_ref)
    assert out.shape == out_ref.shape
    assert [t.shape for t in _tensors(h_n)] == [t.shape for t in _tensors(h_ref)]
    out.sum().backward()
    out_ref.sum().backward()
    assert x.grad.shape == x_ref.grad.shape == (5, 0, 3)
    _assert_grads_match(ours, reference)  # zeros, like torch's
    out, h_n = ours(x, lengths=torch.zeros(0, dtype=torch.long))
    assert out.shape == out_ref.shape


def test_padded_positions_are_zero():
    for fused in (True, False):
        rnn = RNN(3, 4, cell=GRUCell, batch_first=True, bidirectional=True, fused=fused)
        out, _ = rnn(torch.randn(3, 6, 3), lengths=torch.tensor([6, 2, 4]))
        assert out[1, 2:].abs().sum() == 0 and out[2, 4:].abs().sum() == 0
        assert out[1, :2].abs().sum() > 0


# ---------------------------------------------------------------- projections
@pytest.mark.parametrize("mode", ["fused", "loop"])
def test_projections_shapes_and_state_checks(mode):
    """torch's test_projections_lstm_args_check and _initial_hidden_state."""
    reference, ours = _pair("lstm-proj", mode, bidirectional=True)
    assert all(isinstance(cell, ProjectedLSTMCell) for cell in ours.cells)
    assert [tuple(w.shape) for w in ours.all_weights[2]] == [tuple(w.shape) for w in reference.all_weights[2]]
    x = torch.randn(5, 4, 3, dtype=torch.double)
    out, (h, c) = ours(x)
    assert out.shape == (5, 4, 4) and h.shape == (4, 4, 2) and c.shape == (4, 4, 4)
    zeros = (torch.zeros(4, 4, 2, dtype=torch.double), torch.zeros(4, 4, 4, dtype=torch.double))
    assert_close(ours(x, zeros)[0], out, **EXACT)
    for h_shape, c_shape in [((4, 4, 4), (4, 4, 4)), ((4, 4, 2), (4, 4, 2)), ((3, 4, 2), (4, 4, 4))]:
        bad = (torch.zeros(h_shape, dtype=torch.double), torch.zeros(c_shape, dtype=torch.double))
        with pytest.raises(RuntimeError) as ours_error:
            ours(x, bad)
        with pytest.raises(RuntimeError):
            reference(x, bad)
        assert isinstance(ours_error.value, RNNArgumentError)
    assert isinstance(ours.to_torch(), torch.nn.LSTM) and ours.to_torch().proj_size == 2


# ---------------------------------------------------------------- argument checks
def _bad_calls(rnn):
    """(description, call) pairs that torch.nn's RNNs refuse too."""
    x = torch.randn(5, 2, 3, dtype=torch.double)
    layers, out = rnn.num_layers * rnn.num_directions, rnn.proj_size or rnn.hidden_size

    def state(h_shape, c_shape=None):
        h = torch.zeros(h_shape, dtype=torch.double)
        return (
            (h, torch.zeros(c_shape or (layers, 2, rnn.hidden_size), dtype=torch.double)) if rnn.state_is_tuple else h
        )

    return [
        ("input size", lambda m: m(torch.randn(5, 2, 4, dtype=torch.double))),
        ("1-D input", lambda m: m(torch.randn(5, dtype=torch.double))),
        ("4-D input", lambda m: m(torch.randn(1, 5, 2, 3, dtype=torch.double))),
        ("no time steps", lambda m: m(torch.randn(0, 2, 3, dtype=torch.double))),
        ("dtype", lambda m: m(x.float())),
        ("hx batch", lambda m: m(x, state((layers, 3, out)))),
        ("hx layers", lambda m: m(x, state((layers + 1, 2, out)))),
        ("hx size", lambda m: m(x, state((layers, 2, out + 1)))),
        ("hx dims", lambda m: m(x, state((layers, out), (layers, rnn.hidden_size)))),
    ] + (
        [("c batch", lambda m: m(x, state((layers, 2, out), (layers, 3, rnn.hidden_size))))]
        if rnn.state_is_tuple
        else []
    )


@pytest.mark.parametrize("kind, mode", [(k, m) for k, m in KIND_MODES if m != "loop-autograd"])
def test_argument_checks_raise_torch_types(kind, mode):
    """torch's test_rnn_args_check: whatever torch raises, ours is an instance of it."""
    reference, ours = _pair(kind, mode, bidirectional=True)
    for name, call in _bad_calls(ours):
        with pytest.raises(Exception) as theirs:
            call(reference)
        with pytest.raises(Exception) as mine:
            call(ours)
        assert isinstance(mine.value, type(theirs.value)), f"{name}: torch raised {theirs.value!r}, ours {mine.value!r}"
        assert isinstance(mine.value, (RNNArgumentError, RNNCallError)), name


@pytest.mark.parametrize("fused", [True, False])
def test_lengths_as_second_argument_is_refused(fused):
    """The old call rnn(x, lengths): torch.nn puts hx there, so integers there are an error."""
    rnn = RNN(3, 4, fused=fused)
    x = torch.randn(5, 2, 3)
    for lengths in (torch.tensor([5, 3]), torch.tensor([5, 3], dtype=torch.int32), [5, 3]):
        with pytest.raises(RNNCallError, match="pass lengths=... as a keyword") as error:
            rnn(x, lengths)
        assert isinstance(error.value, TypeError) and isinstance(error.value, RuntimeError)
    with pytest.raises(TypeError):
        rnn(x, None, torch.tensor([5, 3]))  # lengths is keyword-only
    assert rnn(x, lengths=torch.tensor([5, 3]))[0].shape == (5, 2, 4)


@pytest.mark.parametrize(
    "make_input, lengths, message",
    [
        (lambda: torch.randn(5, 2, 3), torch.tensor([0, 3]), "sequence 0 has length 0"),
        (lambda: torch.randn(5, 2, 3), torch.tensor([3, -1]), "sequence 1 has length -1"),
        (lambda: torch.randn(5, 2, 3), torch.tensor([6, 3]), "longer than the padded batch"),
        (lambda: torch.randn(5, 2, 3), torch.tensor([3, 2, 1]), "one entry per sequence"),
        (lambda: torch.randn(5, 2, 3), torch.tensor([3.0, 2.0]), "must be integers"),
        (lambda: torch.randn(5, 3), torch.tensor([3]), "unbatched"),
        (lambda: pack_sequence([torch.randn(3, 3)]), torch.tensor([3]), "PackedSequence carries its own"),
    ],
)
@pytest.mark.parametrize("fused", [True, False])
def test_bad_lengths_are_clear_errors(make_input, lengths, message, fused):
    rnn = RNN(3, 4, fused=fused)
    with pytest.raises((ValueError, TypeError), match=message) as error:
        rnn(make_input(), lengths=lengths)
    assert isinstance(error.value, RuntimeError)


def test_state_kind_errors():
    lstm, gru = RNN(3, 4, cell=LSTMCell), RNN(3, 4, cell=GRUCell)
    x = torch.randn(5, 2, 3)
    with pytest.raises(RuntimeError, match="tuple"):
        lstm(x, torch.zeros(1, 2, 4))
    with pytest.raises(RuntimeError, match=r"size \(1, 2, 4\), got \[1, 3, 4\]"):
        lstm(x, (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)))
    with pytest.raises(RuntimeError, match="single tensor"):
        gru(x, (torch.zeros(1, 2, 4),))
    with pytest.raises(TypeError, match="tensor or a tuple"):
        gru(x, "state")


@pytest.mark.parametrize(
    "options, error",
    [
        (dict(dropout=1.5), ValueError),
        (dict(dropout=-0.1), ValueError),
        (dict(dropout=True), ValueError),
        (dict(num_layers=0), ValueError),
        (dict(hidden_size=0), ValueError),
        (dict(hidden_size=4.0), TypeError),
        (dict(num_layers=1.5), TypeError),
        (dict(bias=1), TypeError),
        (dict(batch_first="yes"), TypeError),
        (dict(proj_size=-1), ValueError),
        (dict(proj_size=4), ValueError),
    ],
)
def test_constructor_checks_like_torch(options, error):
    arguments = dict(dict(input_size=3, hidden_size=4), **options)
    with pytest.raises(error):
        torch.nn.LSTM(**arguments)
    with pytest.raises(error):
        RNN(**arguments)


def test_constructor_options():
    with pytest.raises(ValueError, match="only supported for LSTM"):
        RNN(3, 4, cell=GRUCell, proj_size=2)
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        RNN(3, 4, cell=ElmanCell, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="Elman"):
        RNN(3, 4, nonlinearity="relu")  # the default cell is an LSTM
    relu = RNN(3, 4, cell=ElmanCell, nonlinearity="relu")
    assert relu.nonlinearity == "relu" and relu.to_torch().nonlinearity == "relu"
    assert RNN(3, 4, cell=ElmanCell).nonlinearity == "tanh"
    # torch's positional order: input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional
    positional = RNN(3, 4, 2, False, True, 0.25, True)
    assert (positional.bias, positional.batch_first, positional.dropout, positional.bidirectional) == (
        False,
        True,
        0.25,
        True,
    )
    assert RNN(3, 4, dtype=torch.float64).cells[0].weight_ih.dtype == torch.float64
    assert RNN(3, 4, device="meta").cells[0].weight_ih.is_meta
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        RNN(3, 4, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RNN(3, 4, 2, dropout=0.5)


# ---------------------------------------------------------------- dropout
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("p", [0.0, 0.276, 0.731, 1.0])
@pytest.mark.parametrize("train", [True, False])
def test_dropout_between_layers(fused, p, train):
    """torch's test_RNN_dropout: ones everywhere, so layer 2 counts the units layer 1 kept."""
    rnn = RNN(10, 100, 2, False, dropout=p, cell=ElmanCell, nonlinearity="relu", fused=fused)
    with torch.no_grad():
        for weight in rnn.parameters():
            weight.fill_(1)
    rnn.train(train)
    output, h_n = rnn(torch.ones(1, 1, 10), torch.zeros(2, 1, 100))
    value = output[0, 0, 0].item()
    if p == 0 or not train:
        assert value == 1000  # 100 units of relu(10), all kept
    elif p == 1:
        assert value == 0
    else:
        assert value > 0
        kept = value * (1 - p) / 10  # an integer count of kept units
        assert abs(kept - round(kept)) < 1e-2
    assert h_n[0].min() == h_n[0].max() == 10
    assert h_n[1].min() == h_n[1].max() == value


@pytest.mark.parametrize("fused", [True, False])
def test_dropout_state_and_changes(fused):
    """torch's test_RNN_dropout_state and test_RNN_change_dropout."""
    rnn = RNN(3, 50, 2, dropout=0.5, fused=fused)
    x = torch.randn(4, 2, 3)
    torch.manual_seed(7)
    first = rnn(x)[0]
    torch.manual_seed(7)
    assert torch.equal(rnn(x)[0], first)  # same seed, same mask
    torch.manual_seed(8)
    assert not torch.equal(rnn(x)[0], first)
    rnn.eval()
    assert torch.equal(rnn(x)[0], rnn(x)[0])
    rnn.train()
    rnn.dropout = 0.0
    assert torch.equal(rnn(x)[0], rnn.eval()(x)[0])


# ---------------------------------------------------------------- interop
@pytest.mark.parametrize("kind", list(KINDS))
def test_to_torch_round_trip(kind):
    reference = KINDS[kind](3, 4, num_layers=2, bidirectional=True)
    ours = RNN.from_torch(reference)
    back = ours.to_torch()
    assert type(back) is type(reference)
    x = torch.randn(5, 2, 3)
    assert_close(back(x)[0], ours(x)[0])
    again = RNN.from_torch(back, fused=False)
    assert_close(again(x)[0], ours(x)[0])
    assert [tuple(w.shape) for ws in ours.all_weights for w in ws] == [
        tuple(w.shape) for ws in reference.all_weights for w in ws
    ]


def test_custom_cell_runs_the_level_loop():
    class Doubled(GRUCell):
        """A user cell: not a plain GRU, so no fused kernel applies."""

        def step(self, projected, hx):
            return 0.5 * super().step(projected, hx)

    rnn = RNN(3, 4, cell=Doubled)
    assert not rnn.uses_fused_kernel
    out, h = rnn(torch.randn(5, 2, 3), lengths=torch.tensor([5, 3]))
    assert out.shape == (5, 2, 4) and h.shape == (1, 2, 4)
    with pytest.raises(TypeError, match="torch.nn equivalent"):
        rnn.to_torch()


@pytest.mark.parametrize("fused", [True, False])
def test_flatten_parameters_is_harmless_on_cpu(fused):
    rnn = RNN(3, 4, 2, bidirectional=True, fused=fused)
    x = torch.randn(5, 2, 3)
    before = rnn(x)[0]
    parameters = [(p, p.data_ptr()) for p in rnn.parameters()]
    assert rnn.flatten_parameters() is None
    assert [(p, p.data_ptr()) for p in rnn.parameters()] == parameters
    assert torch.equal(rnn(x)[0], before)
    rnn.double()  # .to() flattens again, as torch.nn.RNNBase does
    assert rnn(x.double())[0].dtype == torch.double


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN's weight layout needs a GPU")
@pytest.mark.parametrize("kind", ["lstm", "lstm-proj", "gru"])
def test_flatten_parameters_gives_cudnn_one_block(kind):
    reference = KINDS[kind](3, 8, num_layers=2, bidirectional=True)
    ours = RNN.from_torch(reference).cuda()
    weights = ours._kernel_weights()
    storage = weights[0].untyped_storage().data_ptr()
    assert all(w.untyped_storage().data_ptr() == storage for w in weights)  # views of one buffer
    x = torch.randn(5, 2, 3, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "not part of a single contiguous chunk of memory"
        out, _ = ours(x)
        out.sum().backward()
    assert_close(out, reference.cuda()(x)[0])


# ---------------------------------------------------------------- torch.export, ONNX, torch.compile
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_masked_schedule_matches(monkeypatch, kind, bidirectional, lengths):
    """The schedule that torch.export traces (a mask instead of packing), run eagerly."""
    reference, ours = _pair(kind, "loop", bidirectional=bidirectional, batch_first=True)
    x = torch.randn(4, 5, 3, dtype=torch.double, requires_grad=True)
    x_ref = _clone(x)
    hx = _state(ours, 4)
    expected = _torch_padded(reference, x_ref, hx, lengths)
    monkeypatch.setattr(rnn_module, "_exporting", lambda: True)
    out, h_n = ours(x, hx, lengths=lengths)
    assert_close(out, expected[0], **EXACT)
    assert_close(h_n, expected[1], **EXACT)
    _weighted(out, h_n).backward()
    _weighted(*expected).backward()
    assert_close(x.grad, x_ref.grad, **EXACT)


class _WithLengths(torch.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, h0, c0, lengths):
        return self.rnn(x, (h0, c0), lengths=lengths)


def _exportable(mode, **options):
    torch.manual_seed(0)
    rnn = RNN(3, 5, 2, True, True, 0.0, True, **MODES[mode], **options).eval()
    batch, steps = Dim("batch", min=1, max=1024), Dim("steps", min=1, max=4096)
    example = (torch.randn(2, 4, 3), torch.randn(4, 2, rnn.output_size), torch.randn(4, 2, 5), torch.tensor([4, 2]))
    shapes = ({0: batch, 1: steps}, {1: batch}, {1: batch}, {0: batch})
    # Other batch, time and lengths than the example's.
    other = (
        torch.randn(5, 9, 3),
        torch.randn(4, 5, rnn.output_size),
        torch.randn(4, 5, 5),
        torch.tensor([9, 1, 4, 9, 6]),
    )
    return _WithLengths(rnn), example, shapes, other


@pytest.mark.parametrize("mode, options", [("fused", {}), ("loop", dict(proj_size=2))], ids=["fused", "loop-proj"])
def test_torch_export_dynamic_batch_time_and_lengths(mode, options):
    model, example, shapes, other = _exportable(mode, **options)
    program = torch.export.export(model, example, dynamic_shapes=shapes)
    with torch.no_grad():
        out, (h, c) = model(*other)
        out_exported, (h_exported, c_exported) = program.module()(*other)
    assert out_exported.shape == (5, 9, 2 * model.rnn.output_size)
    assert_close(out_exported, out, **FLOAT)
    assert_close(h_exported, h, **FLOAT)
    assert_close(c_exported, c, **FLOAT)


def test_torch_export_without_lengths_or_state():
    torch.manual_seed(0)
    rnn = RNN(3, 4, cell=GRUCell, bidirectional=True).eval()
    steps = Dim("steps", min=1, max=4096)
    program = torch.export.export(rnn, (torch.randn(6, 2, 3),), dynamic_shapes=({0: steps, 1: Dim("batch")},))
    x = torch.randn(11, 3, 3)
    with torch.no_grad():
        assert_close(program.module()(x), rnn(x), **FLOAT)


def test_onnx_runtime_matches_eager():
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model, example, shapes, other = _exportable("fused")
    onnx_program = torch.onnx.export(model, example, dynamic_shapes=shapes, dynamo=True, verbose=False)
    session = onnxruntime.InferenceSession(onnx_program.model_proto.SerializeToString())
    names = [i.name for i in session.get_inputs()]
    results = session.run(None, dict(zip(names, [t.numpy() for t in other])))
    with torch.no_grad():
        out, (h, c) = model(*other)
    for theirs, mine in zip(results, (out, h, c)):
        assert_close(torch.from_numpy(theirs), mine, **FLOAT)


def test_packed_sequence_does_not_export():
    rnn = RNN(3, 4).eval()

    class Packed(torch.nn.Module):
        def forward(self, x):
            return rnn(pack_sequence([x]))[0].data

    with pytest.raises(Exception, match="does not export"):
        torch.export.export(Packed(), (torch.randn(5, 3),))


@pytest.mark.parametrize("fused", [True, False])
def test_torch_compile_with_gradients(fused):
    """float32 input without gradient: the case where inductor failed on the CPU kernel."""
    torch._dynamo.reset()
    rnn = RNN(3, 4, 2, bidirectional=True, fused=fused)
    reference = rnn.to_torch()
    compiled = torch.compile(rnn)
    x = torch.randn(5, 2, 3)
    for lengths in (None, torch.tensor([5, 3])):
        rnn.zero_grad()
        reference.zero_grad()
        out, h_n = compiled(x, lengths=lengths)
        _weighted(out, h_n).backward()
        out_ref, h_ref = _torch_padded(reference, x, None, lengths)
        _weighted(out_ref, h_ref).backward()
        assert_close(out, out_ref, **FLOAT)
        theirs = dict(reference.named_parameters())
        for name, mine in rnn.torch_state_dict(keep_vars=True).items():
            assert_close(mine.grad, theirs[name].grad, **FLOAT, msg=name)
