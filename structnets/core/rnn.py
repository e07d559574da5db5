"""``RNN``: a stacked, optionally bidirectional recurrent network over any cell.

A batch of sequences is a batch of chains (see :mod:`structnets.structure`); each layer
and direction is one :func:`structnets.propagate.propagate_levels` call over them, the
backward direction running the same chains against their edges::

    x ─► [layer 0: cell ─► along chains, cell ◄─ against them] ─► concat ─► dropout
      ─► [layer 1: ...] ─► output            final states ─► h_n (and c_n)

For the standard Elman, GRU and LSTM cells, ``fused=True`` (the default) hands the same
parameters to torch's own multi-layer RNN kernels (cuDNN on NVIDIA GPUs); ``fused=False``
runs the generic level loop that trees and DAGs use. Both give the same numbers, which
the parity tests check against ``torch.nn.RNN/GRU/LSTM``.

The call is torch.nn's, ``rnn(input, hx)``, on a padded batch (variable lengths as the
keyword ``lengths=``), an unbatched ``[T, input_size]`` sequence or a ``PackedSequence``.
Three schedules stand behind it:

* eager, and under ``torch.compile``: the fused kernel or the level loop, on the packed
  layout when lengths differ. ``torch.compile`` runs them outside the graph, as it runs
  ``torch.nn.LSTM`` (Dynamo's ``allow_rnn`` is off by default), so compiled models around
  an RNN train as they do around torch's;
* under ``torch.export`` (and so ``torch.onnx.export(..., dynamo=True)``): one masked scan
  over time per layer and direction (``torch._higher_order_ops.scan``, ONNX ``Scan``),
  with no Python control flow on data, so batch, time and lengths stay dynamic;
* a batch of zero sequences: the same masked recurrence on empty tensors, which returns
  torch.nn's empty outputs and zero gradients.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import math
import numbers
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .cells import ElmanCell, GRUCell, LSTMCell, Nonlinearity, RecurrentCell, State
from .chains import chains
from .propagate import run_levels

__all__ = ["RNN", "ProjectedLSTMCell", "RNNArgumentError", "RNNCallError"]

CellFactory = Callable[..., RecurrentCell]


class RNNArgumentError(ValueError, RuntimeError):
    """A wrong input, state or lengths value or shape.

    torch.nn's RNNs raise RuntimeError for most of these (a wrong feature size, wrong state
    shapes) and ValueError for some (input neither 2-D nor 3-D, a dtype mismatch); this is
    both, so ``except`` clauses written for either keep working.
    """


class RNNCallError(TypeError, RuntimeError):
    """An argument of the wrong kind, such as lengths passed where torch.nn puts ``hx``."""


class _Kernel(enum.Enum):
    """torch's fused multi-layer kernel for a standard cell, with the torch.nn module that
    holds the same weights (and, for Elman cells, the nonlinearity). The member names are
    cuDNN's mode names."""

    LSTM = (torch.lstm, nn.LSTM, None)
    GRU = (torch.gru, nn.GRU, None)
    RNN_TANH = (torch.rnn_tanh, nn.RNN, Nonlinearity.TANH)
    RNN_RELU = (torch.rnn_relu, nn.RNN, Nonlinearity.RELU)

    def __init__(
        self, function: Callable[..., tuple[Tensor, ...]], module: type[nn.RNNBase], nonlinearity: Nonlinearity | None
    ) -> None:
        self.function = function
        self.module = module
        self.nonlinearity = nonlinearity


