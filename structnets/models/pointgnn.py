"""The Point-GNN network (Shi & Rajkumar 2020, section 3.2): vertex states refined by T
graph layers with auto-registration, then per-vertex class scores and box regression.

Layer t, for vertex i with state s_i at position x_i and neighbours j::

    dx_i   = MLP_h(s_i)                               (auto-registration: a learned offset)
    e_ij   = MLP_f([x_j - x_i + dx_i, s_j])           (the edge's message)
    s_i'   = MLP_g(max_j e_ij) + s_i                  (max aggregation, residual update)

The T layers are one :func:`structnets.propagate` call under the synchronous schedule,
with :func:`structnets.core.propagate.max_aggregate`, one edge step and one node step per
layer (the layers do not share weights). The offsets make the messages depend on positions only
through differences, so the network is invariant to translating the whole scene.

The first layer of ``MLP_f`` is a linear map of the concatenation ``[x_j - x_i + dx_i,
s_j]``; it is split into its position part, applied per edge (3 inputs), and its state
part, applied once per vertex and gathered, which is the same function at a fraction of
the cost (there are some 30 edges per vertex).

The box head predicts one box per object class (``[V, classes, box_size]``, coded by
:class:`structnets.detection.BoxCoder`); the class head's scores pick which one counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from torch import Tensor, nn

from ..core.propagate import is_graph_data, max_aggregate, propagate
from ..core.schedules import Synchronous
from ..graphs.pointgraph import PointGraph
from ..nn.encoders import VertexEncoder
from ..nn.mlp import MLP

__all__ = ["PointGNNConfig", "PointGNN"]


@dataclass(frozen=True)
class PointGNNConfig:
    """The paper's sizes by default (states of 300, T = 3)."""

    state_size: int = 300
    layers: int = 3  # T in the paper
    num_classes: int = 4  # background, car, pedestrian, cyclist
    box_size: int = 8  # centre offset (3), log size (3), doubled-angle yaw (2)
    encoder: tuple[int, ...] = (32, 64, 128, 300)
    head: int = 64


class _EdgeMLP(nn.Module):
    """``MLP_f([d, s_j])`` for edges ``j -> i`` with ``d`` the registered offset; the first
    layer's state part is applied per vertex (see the module docstring)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.position = nn.Linear(3, size)
        self.state = nn.Linear(size, size, bias=False)
        # The split first layer's activation, then MLP_f's second layer: the tail of one MLP.
        self.out = nn.Sequential(nn.ReLU(), nn.Linear(size, size), nn.ReLU())

    def forward(self, offsets: Tensor, states: Tensor, senders: Tensor) -> Tensor:
        return self.out(self.position(offsets) + self.state(states)[senders])


class _RegisteredMessages:
    """Layer t's edge step: ``e_ij = MLP_f([x_j - x_i + MLP_h(s_i), s_j])`` for edges ``j -> i``.

    Holds the layer's two MLPs and the scene's vertex positions, which do not change
    between layers; the offsets are computed per vertex, then gathered per edge.
    """

    def __init__(self, offset: nn.Module, edge: _EdgeMLP, positions: Tensor) -> None:
        self.offset, self.edge, self.positions = offset, edge, positions

    def __call__(self, edges: Tensor | None, nodes: Tensor, edge_index: Tensor) -> Tensor:
        senders, receivers = edge_index
        x = self.positions
        registered = x[senders] - x[receivers] + self.offset(nodes)[receivers]
        return self.edge(registered, nodes, senders)


class _Update(nn.Module):
    """``s' = MLP_g(aggregated) + s``, a node step of the synchronous schedule."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.net = MLP([size, size, size], activate_last=True)

    def forward(self, aggregated: Tensor, state: Tensor) -> Tensor:
        return state + self.net(aggregated)


class PointGNN(nn.Module):
    """Vertex encoder, T auto-registered graph layers, classification and box heads.

    ``forward(points, graph)`` returns ``(logits [V, num_classes], boxes [V,
    num_classes - 1, box_size])``. The graph is a :class:`PointGraph`, a torch_geometric
    ``Data``/``Batch`` with ``vertices``, ``edge_index`` and ``point_index`` (the LiDAR
    batches, :meth:`PointGraph.to_data`), or the three tensors:
    ``forward(points, vertices, edge_index, point_index)``. ``forward(data)`` takes the
    raw points from the container's ``points`` too.
    """

    def __init__(self, config: PointGNNConfig = PointGNNConfig()) -> None:
        super().__init__()
        self.config = config
        size = config.state_size
        self.encoder = VertexEncoder(size, config.encoder)
        self.offsets = nn.ModuleList(MLP([size, config.head, 3]) for _ in range(config.layers))
        self.edges = nn.ModuleList(_EdgeMLP(size) for _ in range(config.layers))
        self.updates = nn.ModuleList(_Update(size) for _ in range(config.layers))
        self.classify = MLP([size, config.head, config.num_classes])
        boxes = (config.num_classes - 1) * config.box_size
        self.regress = MLP([size, config.head, config.head, boxes])

    def forward(
        self,
        points: Tensor | Any,
        graph: PointGraph | Any | Tensor | None = None,
        edge_index: Tensor | None = None,
        point_index: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        if graph is None and is_graph_data(points):
            graph, points = points, points.points
        if isinstance(graph, Tensor):
            if edge_index is None or point_index is None:
                raise ValueError("with the vertices as a tensor, pass edge_index and point_index too")
            graph = SimpleNamespace(vertices=graph, edge_index=edge_index, point_index=point_index)
        elif edge_index is not None or point_index is not None:
            raise ValueError("edge_index and point_index go with a vertices tensor; the graph object has its own")
        if graph is None:
            raise ValueError("Point-GNN needs the graph: forward(points, graph) or forward(data)")
        x = graph.vertices[:, :3]
        messages = [_RegisteredMessages(offset, edge, x) for offset, edge in zip(self.offsets, self.edges)]
        layers = Synchronous(self.config.layers)
        state, _ = propagate(
            self.updates,
            None,
            graph.edge_index,
            layers,
            state=self.encoder(points, graph),
            edge_step=messages,
            aggregate=max_aggregate,
        )
        boxes = self.regress(state).view(state.shape[0], self.config.num_classes - 1, self.config.box_size)
        return self.classify(state), boxes
