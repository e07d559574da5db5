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
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .cells import ElmanCell, GRUCell, LSTMCell, Nonlinearity, RecurrentCell, State
from .chains import chains
from .propagate import run_levels

__all__ = ["RNN"]

CellFactory = Callable[..., RecurrentCell]


class _Kernel(enum.Enum):
    """torch's fused multi-layer kernel for a standard cell, with the torch.nn module that
    holds the same weights (and, for Elman cells, the nonlinearity)."""

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


def _cell_kernel(cell: RecurrentCell) -> _Kernel | None:
    """torch's fused kernel for this cell, or None if there is none."""
    kind = type(cell)
    if kind is LSTMCell:
        return _Kernel.LSTM
    if kind is GRUCell:
        return _Kernel.GRU
    if kind is ElmanCell:
        return _Kernel.RNN_TANH if cell.nonlinearity is Nonlinearity.TANH else _Kernel.RNN_RELU
    return None


def _parts(state: State) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


class RNN(nn.Module):
    """Stacked, optionally bidirectional RNN; the interface of ``torch.nn.LSTM``.

    Args:
        input_size: features per step.
        hidden_size: state size of every cell.
        num_layers: stacked layers; layer k > 0 reads layer k - 1's output.
        cell: the cell class or factory, called as ``cell(input_size, hidden_size, bias)``
            (use ``functools.partial`` for options such as the Elman nonlinearity).
        bias: whether cells have biases.
        batch_first: padded tensors are ``[batch, time, features]`` instead of
            ``[time, batch, features]``.
        dropout: dropout on the outputs of every layer but the last, in training.
        bidirectional: add a backward direction per layer; outputs are concatenated.
        fused: use torch's fused kernels when the cell is a plain Elman, GRU or LSTM cell;
            False always runs structnets' level loop (the one trees and DAGs use).
        fuse_cell: in the level loop, run plain LSTM cells as one autograd node with a
            hand-written backward (:mod:`structnets.fused`); False drives the cell's step
            through autograd level by level. Same results either way.
        orthogonal: orthogonal initialisation of the recurrent weights.

    Call as ``rnn(x, lengths=None, hx=None)`` with a padded batch, or ``rnn(packed, hx=None)``
    with a ``PackedSequence``. Returns ``(output, h_n)``, ``(output, (h_n, c_n))`` for LSTM
    cells, with torch.nn's shapes; padded positions of ``output`` are zeros.

    Shapes:
        x: ``[T, B, input_size]`` (``[B, T, input_size]`` if batch_first); lengths: ``[B]``.
        output: like x with ``D * hidden_size`` features, D = 2 if bidirectional else 1.
        h_n, c_n: ``[num_layers * D, B, hidden_size]``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        cell: CellFactory = LSTMCell,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        fused: bool = True,
        fuse_cell: bool = True,
        orthogonal: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must lie in [0, 1], got {dropout}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = dropout
        self.bidirectional = bidirectional
        self.fused = fused
        self.fuse_cell = fuse_cell
        self.num_directions = 2 if bidirectional else 1
        cells = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for _ in range(self.num_directions):
                made = cell(layer_input, hidden_size, bias)
                if orthogonal:
                    made.orthogonal = True
                    made.reset_parameters()
                cells.append(made)
        self.cells = nn.ModuleList(cells)
        kinds = {_cell_kernel(c) for c in self.cells}
        self._kernel = kinds.pop() if len(kinds) == 1 else None
        self.state_is_tuple = self.cells[0].state_is_tuple

    @property
    def uses_fused_kernel(self) -> bool:
        """Whether calls go to torch's fused RNN kernels."""
        return self.fused and self._kernel is not None

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, batch_first={self.batch_first}, "
            f"bidirectional={self.bidirectional}, fused={self.fused}"
        )

    # ---------------------------------------------------------------- input checks
    def _check_input(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        if x.dim() != 3:
            raise ValueError(
                f"expected a padded batch with 3 dimensions ({'[B, T, F]' if self.batch_first else '[T, B, F]'}), "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"expected {self.input_size} input features, got {x.shape[-1]} (input shape {tuple(x.shape)})"
            )
        batch, steps = (x.shape[0], x.shape[1]) if self.batch_first else (x.shape[1], x.shape[0])
        if batch == 0:
            raise ValueError("empty batch: the input holds no sequences")
        if steps == 0:
            raise ValueError("the padded batch has no time steps")
        if lengths is None:
            return torch.full((batch,), steps, dtype=torch.long)
        lengths = torch.as_tensor(lengths)
        if lengths.dim() != 1 or lengths.shape[0] != batch:
            raise ValueError(f"lengths must have one entry per sequence ({batch}), got shape {tuple(lengths.shape)}")
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
        lengths = lengths.to("cpu", torch.long)
        if bool((lengths <= 0).any()):
            bad = int(torch.nonzero(lengths <= 0)[0, 0])
            raise ValueError(f"lengths must be positive: sequence {bad} has length {int(lengths[bad])}")
        if bool((lengths > steps).any()):
            bad = int(torch.nonzero(lengths > steps)[0, 0])
            raise ValueError(
                f"sequence {bad} has length {int(lengths[bad])}, longer than the padded batch ({steps} steps)"
            )
        return lengths

    def _check_hx(self, hx: State | None, batch: int) -> State | None:
        if hx is None:
            return None
        expected = (self.num_layers * self.num_directions, batch, self.hidden_size)
        parts = hx if isinstance(hx, tuple) else (hx,)
        if len(parts) != (2 if self.state_is_tuple else 1):
            raise ValueError(f"hx must be {'a tuple (h_0, c_0)' if self.state_is_tuple else 'a single tensor'}")
        for part in parts:
            if tuple(part.shape) != expected:
                raise ValueError(f"initial state must have shape {expected}, got {tuple(part.shape)}")
        return hx

    # ---------------------------------------------------------------- forward
    def forward(
        self, input: Tensor | PackedSequence, lengths: Tensor | None = None, hx: State | None = None
    ) -> tuple[Tensor | PackedSequence, State]:
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("pass lengths with a padded batch, not with a PackedSequence")
            if input.data.shape[-1] != self.input_size:
                raise ValueError(f"expected {self.input_size} input features, got {input.data.shape[-1]}")
            batch = int(input.batch_sizes[0])
            hx = self._check_hx(hx, batch)
            data, h_n = self._run_packed(input.data, input.batch_sizes, input.sorted_indices, hx)
            out = PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
            return out, self._unsort(h_n, input.unsorted_indices)
        lengths = self._check_input(input, lengths)
        steps = input.shape[1] if self.batch_first else input.shape[0]
        hx = self._check_hx(hx, lengths.shape[0])
        if bool((lengths == steps).all()):
            # Equal lengths need no packing: time-major data is already the packed layout.
            if self.uses_fused_kernel:
                return self._fused(input, None, hx)
            batch = lengths.shape[0]
            time_major = input.transpose(0, 1) if self.batch_first else input
            data, h_n = self._level_loop(time_major.reshape(steps * batch, -1), torch.full((steps,), batch), hx)
            output = data.view(steps, batch, -1)
            return (output.transpose(0, 1) if self.batch_first else output), h_n
        packed = pack_padded_sequence(input, lengths, batch_first=self.batch_first, enforce_sorted=False)
        data, h_n = self._run_packed(packed.data, packed.batch_sizes, packed.sorted_indices, hx)
        out = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        padded, _ = pad_packed_sequence(out, batch_first=self.batch_first, total_length=steps)
        return padded, self._unsort(h_n, packed.unsorted_indices)

    @staticmethod
    def _unsort(state: State, permutation: Tensor | None) -> State:
        """Reorders the batch dimension (dim 1) of a state by ``permutation``."""
        if permutation is None:
            return state
        if isinstance(state, tuple):
            return tuple(s.index_select(1, permutation) for s in state)
        return state.index_select(1, permutation)

    def _flat_weights(self) -> list[Tensor]:
        weights = []
        for cell in self.cells:
            weights += [cell.weight_ih, cell.weight_hh]
            if self.bias:
                weights += [cell.bias_ih, cell.bias_hh]
        return weights

    def _fused_hx(self, hx: State | None, like: Tensor, batch: int) -> State:
        if hx is not None:
            return hx
        zeros = like.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
        return (zeros, zeros) if self.state_is_tuple else zeros

    def _fused(self, data: Tensor, batch_sizes: Tensor | None, hx: State | None) -> tuple[Tensor, State]:
        """torch's own kernel; ``batch_sizes`` None means a padded batch of full lengths."""
        batch = int(batch_sizes[0]) if batch_sizes is not None else data.shape[0 if self.batch_first else 1]
        if hx is None:
            zeros = data.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
            hx = (zeros, zeros) if self.state_is_tuple else zeros
        kernel = self._kernel.function
        options = (self.bias, self.num_layers, float(self.dropout), self.training, self.bidirectional)
        if batch_sizes is None:
            result = kernel(data, hx, self._flat_weights(), *options, self.batch_first)
        else:
            result = kernel(data, batch_sizes, hx, self._flat_weights(), *options)
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

    # ---------------------------------------------------------------- torch.nn interop
    @classmethod
    def from_torch(cls, module: nn.RNNBase, **options) -> RNN:
        """An ``RNN`` with the weights of a ``torch.nn.RNN``, ``GRU`` or ``LSTM``.

        ``options`` are this constructor's keyword options (``fused``, ...); the sizes,
        layers, direction, bias, batch_first and dropout come from ``module``.
        """
        if isinstance(module, nn.LSTM):
            if module.proj_size:
                raise ValueError("LSTMs with proj_size are not supported")
            cell: CellFactory = LSTMCell
        elif isinstance(module, nn.GRU):
            cell = GRUCell
        elif isinstance(module, nn.RNN):
            cell = functools.partial(ElmanCell, nonlinearity=Nonlinearity(module.nonlinearity))
        else:
            raise TypeError(f"expected torch.nn.RNN, GRU or LSTM, got {type(module).__name__}")
        rnn = cls(
            module.input_size,
            module.hidden_size,
            module.num_layers,
            cell=options.pop("cell", cell),
            bias=module.bias,
            batch_first=module.batch_first,
            dropout=module.dropout,
            bidirectional=module.bidirectional,
            **options,
        )
        reference = next(module.parameters())
        rnn = rnn.to(device=reference.device, dtype=reference.dtype)
        rnn.load_torch_state_dict(module.state_dict())
        return rnn

    def _torch_names(self) -> list[tuple[str, str]]:
        """(torch.nn name, structnets name) of every parameter."""
        names = []
        for index in range(len(self.cells)):
            layer, direction = divmod(index, self.num_directions)
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            kinds = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
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
        common = dict(
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            dropout=self.dropout,
            bidirectional=self.bidirectional,
        )
        first = self.cells[0].weight_ih
        if self._kernel.nonlinearity is not None:
            common["nonlinearity"] = self._kernel.nonlinearity.value
        module: nn.RNNBase = self._kernel.module(**common)
        module = module.to(device=first.device, dtype=first.dtype)
        module.load_state_dict(self.torch_state_dict())
        return module