class ProjectedLSTMCell(LSTMCell):
    """An LSTM cell with a projected output, as in ``torch.nn.LSTM(proj_size=...)``.

    ``c' = f * c + i * g``, ``h' = W_hr (o * tanh(c'))``: the state ``h`` has ``proj_size``
    features, ``c`` keeps ``hidden_size``; ``weight_hh`` is ``[4 * hidden, proj_size]`` and
    ``weight_hr`` ``[proj_size, hidden]``, torch's shapes and names.
    """

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, proj_size: int = 1, *, orthogonal: bool = False
    ) -> None:
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or not 0 < proj_size < hidden_size:
            raise ValueError(f"proj_size must be a positive integer smaller than hidden_size, got {proj_size!r}")
        self.proj_size = proj_size
        super().__init__(input_size, hidden_size, bias, orthogonal=orthogonal)
        self.weight_hr = nn.Parameter(torch.empty(proj_size, hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)
        nn.init.uniform_(self.weight_hr, -bound, bound)

    @property
    def recurrent_input_size(self) -> int:
        return self.proj_size

    def extra_repr(self) -> str:
        return super().extra_repr() + f", proj_size={self.proj_size}"

    def step(self, projected: Tensor, hx: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        h, c = super().step(projected, hx)
        return F.linear(h, self.weight_hr), c

    def zero_state(self, n: int, like: Tensor) -> tuple[Tensor, Tensor]:
        return like.new_zeros(n, self.proj_size), like.new_zeros(n, self.hidden_size)


def _cell_kernel(cell: RecurrentCell) -> _Kernel | None:
    """torch's fused kernel for this cell, or None if there is none."""
    kind = type(cell)
    if kind is LSTMCell or kind is ProjectedLSTMCell:
        return _Kernel.LSTM
    if kind is GRUCell:
        return _Kernel.GRU
    if kind is ElmanCell:
        return _Kernel.RNN_TANH if cell.nonlinearity is Nonlinearity.TANH else _Kernel.RNN_RELU
    return None


def _parts(state: State) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def _exporting() -> bool:
    """Whether torch.export is tracing (the masked scan replaces data-dependent schedules)."""
    return torch.compiler.is_exporting()


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def _time_reversed(values: Tensor, order: Tensor | None) -> Tensor:
    """Each sequence's steps reversed within its length (``order`` from the lengths; None
    when all sequences fill the time axis). Applied twice it is the identity."""
    if order is None:
        return values.flip(0)
    return values.gather(0, order.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


def _scan_chain(
    cell: RecurrentCell, initial: tuple[Tensor, ...], projected: Tensor, mask: Tensor | None
) -> tuple[tuple[Tensor, ...], Tensor]:
    """The cell along time from ``initial``: ``(final state parts, [T, B, out] outputs)``.

    Past a sequence's length (``mask`` False) the state is held and the output is zero, so
    the final state is the one at each sequence's last step. Under torch.export this is one
    ``scan`` (an ONNX ``Scan``), otherwise a Python loop over the steps.

    Shapes:
        projected: ``[T, B, num_chunks * hidden]``; mask: ``[T, B, 1]`` bool or None.
    """
    tuple_state = cell.state_is_tuple

    def body(carry: tuple[Tensor, ...], xs: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], Tensor]:
        new = _parts(cell.step(xs[0], carry if tuple_state else carry[0]))
        if len(xs) == 1:
            return new, new[0].clone()  # scan refuses outputs that alias the carry
        active = xs[1]
        new = tuple(torch.where(active, n, old) for n, old in zip(new, carry))
        return new, torch.where(active, new[0], torch.zeros_like(new[0]))

    xs = (projected,) if mask is None else (projected, mask)
    if torch.compiler.is_exporting():
        from torch._higher_order_ops.scan import scan

        return scan(body, initial, xs)
    carry, outputs = initial, []
    for t in range(projected.shape[0]):
        carry, y = body(carry, tuple(v[t] for v in xs))
        outputs.append(y)
    return carry, torch.stack(outputs)


class RNN(nn.Module):
    """Stacked, optionally bidirectional RNN with the interface of ``torch.nn.LSTM/GRU/RNN``.

    Args:
        input_size: features per step.
        hidden_size: state size of every cell.
        num_layers: stacked layers; layer k > 0 reads layer k - 1's output.
        bias: whether cells have biases.
        batch_first: padded tensors are ``[batch, time, features]`` instead of
            ``[time, batch, features]`` (states stay ``[layers * D, batch, hidden]``).
        dropout: dropout on the outputs of every layer but the last, in training.
        bidirectional: add a backward direction per layer; outputs are concatenated.
        proj_size: LSTM only: project each layer's output ``h`` to this size, as
            ``torch.nn.LSTM(proj_size=...)`` does (:class:`ProjectedLSTMCell`); 0 for none.
        nonlinearity: Elman cells only, ``"tanh"`` or ``"relu"`` (torch.nn.RNN's option).
        cell: the cell class or factory, called as ``cell(input_size, hidden_size, bias)``
            (``sn.LSTMCell``, ``sn.GRUCell``, ``sn.ElmanCell`` or any chain cell).
        fused: use torch's fused kernels when the cell is a plain Elman, GRU or LSTM cell;
            False always runs structnets' level loop (the one trees and DAGs use).
        fuse_cell: in the level loop, run plain LSTM cells as one autograd node with a
            hand-written backward (:mod:`structnets.fused`); False drives the cell's step
            through autograd level by level. Same results either way.
        orthogonal: orthogonal initialisation of the recurrent weights.
        device, dtype: where and in which precision the parameters are made.

    Call as torch.nn's RNNs are called: ``rnn(input, hx=None)`` with a padded batch, an
    unbatched ``[T, input_size]`` sequence or a ``PackedSequence``; the true lengths of a
    padded batch go in the keyword ``lengths=``. Returns ``(output, h_n)``, or
    ``(output, (h_n, c_n))`` for LSTM cells, with torch.nn's shapes; padded positions of
    ``output`` are zeros.

    Shapes:
        input: ``[T, B, input_size]`` (``[B, T, input_size]`` if batch_first) or
        ``[T, input_size]``; lengths: ``[B]`` integers in ``[1, T]``.
        output: like input with ``D * out`` features, D = 2 if bidirectional else 1 and
        out = proj_size or hidden_size.
        hx, h_n: ``[num_layers * D, B, out]`` (``[num_layers * D, out]`` unbatched);
        c_0, c_n: ``[num_layers * D, B, hidden_size]``.
    """

    proj_size: int = 0
    nonlinearity: str | None = None
    _flattened: tuple[int, ...] | None = None

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        proj_size: int = 0,
        nonlinearity: str | Nonlinearity | None = None,
        cell: CellFactory = LSTMCell,
        fused: bool = True,
        fuse_cell: bool = True,
        orthogonal: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_int("input_size", input_size, 1)
        _check_int("hidden_size", hidden_size, 1)
        _check_int("num_layers", num_layers, 1)
        _check_int("proj_size", proj_size, 0)
        for name, flag in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} should be of type bool, got: {type(flag).__name__}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1:
            raise ValueError(
                f"dropout should be a number in [0, 1], the probability of zeroing an element; got {dropout!r}"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout applies between recurrent layers, after all but the last, so non-zero dropout "
                f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=2,
            )
        factory = cell
        if nonlinearity is not None:
            if not (isinstance(cell, type) and issubclass(cell, ElmanCell)):
                raise ValueError(f"nonlinearity= applies to Elman cells (cell=sn.ElmanCell), not to {cell!r}")
            try:
                chosen = Nonlinearity(nonlinearity)
            except ValueError:
                raise ValueError(f"Unknown nonlinearity {nonlinearity!r}. Select from 'tanh' or 'relu'.") from None
            factory = functools.partial(cell, nonlinearity=chosen)
        if proj_size:
            if cell is not LSTMCell:
                raise ValueError(
                    f"proj_size argument is only supported for LSTM cells (cell=sn.LSTMCell), not {cell!r}"
                )
            if proj_size >= hidden_size:
                raise ValueError(f"proj_size has to be smaller than hidden_size, got {proj_size} >= {hidden_size}")
            factory = functools.partial(ProjectedLSTMCell, proj_size=proj_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.fused = fused
        self.fuse_cell = fuse_cell
        self.num_directions = 2 if bidirectional else 1
        output_size = proj_size or hidden_size
        cells = []
        with torch.device(device) if device is not None else contextlib.nullcontext():
            for layer in range(num_layers):
                layer_input = input_size if layer == 0 else output_size * self.num_directions
                for _ in range(self.num_directions):
                    made = factory(layer_input, hidden_size, bias)
                    if orthogonal:
                        made.orthogonal = True
                        made.reset_parameters()
                    cells.append(made)
        self.cells = nn.ModuleList(cells)
        kinds = {_cell_kernel(c) for c in self.cells}
        self._kernel = kinds.pop() if len(kinds) == 1 else None
        self.state_is_tuple = self.cells[0].state_is_tuple
        if self._kernel is not None and self._kernel.nonlinearity is not None:
            self.nonlinearity = self._kernel.nonlinearity.value
        if dtype is not None:
            self.to(dtype=dtype)
        self.flatten_parameters()

    @property
    def uses_fused_kernel(self) -> bool:
        """Whether eager calls go to torch's fused RNN kernels."""
        return self.fused and self._kernel is not None

    @property
    def output_size(self) -> int:
        """Features of ``h`` per direction: ``proj_size`` if set, else ``hidden_size``."""
        return self.proj_size or self.hidden_size

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """The parameters of each layer and direction in torch.nn's order
        (``weight_ih, weight_hh[, bias_ih, bias_hh][, weight_hr]``), as ``nn.RNNBase.all_weights``."""
        return [self._cell_weights(cell) for cell in self.cells]

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        text += f", batch_first={self.batch_first}"
        if self.dropout:
            text += f", dropout={self.dropout}"
        text += f", bidirectional={self.bidirectional}"
        if self.proj_size:
            text += f", proj_size={self.proj_size}"
        return text + f", fused={self.fused}"

    # ---------------------------------------------------------------- cuDNN weights
    def _cell_weights(self, cell: RecurrentCell) -> list[Tensor]:
        weights = [cell.weight_ih, cell.weight_hh]
        if self.bias:
            weights += [cell.bias_ih, cell.bias_hh]
        if self.proj_size:
            weights.append(cell.weight_hr)
        return weights

    def _kernel_weights(self) -> list[Tensor]:
        """The fused kernels' flat weight list, in ``torch.nn.LSTM._flat_weights``' order."""
        return [w for cell in self.cells for w in self._cell_weights(cell)]

    def flatten_parameters(self) -> None:
        """Lays the fused kernels' weights out as one contiguous block, as
        ``torch.nn.RNNBase.flatten_parameters`` does, so that cuDNN needs no copy per call.

        After it the parameters are views of one buffer that cuDNN reads as it is (no
        "weights are not part of a single contiguous chunk of memory" warning). It runs
        after ``.to()`` / ``.cuda()`` and again on a call whose weights moved; on the CPU,
        for cells without a fused kernel and for weights cuDNN does not accept it is a no-op.
        """
        self._flattened = None
        if self._kernel is None:
            return
        weights = self._kernel_weights()
        first = weights[0]
        for weight in weights:
            if (
                not isinstance(weight, Tensor)
                or weight.dtype != first.dtype
                or not weight.is_cuda
                or not torch.backends.cudnn.is_acceptable(weight)
            ):
                return
        if len({w.data_ptr() for w in weights}) != len(weights):
            return  # aliased parameters: torch falls back to the copying path too
        import torch.backends.cudnn.rnn as cudnn_rnn

        with torch.cuda.device_of(first), torch.no_grad():
            if torch._use_cudnn_rnn_flatten_weight():
                # Copies the weights into one buffer and makes every parameter a view of it.
                torch._cudnn_rnn_flatten_weight(
                    weights,
                    len(self._cell_weights(self.cells[0])),
                    self.input_size,
                    cudnn_rnn.get_cudnn_mode(self._kernel.name),
                    self.hidden_size,
                    self.proj_size,
                    self.num_layers,
                    False,  # the kernels are always called time-major
                    bool(self.bidirectional),
                )
                self._flattened = tuple(w.data_ptr() for w in weights)

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        self.flatten_parameters()  # after .to(), .cuda(), .half(): as nn.RNNBase does
        return result

    def _refresh_flat_weights(self, weights: list[Tensor]) -> None:
        """Flattens again if the parameters no longer lie where flatten_parameters put them
        (a parameter was replaced); tensors that are no parameters (functional_call) stay."""
        if not weights[0].is_cuda or torch.compiler.is_compiling():
            return
        if tuple(w.data_ptr() for w in weights) != self._flattened and all(
            isinstance(w, nn.Parameter) for w in weights
        ):
            self.flatten_parameters()

    # ---------------------------------------------------------------- argument checks
    def _check_hx_kind(self, hx: object) -> State | None:
        """hx as torch.nn takes it: a tensor, or a tuple (h_0, c_0) for LSTM cells."""
        if hx is None:
            return None
        if isinstance(hx, Tensor):
            if not (hx.is_floating_point() or hx.is_complex()):
                if hx.dim() == 1:
                    raise RNNCallError(
                        "the second positional argument of RNN is the initial state hx, as in torch.nn.LSTM/GRU/RNN; "
                        f"got a 1-D {hx.dtype} tensor, which looks like sequence lengths: pass lengths=... as a keyword"
                    )
                raise RNNCallError(f"hx must be a floating-point tensor, got dtype {hx.dtype}")
            if self.state_is_tuple:
                raise RNNArgumentError("an LSTM's hx must be a tuple (h_0, c_0), got a single tensor")
            return hx
        if isinstance(hx, (list, tuple)):
            if hx and all(isinstance(v, numbers.Integral) for v in hx):
                raise RNNCallError(
                    "the second positional argument of RNN is the initial state hx, as in torch.nn.LSTM/GRU/RNN; "
                    "got a sequence of integers, which looks like sequence lengths: pass lengths=... as a keyword"
                )
            if not all(isinstance(v, Tensor) for v in hx):
                raise RNNCallError(f"hx must hold tensors, got {[type(v).__name__ for v in hx]}")
            if not self.state_is_tuple:
                raise RNNArgumentError(f"hx must be a single tensor for {type(self.cells[0]).__name__}, got a tuple")
            if len(hx) != 2:
                raise RNNArgumentError(f"an LSTM's hx must be a tuple (h_0, c_0), got {len(hx)} tensors")
            return tuple(hx)
        raise RNNCallError(f"hx must be a tensor or a tuple (h_0, c_0), got {type(hx).__name__}")

    def _check_dtype(self, data: Tensor) -> None:
        weight = self.cells[0].weight_ih
        if data.dtype != weight.dtype and not torch._C._is_any_autocast_enabled():
            raise RNNArgumentError(
                f"RNN input dtype ({data.dtype}) does not match weight dtype ({weight.dtype}). "
                f"Convert input: input.to({weight.dtype}), or convert model: model.to({data.dtype})"
            )

    def _check_features(self, data: Tensor) -> None:
        if data.shape[-1] != self.input_size:
            raise RNNArgumentError(
                f"expected {self.input_size} input features, got {data.shape[-1]}: input.size(-1) must be equal "
                f"to input_size (input shape {tuple(data.shape)})"
            )

    def _check_hx_dims(self, hx: State | None, dims: int, kind: str) -> None:
        if hx is not None and any(part.dim() != dims for part in _parts(hx)):
            got = ", ".join(f"{part.dim()}-D" for part in _parts(hx))
            raise RNNArgumentError(f"For {kind} input, hx should also be {dims}-D, got ({got})")

    def _check_hx_shape(self, hx: State | None, batch: int) -> None:
        if hx is None:
            return
        layers = self.num_layers * self.num_directions
        expected = [(layers, batch, self.output_size), (layers, batch, self.hidden_size)]
        parts = _parts(hx)
        for index, (part, shape) in enumerate(zip(parts, expected)):
            if tuple(part.shape) != shape:
                name = f"hidden[{index}]" if len(parts) > 1 else "hidden"
                raise RNNArgumentError(f"Expected {name} size {shape}, got {list(part.shape)}")

    @staticmethod
    def _lengths_tensor(lengths: object, batch: int) -> Tensor:
        """Shape and dtype checks only: no values are read here (torch.export traces this)."""
        if not isinstance(lengths, Tensor):
            lengths = torch.as_tensor(lengths)
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise RNNCallError(f"lengths must be integers, got dtype {lengths.dtype}")
        if lengths.dim() != 1 or lengths.shape[0] != batch:
            raise RNNArgumentError(
                f"lengths must have one entry per sequence ({batch}), got shape {tuple(lengths.shape)}"
            )
        return lengths

    @staticmethod
    def _check_length_values(lengths: Tensor, steps: int) -> Tensor:
        lengths = lengths.to("cpu", torch.long)
        if bool((lengths <= 0).any()):
            bad = int(torch.nonzero(lengths <= 0)[0, 0])
            raise RNNArgumentError(f"lengths must be positive: sequence {bad} has length {int(lengths[bad])}")
        if bool((lengths > steps).any()):
            bad = int(torch.nonzero(lengths > steps)[0, 0])
            raise RNNArgumentError(
                f"sequence {bad} has length {int(lengths[bad])}, longer than the padded batch ({steps} steps)"
            )
        return lengths

    # ---------------------------------------------------------------- forward
    def forward(
        self, input: Tensor | PackedSequence, hx: State | None = None, *, lengths: Tensor | None = None
    ) -> tuple[Tensor | PackedSequence, State]:
        hx = self._check_hx_kind(hx)
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx, lengths)
        if not isinstance(input, Tensor):
            raise RNNCallError(f"input must be a tensor or a PackedSequence, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise RNNArgumentError(f"RNN: Expected input to be 2-D (unbatched) or 3-D, got {input.dim()}-D instead")
        self._check_dtype(input)
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if batched:
            self._check_hx_dims(hx, 3, "batched 3-D")
        else:
            if lengths is not None:
                raise RNNArgumentError("an unbatched [T, input_size] input is one sequence; lengths= is for batches")
            self._check_hx_dims(hx, 2, "unbatched 2-D")
            input = input.unsqueeze(batch_dim)
            if hx is not None:
                hx = tuple(h.unsqueeze(1) for h in hx) if isinstance(hx, tuple) else hx.unsqueeze(1)
        self._check_features(input)
        batch, steps = (input.shape[0], input.shape[1]) if self.batch_first else (input.shape[1], input.shape[0])
        if steps == 0:
            raise RNNArgumentError("Expected sequence length to be larger than 0 in RNN: the input has no time steps")
        self._check_hx_shape(hx, batch)
        if lengths is not None:
            lengths = self._lengths_tensor(lengths, batch)
        time_major = input.transpose(0, 1) if self.batch_first else input
        if _exporting() or batch == 0:
            output, h_n = self._masked(time_major, lengths, hx)
        else:
            output, h_n = self._run_padded(time_major, lengths, hx)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not batched:
            output = output.squeeze(batch_dim)
            h_n = tuple(h.squeeze(1) for h in h_n) if isinstance(h_n, tuple) else h_n.squeeze(1)
        return output, h_n

    def _forward_packed(
        self, packed: PackedSequence, hx: State | None, lengths: Tensor | None
    ) -> tuple[PackedSequence, State]:
        if lengths is not None:
            raise RNNArgumentError("lengths= is for a padded batch; a PackedSequence carries its own")
        if _exporting():
            raise RNNArgumentError(
                "a PackedSequence does not export (its batch sizes are data): export a padded batch with lengths="
            )
        data = packed.data
        if data.dim() != 2:
            raise RNNArgumentError(f"packed input must have 2 dimensions, got {data.dim()}")
        self._check_dtype(data)
        self._check_features(data)
        self._check_hx_dims(hx, 3, "packed")
        return self._run_packed_sequence(packed, hx)

    # The eager schedules run outside torch.compile's graph, as torch.nn.LSTM does by default:
    # inductor fails on the CPU kernel's mkldnn_rnn_layer (float32, input without gradient),
    # and the level loop's schedule is Python control flow on the batch sizes.
    @torch.compiler.disable
    def _run_packed_sequence(self, packed: PackedSequence, hx: State | None) -> tuple[PackedSequence, State]:
        self._check_hx_shape(hx, int(packed.batch_sizes[0]))  # reads a tensor: here, outside compiled graphs
        data, h_n = self._run_packed(packed.data, packed.batch_sizes, packed.sorted_indices, hx)
        out = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        return out, self._unsort(h_n, packed.unsorted_indices)

    @torch.compiler.disable
    def _run_padded(self, x: Tensor, lengths: Tensor | None, hx: State | None) -> tuple[Tensor, State]:
        """A time-major padded batch through the fused kernel or the level loop."""
        steps, batch = x.shape[0], x.shape[1]
        if lengths is not None:
            lengths = self._check_length_values(lengths, steps)
            if int(lengths.min()) == steps:
                lengths = None  # all full: the padded batch is already the packed layout
        if lengths is None:
            if self.uses_fused_kernel:
                return self._fused(x, None, hx)
            data, h_n = self._level_loop(x.reshape(steps * batch, -1), torch.full((steps,), batch), hx)
            return data.view(steps, batch, -1), h_n
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        data, h_n = self._run_packed(packed.data, packed.batch_sizes, packed.sorted_indices, hx)
        out = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        padded, _ = pad_packed_sequence(out, total_length=steps)
        return padded, self._unsort(h_n, packed.unsorted_indices)

    @staticmethod
    def _unsort(state: State, permutation: Tensor | None) -> State:
        """Reorders the batch dimension (dim 1) of a state by ``permutation``."""
        if permutation is None:
            return state
        if isinstance(state, tuple):
            return tuple(s.index_select(1, permutation) for s in state)
        return state.index_select(1, permutation)

    def _zero_state(self, like: Tensor, batch: int) -> State:
        layers = self.num_layers * self.num_directions
        h = like.new_zeros(layers, batch, self.output_size)
        return (h, like.new_zeros(layers, batch, self.hidden_size)) if self.state_is_tuple else h

    def _fused(self, data: Tensor, batch_sizes: Tensor | None, hx: State | None) -> tuple[Tensor, State]:
        """torch's own kernel on time-major data; ``batch_sizes`` None means all full length."""
        batch = int(batch_sizes[0]) if batch_sizes is not None else data.shape[1]
        if hx is None:
            hx = self._zero_state(data, batch)
        weights = self._kernel_weights()
        self._refresh_flat_weights(weights)
        kernel = self._kernel.function
        options = (self.bias, self.num_layers, float(self.dropout), self.training, self.bidirectional)
        if batch_sizes is None:
            result = kernel(data, hx, weights, *options, False)
        else:
            result = kernel(data, batch_sizes, hx, weights, *options)
        return result[0], (tuple(result[1:]) if self.state_is_tuple else result[1])

    def _run_packed(
        self, data: Tensor, batch_sizes: Tensor, sorted_indices: Tensor | None, hx: State | None
    ) -> tuple[Tensor, State]:
        if hx is not None and sorted_indices is not None:
            hx = self._unsort(hx, sorted_indices)  # torch permutes hx into sorted order the same way
        if self.uses_fused_kernel:
            return self._fused(data, batch_sizes, hx)
        return self._level_loop(data, batch_sizes, hx)

    def _level_loop(self, data: Tensor, batch_sizes: Tensor, hx: State | None) -> tuple[Tensor, State]:
        graph = chains(batch_sizes, data.device)
        ends = graph.last  # final-state rows in either direction's level order
        final: list[tuple[Tensor, ...]] = []
        layer_input = data
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                levels = graph.backward if direction else graph.forward
                initial = None
                if hx is not None:  # one row per source node, i.e. per sequence in level-0 order
                    rows = graph.sequence.index_select(0, levels.sources)
                    initial = tuple(h[index].index_select(0, rows) for h in _parts(hx))
                    initial = initial if self.state_is_tuple else initial[0]
                states = run_levels(self.cells[index], layer_input, levels, initial=initial, fuse_cell=self.fuse_cell)
                final.append(tuple(s.index_select(0, ends) for s in states))
                output = states[0]
                outputs.append(output if levels.rank is None else output.index_select(0, levels.rank))
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, 1)
            if self.dropout and self.training and layer + 1 < self.num_layers:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        h_n = tuple(torch.stack([f[k] for f in final]) for k in range(len(final[0])))
        return layer_input, (h_n if self.state_is_tuple else h_n[0])

    def _masked(self, x: Tensor, lengths: Tensor | None, hx: State | None) -> tuple[Tensor, State]:
        """The padded batch step by step with a mask: no schedule read from the lengths'
        values, so torch.export traces it with dynamic batch, time and lengths.

        Lengths are not range-checked here (that needs their values): a length of 0 gives
        zero outputs and the initial state, one beyond the time axis counts as full length.
        """
        steps, batch = x.shape[0], x.shape[1]
        mask = order = None
        if lengths is not None:
            lengths = lengths.to(device=x.device, dtype=torch.long).unsqueeze(0)
            time = torch.arange(steps, device=x.device).unsqueeze(1)
            active = time < lengths  # [T, B]
            order = torch.where(active, lengths - 1 - time, time)
            mask = active.unsqueeze(-1)
        final: list[tuple[Tensor, ...]] = []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                cell = self.cells[index]
                projected = cell.project_input(layer_input)
                if direction:
                    projected = _time_reversed(projected, order)
                if hx is None:
                    initial = (x.new_zeros(batch, self.output_size),)
                    if self.state_is_tuple:
                        initial += (x.new_zeros(batch, self.hidden_size),)
                else:
                    initial = tuple(part[index] for part in _parts(hx))
                carry, output = _scan_chain(cell, initial, projected, mask)
                outputs.append(_time_reversed(output, order) if direction else output)
                final.append(tuple(carry))
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, -1)
            if self.dropout and self.training and layer + 1 < self.num_layers:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        h_n = tuple(torch.stack([f[k] for f in final]) for k in range(len(final[0])))
        return layer_input, (h_n if self.state_is_tuple else h_n[0])

    # ---------------------------------------------------------------- torch.nn interop
    @classmethod
    def from_torch(cls, module: nn.RNNBase, **options) -> RNN:
        """An ``RNN`` with the weights of a ``torch.nn.RNN``, ``GRU`` or ``LSTM``.

        ``options`` are this constructor's keyword options (``fused``, ...); the sizes,
        layers, direction, bias, batch_first, dropout, proj_size, nonlinearity, device
        and dtype come from ``module``.
        """
        if isinstance(module, nn.LSTM):
            cell: CellFactory = LSTMCell
        elif isinstance(module, nn.GRU):
            cell = GRUCell
        elif isinstance(module, nn.RNN):
            cell = ElmanCell
        else:
            raise TypeError(f"expected torch.nn.RNN, GRU or LSTM, got {type(module).__name__}")
        cell = options.pop("cell", cell)
        if isinstance(module, nn.LSTM) and module.proj_size:
            options.setdefault("proj_size", module.proj_size)
        if isinstance(module, nn.RNN) and cell is ElmanCell:
            options.setdefault("nonlinearity", module.nonlinearity)
        reference = next(module.parameters())
        options.setdefault("device", reference.device)
        options.setdefault("dtype", reference.dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.nn warned already about dropout with one layer
            rnn = cls(
                module.input_size,
                module.hidden_size,
                module.num_layers,
                module.bias,
                module.batch_first,
                module.dropout,
                module.bidirectional,
                cell=cell,
                **options,
            )
        rnn.load_torch_state_dict(module.state_dict())
        return rnn

    def _torch_names(self) -> list[tuple[str, str]]:
        """(torch.nn name, structnets name) of every parameter."""
        names = []
        kinds = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        kinds += ["weight_hr"] if self.proj_size else []
        for index in range(len(self.cells)):
            layer, direction = divmod(index, self.num_directions)
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            names += [(f"{kind}{suffix}", f"cells.{index}.{kind}") for kind in kinds]
        return names

    def load_torch_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Loads a ``torch.nn.RNN/GRU/LSTM`` state dict (torch's parameter names)."""
        ours = {mine: state_dict[theirs] for theirs, mine in self._torch_names()}
        self.load_state_dict(ours)

    def torch_state_dict(self, keep_vars: bool = False) -> dict[str, Tensor]:
        """This RNN's parameters under ``torch.nn.RNN/GRU/LSTM``'s names."""
        own = self.state_dict(keep_vars=keep_vars)
        return {theirs: own[mine] for theirs, mine in self._torch_names()}

    def to_torch(self) -> nn.RNNBase:
        """The equivalent ``torch.nn.RNN``, ``GRU`` or ``LSTM`` with the same weights."""
        if self._kernel is None:
            raise TypeError("only RNNs of plain Elman, GRU or LSTM cells have a torch.nn equivalent")
        first = self.cells[0].weight_ih
        common = dict(
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            dropout=self.dropout,
            bidirectional=self.bidirectional,
            device=first.device,
            dtype=first.dtype,
        )
        if self._kernel.nonlinearity is not None:
            common["nonlinearity"] = self._kernel.nonlinearity.value
        if self.proj_size:
            common["proj_size"] = self.proj_size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the dropout warning was given when this RNN was made
            module: nn.RNNBase = self._kernel.module(**common)
        module.load_state_dict(self.torch_state_dict())
        return module
