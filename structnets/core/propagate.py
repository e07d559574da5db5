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

Synchronous schedule (MPNN, interaction networks, Point-GNN), the edge -> node blocks of
graph_nets and jraph's ``InteractionNetwork``::

    for each round t = 1..T:
        e_uv = edge_step_t(e_uv, h_u, h_v)       # every edge, if there is an edge step
        m_v  = aggregate_{u -> v} e_uv            # or of h_u when there is none
        h_v  = step_t(m_v, h_v)                   # every node
    return GraphState(h, e)

The rounds share one step (MPNN) or take one from a sequence per round (GNS, Point-GNN);
the same holds for the edge step. Edge states come back beside the node states, so a
model that carries edges from round to round needs no side channel.

A torch_geometric ``Data`` or ``Batch`` (or any object with ``x``, ``edge_index`` and
``edge_attr`` attributes) may stand in for the tensors: ``propagate(cell, data, schedule)``.

For torch.export and ONNX, :func:`propagate_level_lists` runs the topological schedule
from a schedule computed outside the traced program and passed in as index tensors, with
no data-dependent shapes or control flow. ``torch.compile(fullgraph=True)`` takes
:func:`propagate_levels` as it is, given a precomputed schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol, TypeVar, overload

import torch
from torch import Tensor, nn

from .cells import Incoming, LSTMCell, RecurrentCell, State
from .fused import fused_lstm_levels
from .schedules import Levels, Synchronous, Topological, check_edge_index, topological_levels

__all__ = [
    "GraphState",
    "GraphData",
    "is_graph_data",
    "NodeStep",
    "EdgeStep",
    "AggregateFn",
    "propagate",
    "propagate_levels",
    "propagate_level_lists",
    "run_levels",
    "propagate_rounds",
    "sum_aggregate",
    "mean_aggregate",
    "max_aggregate",
]

AggregateFn = Callable[[Tensor, Tensor, int], Tensor]
"""``aggregate(messages [num_edges, d], receivers [num_edges], num_nodes) -> [num_nodes, d]``."""


class GraphState(NamedTuple):
    """Node and edge states after a synchronous schedule.

    Attributes:
        nodes: ``[num_nodes, hidden]`` (a tuple for LSTM cells).
        edges: ``[num_edges, edge_size]`` as the last round's edge step left them; the
            edge states passed in when no round ran; None without edge states.
    """

    nodes: State
    edges: Tensor | None


class NodeStep(Protocol):
    """``state' = step(aggregated, state)``: a node's new state from its aggregated messages.

    Every cell satisfies it (the aggregated messages are the cell's input, as in Gilmer et
    al.'s GRU update), and so does any module called that way.

    Shapes:
        aggregated: ``[num_nodes, message_size]``; state and result: ``[num_nodes, hidden]``
        (tuples for LSTM cells).
    """

    def __call__(self, aggregated: Tensor, state: State, /) -> State: ...


class EdgeStep(Protocol):
    """``e' = edge_step(e, h, edge_index)``: every edge's new state from its own and its ends'.

    Edge ``k`` may read ``e[k]`` and the states of its sender ``h[edge_index[0, k]]`` and
    receiver ``h[edge_index[1, k]]``. The node states come whole, with the edge index,
    rather than already gathered per edge, so that work per node (a linear map of every
    state) runs once per node before the gather instead of once per edge: with some 30
    edges per node that is most of a layer's cost. ``e`` is None in the first round when
    :func:`propagate` was given no edge states; afterwards it is the previous round's result.
    Edges that carry no state of their own (MPNN's messages from fixed bond features,
    Point-GNN's from fixed positions) keep that fixed data in the edge step and ignore ``e``.

    Shapes:
        edges: ``[num_edges, edge_size]`` or None; nodes: ``[num_nodes, hidden]`` (``h``
        of an LSTM state); edge_index: ``[2, num_edges]``; returns ``[num_edges, message_size]``.
    """

    def __call__(self, edges: Tensor | None, nodes: Tensor, edge_index: Tensor, /) -> Tensor: ...


