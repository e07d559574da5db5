"""``propagate``: the one message-passing loop, under either schedule.

Topological schedule (RNNs on chains, recursive nets on trees, DAG-RNNs)::

    projected = cell.project_input(x)          # all nodes, one matrix product
    for each level l (sources first):
        incoming = states of l's senders         # gathered per edge
        state[l] = cell.step_incoming(projected[l], incoming)

Each level's states are kept as their own tensor, and a level gathers only the rows it
needs from earlier levels, so a level costs time proportional to its own nodes and edges
in the forward and in the backward pass. (Writing every level into one full-size buffer
would copy the whole buffer per level, once forward and again in autograd.)

Synchronous schedule (MPNN, interaction networks, Point-GNN)::

    for each of T rounds:
        m_v = aggregate_{u -> v} message(h_u, h_v, e_uv)
        h_v = cell(m_v, h_v)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .cells import Incoming, LSTMCell, RecurrentCell, State
from .fused import fused_lstm_levels
from .schedules import Levels, Synchronous, Topological, topological_levels

__all__ = [
    "propagate",
    "propagate_levels",
    "run_levels",
    "propagate_rounds",
    "sum_aggregate",
    "mean_aggregate",
    "max_aggregate",
]

MessageFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]  # (h, edge_index, edge_attr) -> [num_edges, d]
AggregateFn = Callable[[Tensor, Tensor, int], Tensor]


def sum_aggregate(messages: Tensor, receivers: Tensor, num_nodes: int) -> Tensor:
    """Sum of the messages arriving at each node; zeros where none arrive."""
    out = messages.new_zeros((num_nodes,) + tuple(messages.shape[1:]))
    return out.index_add(0, receivers, messages)


def mean_aggregate(messages: Tensor, receivers: Tensor, num_nodes: int) -> Tensor:
    """Mean of the messages arriving at each node; zeros where none arrive."""
    from torch_geometric.utils import scatter

    return scatter(messages, receivers, 0, num_nodes, reduce="mean")


def max_aggregate(messages: Tensor, receivers: Tensor, num_nodes: int) -> Tensor:
    """Elementwise maximum of the messages arriving at each node; zeros where none arrive."""
    from torch_geometric.utils import scatter

    return scatter(messages, receivers, 0, num_nodes, reduce="max")


def _components(state: State) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def _take(values: Tensor, rows: Tensor | None, count: int) -> Tensor:
    if rows is not None:
        return values.index_select(0, rows)
    # A whole level passes as it is: slicing it would cost a full-size copy in backward.
    return values if count == values.shape[0] else values[:count]


def _gather(
    levels_state: list[tuple[Tensor, ...]], groups: tuple[tuple[int, Tensor | None, int], ...], k: int
) -> Tensor:
    parts = [_take(levels_state[source][k], rows, count) for source, rows, count in groups]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def run_levels(
    cell: RecurrentCell,
    inputs: Tensor,
    levels: Levels,
    *,
    initial: State | None = None,
    edge_attr: Tensor | None = None,
    fuse_cell: bool = True,
) -> tuple[Tensor, ...]:
    """The level loop itself: every node's state components, in schedule (level) order.

    With ``fuse_cell`` and a plain :class:`~structnets.cells.LSTMCell`, the loop runs as one
    autograd node with a hand-written backward (:mod:`structnets.fused`); otherwise the
    cell's own ``step`` runs under autograd, level by level. Both compute the same thing.

    Returns:
        One ``[num_nodes, hidden]`` tensor per state component, rows in ``levels.order``.
    """
    if inputs.shape[0] != levels.num_nodes:
        raise ValueError(f"inputs have {inputs.shape[0]} rows but the schedule has {levels.num_nodes} nodes")
    if levels.order is not None:
        inputs = inputs.index_select(0, levels.order)
    projected = cell.project_input(inputs)
    if fuse_cell and type(cell) is LSTMCell and edge_attr is None:
        return fused_lstm_levels(projected, cell.weight_hh, levels, initial)
    # split() gives every level a view whose gradients autograd joins with one cat; indexing
    # the projection per level would instead allocate a full-size gradient per level.
    projected = projected.split(levels.sizes)
    states: list[tuple[Tensor, ...]] = []
    for depth, level_input in enumerate(levels.inputs):
        if level_input is None:
            state = cell.step(projected[0], initial)
        else:
            gathered = [_gather(states, level_input.groups, k) for k in range(len(states[0]))]
            incoming = Incoming(
                states=tuple(gathered) if cell.state_is_tuple else gathered[0],
                receivers=level_input.receivers,
                num_receivers=levels.sizes[depth],
                one_to_one=level_input.one_to_one,
                edge_attr=None if edge_attr is None else edge_attr.index_select(0, level_input.edge_ids),
            )
            state = cell.step_incoming(projected[depth], incoming)
        states.append(_components(state))
    return tuple(torch.cat([s[k] for s in states]) if len(states) > 1 else states[0][k] for k in range(len(states[0])))


def propagate_levels(
    cell: RecurrentCell,
    inputs: Tensor,
    levels: Levels,
    *,
    initial: State | None = None,
    edge_attr: Tensor | None = None,
    fuse_cell: bool = True,
) -> State:
    """Runs ``cell`` once per node, level by level (a topological schedule).

    Args:
        cell: the step; see :class:`structnets.cells.RecurrentCell`.
        inputs: ``[num_nodes, input_size]`` node inputs.
        levels: the schedule, from :func:`structnets.schedules.topological_levels`.
        initial: state of the source nodes, one row per node of ``levels.sources`` (in
            increasing node id for schedules from ``topological_levels``); None for zeros.
        edge_attr: per-edge attributes handed to the cell (the child slot for N-ary
            Tree-LSTMs), indexed like the columns of the edge index.
        fuse_cell: allow the fused LSTM loop (see :func:`run_levels`).

    Returns:
        The state of every node, ``[num_nodes, hidden]`` (a tuple for LSTM cells).
    """
    if levels.num_nodes == 0:
        if inputs.shape[0]:
            raise ValueError(f"inputs have {inputs.shape[0]} rows but the schedule has no nodes")
        empty = inputs.new_zeros(0, cell.hidden_size)
        return (empty, empty) if cell.state_is_tuple else empty
    out = run_levels(cell, inputs, levels, initial=initial, edge_attr=edge_attr, fuse_cell=fuse_cell)
    if levels.rank is not None:
        out = [o.index_select(0, levels.rank) for o in out]
    return tuple(out) if cell.state_is_tuple else out[0]


def propagate_rounds(
    cell: RecurrentCell,
    state: State,
    edge_index: Tensor,
    rounds: int,
    *,
    message: MessageFn | None = None,
    aggregate: AggregateFn = sum_aggregate,
    edge_attr: Tensor | None = None,
) -> State:
    """Runs ``rounds`` synchronous rounds: every node aggregates messages, then updates.

    ``message(h, edge_index, edge_attr)`` maps node states ``[num_nodes, hidden]`` to one
    message per edge ``[num_edges, cell.input_size]``, gathering what it needs (the sender's
    state, the receiver's, or both); None passes the sender's state on.
    ``aggregate(messages, receivers, num_nodes)`` reduces them per node (sum by default);
    the node update is ``cell(aggregated, own_state)``.
    """
    senders, receivers = edge_index[0], edge_index[1]
    num_nodes = _components(state)[0].shape[0]
    for _ in range(rounds):
        h = _components(state)[0]
        messages = h.index_select(0, senders) if message is None else message(h, edge_index, edge_attr)
        state = cell(aggregate(messages, receivers, num_nodes), state)
    return state


def propagate(
    cell: RecurrentCell,
    node_values: Tensor | State,
    edge_index: Tensor,
    schedule: Topological | Synchronous,
    *,
    initial: State | None = None,
    edge_attr: Tensor | None = None,
    message: MessageFn | None = None,
    aggregate: AggregateFn = sum_aggregate,
) -> State:
    """The message-passing loop behind every structnets model.

    Under :class:`Topological` (optionally reversed), ``node_values`` are node inputs
    ``[num_nodes, input_size]``; each node's state is ``cell`` applied to its input and to
    the states of its senders, which the cell aggregates (a sum for the chain cells, one
    forget gate per child for the Tree-LSTMs). ``initial`` gives the sources' states. The
    levels are computed once and cached with ``edge_index``.

    Under :class:`Synchronous`, ``node_values`` are the nodes' initial states and each of
    ``schedule.rounds`` rounds applies ``message``, ``aggregate`` and the ``cell`` update
    at every node at once.

    Shapes:
        node_values: ``[num_nodes, features]``; edge_index: ``[2, num_edges]``
        (row 0 senders, row 1 receivers); edge_attr: ``[num_edges, ...]``.
        Returns ``[num_nodes, hidden]`` (a tuple for LSTM cells).
    """
    if isinstance(schedule, Synchronous):
        return propagate_rounds(
            cell, node_values, edge_index, schedule.rounds, message=message, aggregate=aggregate, edge_attr=edge_attr
        )
    if not isinstance(schedule, Topological):
        raise TypeError(f"schedule must be Topological or Synchronous, got {schedule!r}")
    if message is not None:
        raise ValueError("message functions apply to the Synchronous schedule only")
    if not isinstance(node_values, Tensor) or node_values.dim() != 2:
        raise ValueError("under a Topological schedule node_values must be a [num_nodes, input_size] tensor")
    cell.check_edge_attr(edge_attr, edge_index.flip(0) if schedule.reverse else edge_index)
    levels = topological_levels(edge_index, node_values.shape[0], reverse=schedule.reverse)
    return propagate_levels(cell, node_values, levels, initial=initial, edge_attr=edge_attr)
