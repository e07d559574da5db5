"""Recurrent cells: one step each, knowing nothing about the loop that drives them.

Every cell here splits its step into two parts so that loops can be fast:

* ``project_input(input)``: the part that does not depend on the recurrence,
  ``W_ih x + b_ih``. A loop calls it once for all nodes of a batch (one large matrix
  product) before it starts.
* ``step(projected, hx)``: the recurrent part, run once per level or round.

``cell(input, hx)`` does both and matches the corresponding ``torch.nn`` cell, with the
same parameter names, shapes and gate order, so state dicts move between the two.

Loops over trees and DAGs hand a cell the states arriving along edges as an
:class:`Incoming`; ``step_incoming`` aggregates them. The chain cells sum the incoming
states (the identity on a chain, where each node has one predecessor); the Tree-LSTM
cells use each child's state separately, as Tai et al. (2015) do.

State convention: a tensor ``[n, hidden_size]`` for Elman and GRU cells, a tuple
``(h, c)`` of two such tensors for LSTM cells. ``hx=None`` means a zero state.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "State",
    "Incoming",
    "Nonlinearity",
    "RecurrentCell",
    "ElmanCell",
    "GRUCell",
    "LSTMCell",
    "ChildSumTreeLSTMCell",
    "ChildSumTreeGRUCell",
    "NaryTreeLSTMCell",
    "ChainCell",
    "gated_update",
    "lstm_update",
]

State = Tensor | tuple[Tensor, ...]


@dataclass(frozen=True)
class Incoming:
    """States arriving at the nodes of one level, one row per edge.

    Attributes:
        states: the senders' states, ``[num_edges, hidden]`` (a tuple for LSTM cells).
        receivers: ``[num_edges]`` index of each edge's receiving node within the level.
        num_receivers: number of nodes in the level.
        one_to_one: edge ``e`` goes to node ``e`` and every node has exactly one edge
            (chains), so aggregation is the identity and may be skipped.
        edge_attr: per-edge attributes for these edges (for example child slots), or None.
    """

    states: State
    receivers: Tensor
    num_receivers: int
    one_to_one: bool
    edge_attr: Tensor | None = None

    def sum(self, values: Tensor) -> Tensor:
        """Sums per-edge ``values`` ``[num_edges, d]`` into ``[num_receivers, d]``."""
        if self.one_to_one:
            return values
        out = values.new_zeros((self.num_receivers,) + tuple(values.shape[1:]))
        return out.index_add(0, self.receivers, values)

    def summed_states(self) -> State:
        """The incoming states summed per receiver (a tuple stays a tuple)."""
        if isinstance(self.states, tuple):
            return tuple(self.sum(s) for s in self.states)
        return self.sum(self.states)


class Nonlinearity(enum.Enum):
    """Activation of an Elman cell (torch.nn.RNNCell's ``nonlinearity``)."""

    TANH = "tanh"
    RELU = "relu"

    @property
    def function(self) -> Callable[[Tensor], Tensor]:
        return torch.tanh if self is Nonlinearity.TANH else torch.relu


def gated_update(z: Tensor, h_prev: Tensor, h_bar: Tensor) -> Tensor:
    """The gated update from the lecture: ``h = z * h_prev + (1 - z) * h_bar``.

    ``z`` near one keeps the old state, near zero takes the candidate ``h_bar``. The GRU
    uses it as its state update. Mixed dtypes (float32 states under a bfloat16 autocast)
    are computed in the wider one, as other pointwise operations promote.
    """
    if not h_bar.dtype == h_prev.dtype == z.dtype:  # lerp, unlike + and *, does not promote
        dtype = torch.promote_types(torch.promote_types(h_bar.dtype, h_prev.dtype), z.dtype)
        h_bar, h_prev, z = h_bar.to(dtype), h_prev.to(dtype), z.to(dtype)
    return torch.lerp(h_bar, h_prev, z)


def lstm_update(gates: Tensor, c_children: Tensor, forget: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The LSTM's pointwise part, shared by the LSTM and the Tree-LSTM cells.

    ``gates`` holds pre-activations in torch's order ``(i, f, g, o)``, each ``hidden``
    wide. ``c = i * tanh(g) + sum_k sigmoid(f_k) * c_k``, ``h = sigmoid(o) * tanh(c)``.
    For an LSTM, ``c_children`` is the previous cell state and ``forget`` is None (the
    ``f`` block of ``gates`` is used). For a Tree-LSTM, ``forget`` holds the already
    summed ``sigmoid(f_k) * c_k`` over the children and ``c_children`` is ignored.

    Shapes:
        gates: ``[n, 4 * hidden]``; c_children, forget: ``[n, hidden]``.
    """
    i, f, g, o = gates.chunk(4, 1)
    carry = forget if forget is not None else torch.sigmoid(f) * c_children
    c = torch.addcmul(carry, torch.sigmoid(i), torch.tanh(g))
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


class RecurrentCell(nn.Module):
    """Base class: torch-compatible parameters plus the split into projection and step.

    Subclasses set ``num_chunks`` (gates per hidden unit) and implement :meth:`step`.
    """

    num_chunks: int = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, orthogonal: bool = False) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"input_size and hidden_size must be positive, got {input_size} and {hidden_size}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.orthogonal = orthogonal
        gates = self.num_chunks * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gates, self.recurrent_input_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gates))
            self.bias_hh = nn.Parameter(torch.empty(gates))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    @property
    def recurrent_input_size(self) -> int:
        return self.hidden_size

    @property
    def state_is_tuple(self) -> bool:
        return False

    def reset_parameters(self) -> None:
        """torch.nn's initialisation, U(-1/sqrt(hidden), 1/sqrt(hidden)); with
        ``orthogonal=True`` each gate's recurrent block is an orthogonal matrix
        (Saxe et al. 2014), which keeps the recurrent Jacobian's singular values near one."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)
        if self.orthogonal:
            with torch.no_grad():
                for block in self.weight_hh.split(self.hidden_size, 0):
                    nn.init.orthogonal_(block)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"

    def project_input(self, input: Tensor) -> Tensor:
        """``W_ih x + b_ih + b_hh`` for every row of ``input`` ``[n, input_size]``.

        The recurrent bias is added here, once for all nodes, wherever it enters the gates
        linearly (all of it except the GRU's ``b_hn``), so that a step is one fused
        multiply-add ``projected + h W_hh^T``.
        """
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expects input features of size {self.input_size}, "
                f"got a tensor of shape {tuple(input.shape)}"
            )
        return F.linear(input, self.weight_ih, self._input_bias())

    def _input_bias(self) -> Tensor | None:
        if self.bias_ih is None:
            return None
        return self.bias_ih + self.bias_hh

    def _recurrent(self, projected: Tensor, h: Tensor) -> Tensor:
        """``projected + h W_hh^T`` in one fused operation."""
        return torch.addmm(projected, h, self.weight_hh.t())

    def step(self, projected: Tensor, hx: State | None) -> State:
        """One recurrent step from projected inputs ``[n, num_chunks * hidden]``."""
        raise NotImplementedError

    def step_incoming(self, projected: Tensor, incoming: Incoming) -> State:
        """A step whose previous state is the sum of the states arriving along edges."""
        return self.step(projected, incoming.summed_states())

    def check_edge_attr(self, edge_attr: Tensor | None, edge_index: Tensor) -> None:
        """Validates per-edge attributes once, before a loop starts (not per level)."""

    def forward(self, input: Tensor, hx: State | None = None) -> State:
        """``torch.nn``-compatible call: ``input`` ``[n, input_size]`` or ``[input_size]``."""
        unbatched = input.dim() == 1
        if unbatched:
            input = input.unsqueeze(0)
            if hx is not None:
                hx = tuple(h.unsqueeze(0) for h in hx) if isinstance(hx, tuple) else hx.unsqueeze(0)
        out = self.step(self.project_input(input), hx)
        if unbatched:
            out = tuple(o.squeeze(0) for o in out) if isinstance(out, tuple) else out.squeeze(0)
        return out

    def zero_state(self, n: int, like: Tensor) -> State:
        zeros = like.new_zeros(n, self.hidden_size)
        return (zeros, zeros) if self.state_is_tuple else zeros


class ElmanCell(RecurrentCell):
    """Elman cell, ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``; torch.nn.RNNCell's layout.

    Shapes:
        input: ``[n, input_size]``; hx, output: ``[n, hidden_size]``.
    """

    num_chunks = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: Nonlinearity = Nonlinearity.TANH,
        *,
        orthogonal: bool = False,
    ) -> None:
        if not isinstance(nonlinearity, Nonlinearity):
            raise TypeError(f"nonlinearity must be a structnets.cells.Nonlinearity, got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, orthogonal=orthogonal)

    def step(self, projected: Tensor, hx: Tensor | None) -> Tensor:
        pre = projected if hx is None else self._recurrent(projected, hx)
        return self.nonlinearity.function(pre)


class GRUCell(RecurrentCell):
    """GRU cell (Cho et al. 2014) in torch.nn.GRUCell's layout, gates ``(r, z, n)``.

    ``r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)``, ``z`` likewise,
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = z * h + (1 - z) * n``.
    """

    num_chunks = 3

    def _input_bias(self) -> Tensor | None:
        if self.bias_ih is None:
            return None
        # b_hn sits inside r * (W_hn h + b_hn), so only the r and z parts fold.
        folded = self.bias_hh.clone()
        folded[2 * self.hidden_size :] = 0
        return self.bias_ih + folded

    def step(self, projected: Tensor, hx: Tensor | None) -> Tensor:
        x_r, x_z, x_n = projected.chunk(3, 1)
        # In the projection's dtype: under autocast it is the lower precision, the bias float32.
        b_n = None if self.bias_hh is None else self.bias_hh[2 * self.hidden_size :].to(projected.dtype)
        if hx is None:
            r, z = torch.sigmoid(x_r), torch.sigmoid(x_z)
            n = torch.tanh(x_n if b_n is None else torch.addcmul(x_n, r, b_n.expand_as(x_n)))
            return (1 - z) * n
        h_r, h_z, h_n = torch.mm(hx, self.weight_hh.t()).chunk(3, 1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(torch.addcmul(x_n, r, h_n if b_n is None else h_n + b_n))
        return gated_update(z, hx, n)


class ChildSumTreeGRUCell(GRUCell):
    """Child-sum Tree-GRU cell, the GRU's counterpart of the child-sum Tree-LSTM.

    With ``h~ = sum_k h_k`` over the children k of a node: ``z = sigmoid(W_iz x + b_iz +
    W_hz h~ + b_hz)``; one reset gate per child, ``r_k = sigmoid(W_ir x + b_ir + W_hr h_k +
    b_hr)``; ``n = tanh(W_in x + b_in + sum_k r_k * (W_hn h_k + b_hn))``;
    ``h = z * h~ + (1 - z) * n``. Each child's state is reset by its own gate, as each
    child's memory is forgotten by its own gate in the Tree-LSTM. With exactly one child
    this is the GRU step, so a chain evaluates like :class:`GRUCell` with the same
    parameters; a leaf is a GRU step from a zero state.
    """

    def step_incoming(self, projected: Tensor, incoming: Incoming) -> Tensor:
        h_children = incoming.states
        if incoming.one_to_one:
            return self.step(projected, h_children)
        hs = self.hidden_size
        x_r, x_z, x_n = projected.chunk(3, 1)
        h_sum = incoming.sum(h_children)
        z = torch.sigmoid(torch.addmm(x_z, h_sum, self.weight_hh[hs : 2 * hs].t()))
        per_child = torch.mm(h_children, self.weight_hh[[*range(hs), *range(2 * hs, 3 * hs)]].t())
        h_r, h_n = per_child.split(hs, 1)
        if self.bias_hh is not None:
            h_n = h_n + self.bias_hh[2 * hs :].to(h_n.dtype)
        r = torch.sigmoid(x_r.index_select(0, incoming.receivers) + h_r)
        n = torch.tanh(x_n + incoming.sum(r * h_n))
        return gated_update(z, h_sum, n)


class LSTMCell(RecurrentCell):
    """LSTM cell (Hochreiter & Schmidhuber 1997) in torch.nn.LSTMCell's layout, gates
    ``(i, f, g, o)``: ``c' = f * c + i * g``, ``h' = o * tanh(c')``."""

    num_chunks = 4

    @property
    def state_is_tuple(self) -> bool:
        return True

    def step(self, projected: Tensor, hx: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        if hx is None:
            return lstm_update(projected, None, forget=projected.new_zeros(projected.shape[0], self.hidden_size))
        h, c = hx
        return lstm_update(self._recurrent(projected, h), c)


class ChildSumTreeLSTMCell(LSTMCell):
    """Child-sum Tree-LSTM cell (Tai et al. 2015, eq. 2-8), LSTM parameter layout.

    With ``h~ = sum_k h_k`` over the children k of a node:
    ``i, o, u`` from ``W x + U h~ + b``; one forget gate per child,
    ``f_k = sigmoid(W_f x + U_f h_k + b_f)``; ``c = i * u + sum_k f_k * c_k``,
    ``h = o * tanh(c)``. With exactly one child this is the LSTM step, so a chain
    evaluates like :class:`LSTMCell` with the same parameters.
    """

    def step_incoming(self, projected: Tensor, incoming: Incoming) -> tuple[Tensor, Tensor]:
        h_children, c_children = incoming.states
        if incoming.one_to_one:
            return lstm_update(self._recurrent(projected, h_children), c_children)
        hs = self.hidden_size
        # Forget gates are per child: the f block is applied to each child's own state.
        x_f = projected[:, hs : 2 * hs].index_select(0, incoming.receivers)
        f = torch.sigmoid(torch.addmm(x_f, h_children, self.weight_hh[hs : 2 * hs].t()))
        carry = incoming.sum(f * c_children)
        # i, g and o see the summed children; the f block computed alongside goes unused,
        # which is cheaper than three separate products.
        gates = self._recurrent(projected, incoming.sum(h_children))
        return lstm_update(gates, None, forget=carry)


class NaryTreeLSTMCell(RecurrentCell):
    """N-ary Tree-LSTM cell (Tai et al. 2015, eq. 9-14) for ordered children.

    A node's children fill ``num_children`` slots (the slot is each edge's ``edge_attr``;
    missing children count as zero states). With ``h_1..h_N`` the slots' states,
    ``i = sigmoid(W_i x + sum_l U_i^l h_l + b_i)``, ``o`` and ``u`` likewise,
    ``f_k = sigmoid(W_f x + sum_l U_f^{kl} h_l + b_f)``, ``c = i * u + sum_l f_l * c_l``.

    Parameters follow the LSTM's layout with the forget block repeated per slot, gate
    order ``(i, f_1 .. f_N, g, o)``; ``weight_hh`` is ``[(N + 3) * hidden, N * hidden]``.
    With one slot the cell is exactly :class:`LSTMCell`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        num_children: int = 2,
        *,
        orthogonal: bool = False,
    ) -> None:
        if num_children < 1:
            raise ValueError(f"num_children must be at least 1, got {num_children}")
        self.num_children = num_children
        self.num_chunks = num_children + 3
        super().__init__(input_size, hidden_size, bias, orthogonal=orthogonal)

    @property
    def recurrent_input_size(self) -> int:
        return self.num_children * self.hidden_size

    @property
    def state_is_tuple(self) -> bool:
        return True

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)
        if self.orthogonal:
            with torch.no_grad():
                for row in self.weight_hh.split(self.hidden_size, 0):
                    for block in row.split(self.hidden_size, 1):
                        nn.init.orthogonal_(block)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_children={self.num_children}"

    def check_edge_attr(self, edge_attr: Tensor | None, edge_index: Tensor) -> None:
        if edge_attr is None:
            raise ValueError("NaryTreeLSTMCell needs each edge's child slot as edge_attr, got None")
        num_edges = edge_index.shape[1]
        slots = edge_attr.view(-1)
        if slots.numel() != num_edges or slots.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"edge_attr must hold one integer child slot per edge ({num_edges}), "
                f"got shape {tuple(edge_attr.shape)} and dtype {edge_attr.dtype}"
            )
        if num_edges and (int(slots.min()) < 0 or int(slots.max()) >= self.num_children):
            raise ValueError(
                f"child slots must lie in [0, {self.num_children}), got values from "
                f"{int(slots.min())} to {int(slots.max())}"
            )
        key = edge_index[1].long() * self.num_children + slots.long()
        if num_edges and key.unique().numel() != num_edges:
            raise ValueError("two children of one node share a child slot; each slot takes at most one child")

    def _gates(self, projected: Tensor, h_slots: Tensor, c_slots: Tensor) -> tuple[Tensor, Tensor]:
        # h_slots, c_slots: (n, N, hidden)
        n, slots, hs = c_slots.shape
        pre = self._recurrent(projected, h_slots.reshape(n, slots * hs))
        i, f, g, o = pre.split([hs, slots * hs, hs, hs], 1)
        carry = (torch.sigmoid(f).view(n, slots, hs) * c_slots).sum(1)
        return lstm_update(torch.cat([i, f[:, :hs], g, o], 1), None, forget=carry)

    def step(self, projected: Tensor, hx: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        """A step from slot states ``hx = (h, c)``, each ``[n, num_children, hidden]``."""
        if hx is None:
            zeros = projected.new_zeros(projected.shape[0], self.num_children, self.hidden_size)
            hx = (zeros, zeros)
        return self._gates(projected, *hx)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        return self.step(self.project_input(input), hx)

    def step_incoming(self, projected: Tensor, incoming: Incoming) -> tuple[Tensor, Tensor]:
        if incoming.edge_attr is None:
            raise ValueError("NaryTreeLSTMCell needs each edge's child slot as edge_attr")
        slots = incoming.edge_attr.view(-1)
        n, hs = incoming.num_receivers, self.hidden_size
        flat = incoming.receivers * self.num_children + slots
        placed = []
        for state in incoming.states:
            buffer = state.new_zeros(n * self.num_children, hs)
            placed.append(buffer.index_copy(0, flat, state).view(n, self.num_children, hs))
        return self._gates(projected, placed[0], placed[1])


class ChainCell(enum.Enum):
    """The three sequence cells by name, for configs and the command line (``--cell lstm``).

    ``ChainCell.LSTM.cls`` is the class; configs store the Enum, never a string to dispatch on.
    """

    ELMAN = "elman"
    GRU = "gru"
    LSTM = "lstm"

    @property
    def cls(self) -> type[RecurrentCell]:
        return {ChainCell.ELMAN: ElmanCell, ChainCell.GRU: GRUCell, ChainCell.LSTM: LSTMCell}[self]