_Step = TypeVar("_Step")


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
    autograd node with a hand-written backward (:mod:`structnets.fused`); otherwise (and
    while ``torch.compile`` traces it) the cell's own ``step`` runs under autograd, level by
    level. Both compute the same thing.

    Returns:
        One ``[num_nodes, hidden]`` tensor per state component, rows in ``levels.order``.
    """
    if inputs.shape[0] != levels.num_nodes:
        raise ValueError(f"inputs have {inputs.shape[0]} rows but the schedule has {levels.num_nodes} nodes")
    if levels.order is not None:
        inputs = inputs.index_select(0, levels.order)
    projected = cell.project_input(inputs)
    # Traced by torch.compile, the cell's own steps run instead: the compiler fuses them
    # itself, and it cannot trace the fused loop's in-place ``out=`` writes.
    if fuse_cell and type(cell) is LSTMCell and edge_attr is None and not torch.compiler.is_compiling():
        # Under autocast the projection comes out in the lower precision while the weights
        # stay float32; the fused loop's in-place products need one dtype (autograd casts
        # the weight's gradient back).
        weight_hh = cell.weight_hh if cell.weight_hh.dtype == projected.dtype else cell.weight_hh.to(projected.dtype)
        return fused_lstm_levels(projected, weight_hh, levels, initial)
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


def propagate_level_lists(
    cell: RecurrentCell,
    inputs: Tensor,
    edge_index: Tensor,
    nodes: Sequence[Tensor],
    edges: Sequence[Tensor],
    *,
    edge_attr: Tensor | None = None,
    reverse: bool = False,
) -> State:
    """The level loop with the schedule as tensors alone (:func:`structnets.schedules.level_lists`).

    The same computation as :func:`propagate_levels`, level by level, each level's step
    over its own nodes and arriving edges, but the level sizes live only in the shapes of
    ``nodes`` and ``edges``, never in Python ints, and nothing reads a tensor's values on
    the host. So ``torch.export`` and the ONNX exporter take it with every size dynamic
    (declare each level's dimension with ``torch.export.Dim(..., min=0)``: levels past a
    graph's depth are empty), and one program runs every graph of at most ``len(nodes)``
    levels. States are kept in one buffer, rewritten out of place per level, which costs a
    copy of it per level: the level loop remains the one to train with. ``initial`` states
    are not supported: the sources start from zeros.

    Args:
        cell: the step, as for :func:`propagate_levels`.
        inputs: ``[num_nodes, input_size]``.
        edge_index: ``[2, num_edges]``, row 0 senders.
        nodes, edges: the schedule (``level_lists(edge_index, num_nodes, L, reverse=reverse)``).
        edge_attr: per-edge attributes handed to the cell (an N-ary Tree-LSTM's slots).
        reverse: run against the edges, as the schedule was computed.

    Returns:
        Every node's state, ``[num_nodes, hidden]`` (a tuple for LSTM cells); zeros for
        nodes in no level.
    """
    if len(edges) != len(nodes) - 1:
        raise ValueError(f"the schedule lists {len(nodes)} levels' nodes but {len(edges)} levels' edges, not one less")
    check_edge_index(edge_index, inputs.shape[0], inputs.device)
    if not torch.compiler.is_compiling():  # a check of values, which tracing cannot take
        cell.check_edge_attr(edge_attr, edge_index.flip(0) if reverse else edge_index)
    senders, receivers = (edge_index[1], edge_index[0]) if reverse else (edge_index[0], edge_index[1])
    num_nodes = inputs.shape[0]
    projected = cell.project_input(inputs)
    first = _components(cell.step(projected.index_select(0, nodes[0]), None))
    buffers = [part.new_zeros(num_nodes, part.shape[1]).index_copy(0, nodes[0], part) for part in first]
    for level_nodes, level_edges in zip(nodes[1:], edges):
        # Each receiver's position within its level, from a node -> position map.
        position = torch.zeros(num_nodes, dtype=torch.long, device=inputs.device)
        position = position.index_copy(0, level_nodes, torch.arange(level_nodes.shape[0], device=inputs.device))
        sent = tuple(buffer.index_select(0, senders.index_select(0, level_edges)) for buffer in buffers)
        incoming = Incoming(
            states=sent if cell.state_is_tuple else sent[0],
            receivers=position.index_select(0, receivers.index_select(0, level_edges)),
            num_receivers=level_nodes.shape[0],
            one_to_one=False,
            edge_attr=None if edge_attr is None else edge_attr.index_select(0, level_edges),
        )
        state = _components(cell.step_incoming(projected.index_select(0, level_nodes), incoming))
        buffers = [buffer.index_copy(0, level_nodes, part.to(buffer.dtype)) for buffer, part in zip(buffers, state)]
    return tuple(buffers) if cell.state_is_tuple else buffers[0]


def _per_round(step: _Step | Sequence[_Step], rounds: int, name: str) -> list[_Step]:
    """One step per round: the same one ``rounds`` times, or a sequence of exactly ``rounds``."""
    # A ModuleList is no collections.abc.Sequence; an nn.Sequential, though indexable, is one step.
    if isinstance(step, (Sequence, nn.ModuleList)):
        if len(step) != rounds:
            raise ValueError(f"{name} holds {len(step)} steps, one per round, but the schedule has {rounds} rounds")
        return list(step)
    return [step] * rounds


def propagate_rounds(
    step: NodeStep | Sequence[NodeStep],
    state: State,
    edge_index: Tensor,
    rounds: int,
    *,
    edges: Tensor | None = None,
    edge_step: EdgeStep | Sequence[EdgeStep] | None = None,
    aggregate: AggregateFn = sum_aggregate,
) -> GraphState:
    """Runs ``rounds`` synchronous rounds: edges update, then every node from its messages.

    In round ``t``, with ``h`` the node states (``h`` of an LSTM state)::

        e = edge_step_t(e, h, edge_index)                          # if there is an edge step
        m = aggregate(e if edge_step else h[senders], receivers, num_nodes)
        state = step_t(m, state)

    Args:
        step: the node update, one for every round (weights shared) or a sequence with one
            per round (``nn.ModuleList`` included).
        state: every node's initial state.
        edge_index: ``[2, num_edges]``, row 0 senders, row 1 receivers.
        rounds: T.
        edges: every edge's initial state, for the first round's edge step; None for none.
        edge_step: the edge update, one or one per round; None passes the senders' states
            on as the messages.
        aggregate: reduces the messages per receiver (:func:`sum_aggregate`,
            :func:`mean_aggregate`, :func:`max_aggregate` or any such function).

    Returns:
        :class:`GraphState` of the final node and edge states.
    """
    nodes = _components(state)[0]
    num_nodes = nodes.shape[0]
    check_edge_index(edge_index, num_nodes, nodes.device)
    if edges is not None:
        if edge_step is None:
            raise ValueError("edge states (edges=) need an edge_step to update them")
        if edges.shape[0] != edge_index.shape[1]:
            raise ValueError(f"edges have {edges.shape[0]} rows but edge_index has {edge_index.shape[1]} edges")
        if edges.device != nodes.device:
            raise ValueError(f"the edge states are on {edges.device} but the node states are on {nodes.device}")
    steps = _per_round(step, rounds, "step")
    edge_steps = None if edge_step is None else _per_round(edge_step, rounds, "edge_step")
    senders, receivers = edge_index[0], edge_index[1]
    for t in range(rounds):
        h = _components(state)[0]
        if edge_steps is None:
            messages = h.index_select(0, senders)
        else:
            edges = messages = edge_steps[t](edges, h, edge_index)
        state = steps[t](aggregate(messages, receivers, num_nodes), state)
    return GraphState(state, edges)


def _refuse(schedule: Topological | Synchronous, **arguments: object) -> None:
    """Raises for the first argument given that the schedule has no use for."""
    for name, value in arguments.items():
        if value is not None:
            raise ValueError(f"{name} does not apply to the {type(schedule).__name__} schedule: {_USES[name]}")


_USES = {
    "inputs": "node inputs feed the cell of a Topological schedule; under Synchronous pass None "
    "and give the initial node states as state=",
    "initial": "it gives the source nodes' states under Topological; under Synchronous give every "
    "node's initial state as state=",
    "edge_attr": "it hands the cell fixed per-edge attributes under Topological; under Synchronous "
    "give edge states as edges= for the edge_step to update",
    "state": "under Topological every node's state comes from its senders; the sources' states are initial=",
    "edges": "edge states are updated by the edge_step of a Synchronous schedule",
    "edge_step": "edge steps run between the rounds of a Synchronous schedule",
    "aggregate": "under Topological the cell aggregates its incoming states itself",
}


class GraphData(Protocol):
    """What :func:`propagate` reads of a graph container: a torch_geometric ``Data`` or
    ``Batch`` has these attributes (None where absent), and so may any object."""

    @property
    def x(self) -> Tensor | None: ...

    @property
    def edge_index(self) -> Tensor | None: ...

    @property
    def edge_attr(self) -> Tensor | None: ...


def is_graph_data(value: object) -> bool:
    """Whether ``value`` is a graph container (an ``edge_index`` attribute) rather than a tensor."""
    return value is not None and not isinstance(value, Tensor) and hasattr(value, "edge_index")


@overload
def propagate(
    step: RecurrentCell,
    inputs: Tensor,
    edge_index: Tensor,
    schedule: Topological,
    *,
    initial: State | None = None,
    edge_attr: Tensor | None = None,
) -> State: ...


@overload
def propagate(
    step: RecurrentCell | NodeStep | Sequence[NodeStep],
    inputs: GraphData,
    edge_index: Topological | Synchronous,
    schedule: None = None,
    *,
    initial: State | None = None,
    edge_attr: Tensor | None = None,
    state: State | None = None,
    edges: Tensor | None = None,
    edge_step: EdgeStep | Sequence[EdgeStep] | None = None,
    aggregate: AggregateFn | None = None,
) -> State | GraphState: ...


@overload
def propagate(
    step: NodeStep | Sequence[NodeStep],
    inputs: None,
    edge_index: Tensor,
    schedule: Synchronous,
    *,
    state: State,
    edges: Tensor | None = None,
    edge_step: EdgeStep | Sequence[EdgeStep] | None = None,
    aggregate: AggregateFn | None = None,
) -> GraphState: ...


def propagate(
    step: RecurrentCell | NodeStep | Sequence[NodeStep],
    inputs: Tensor | GraphData | None,
    edge_index: Tensor | Topological | Synchronous | None = None,
    schedule: Topological | Synchronous | None = None,
    *,
    initial: State | None = None,
    edge_attr: Tensor | None = None,
    state: State | None = None,
    edges: Tensor | None = None,
    edge_step: EdgeStep | Sequence[EdgeStep] | None = None,
    aggregate: AggregateFn | None = None,
) -> State | GraphState:
    """The message-passing loop behind every structnets model.

    Every argument means one thing; one that the schedule has no use for raises
    ``ValueError`` rather than being ignored.

    Under :class:`Topological` (optionally reversed), ``step`` is a cell and each node's
    state is the cell applied to its input and to the states of its senders, which the
    cell aggregates (a sum for the chain cells, one forget gate per child for the
    Tree-LSTMs). The levels are computed once and cached with ``edge_index``.

    Under :class:`Synchronous`, every node updates in each of ``schedule.rounds`` rounds,
    after an optional edge update: see :func:`propagate_rounds` for the round.

    A graph container in place of ``inputs`` (a torch_geometric ``Data`` or ``Batch``:
    ``propagate(step, data, schedule)``) supplies the tensors: its ``edge_index``; under
    Topological its ``x`` as ``inputs`` and its ``edge_attr`` as ``edge_attr``; under
    Synchronous its ``x`` as ``state`` and, when there is an ``edge_step``, its
    ``edge_attr`` as ``edges`` (without an edge step the messages are the senders' states
    and ``edge_attr`` is not read). A keyword given explicitly (``state=``, ``edges=``,
    ``edge_attr=``) takes the place of the container's field.

    Args:
        step: the node update: a cell under Topological; under Synchronous any
            :class:`NodeStep`, or a sequence of ``rounds`` of them (weights not shared).
        inputs: node inputs, the cell's input at each node (Topological); None under
            Synchronous, where no input enters after the initial state; or a graph
            container (see above).
        edge_index: row 0 senders, row 1 receivers; with a graph container, the schedule
            (or None, the schedule then given as ``schedule=``).
        schedule: :class:`Topological` or :class:`Synchronous`.
        initial: Topological: the source nodes' states, one row per node of the
            levels' ``sources`` (increasing node id); None for zeros.
        edge_attr: Topological: fixed per-edge attributes handed to the cell (the child
            slot of an N-ary Tree-LSTM).
        state: Synchronous, required: every node's initial state.
        edges: Synchronous: every edge's initial state, read by the first ``edge_step``.
        edge_step: Synchronous: the :class:`EdgeStep`, or one per round; None makes the
            senders' states the messages.
        aggregate: Synchronous: reduces messages per receiver; None for
            :func:`sum_aggregate`.

    Returns:
        Topological: every node's state. Synchronous: :class:`GraphState` ``(nodes, edges)``.

    Shapes:
        inputs: ``[num_nodes, input_size]``; edge_index: ``[2, num_edges]``;
        edge_attr: ``[num_edges, ...]``; state: ``[num_nodes, hidden]``;
        edges: ``[num_edges, edge_size]``. Node states are ``[num_nodes, hidden]``
        (tuples for LSTM cells).
    """
    if is_graph_data(inputs):
        data = inputs
        if isinstance(edge_index, (Topological, Synchronous)):
            if schedule is not None:
                raise ValueError("give the schedule once: propagate(step, data, schedule)")
            edge_index, schedule = None, edge_index
        if edge_index is not None:
            raise ValueError(
                "with a graph container the edges are its edge_index: call propagate(step, data, schedule), "
                "or pass the tensors as propagate(step, x, edge_index, schedule)"
            )
        if not isinstance(schedule, (Topological, Synchronous)):
            raise TypeError(f"schedule must be Topological or Synchronous, got {schedule!r}")
        edge_index = data.edge_index
        if edge_index is None:
            raise ValueError(f"the {type(data).__name__} has no edge_index")
        x, data_edge_attr = getattr(data, "x", None), getattr(data, "edge_attr", None)
        if isinstance(schedule, Synchronous):
            inputs = None
            state = x if state is None else state
            if edge_step is not None and edges is None:
                edges = data_edge_attr
        else:
            inputs = x
            if inputs is None:
                raise ValueError(f"under a Topological schedule the {type(data).__name__} needs node inputs as x")
            edge_attr = data_edge_attr if edge_attr is None else edge_attr
    if isinstance(schedule, Synchronous):
        _refuse(schedule, inputs=inputs, initial=initial, edge_attr=edge_attr)
        if state is None:
            raise ValueError("the Synchronous schedule needs every node's initial state: pass state=")
        return propagate_rounds(
            step,
            state,
            edge_index,
            schedule.rounds,
            edges=edges,
            edge_step=edge_step,
            aggregate=sum_aggregate if aggregate is None else aggregate,
        )
    if not isinstance(schedule, Topological):
        raise TypeError(f"schedule must be Topological or Synchronous, got {schedule!r}")
    _refuse(schedule, state=state, edges=edges, edge_step=edge_step, aggregate=aggregate)
    if isinstance(step, (Sequence, nn.ModuleList)):
        raise ValueError("one step per round applies to the Synchronous schedule; Topological runs one cell")
    if not isinstance(inputs, Tensor) or inputs.dim() != 2:
        raise ValueError("under a Topological schedule inputs must be a [num_nodes, input_size] tensor")
    check_edge_index(edge_index, inputs.shape[0], inputs.device)
    step.check_edge_attr(edge_attr, edge_index.flip(0) if schedule.reverse else edge_index)
    levels = topological_levels(edge_index, inputs.shape[0], reverse=schedule.reverse)
    return propagate_levels(step, inputs, levels, initial=initial, edge_attr=edge_attr)
