"""The Point-GNN network (Shi & Rajkumar 2020, section 3.2): vertex states refined by T
graph layers with auto-registration, then per-vertex class scores and box regression.

Layer t, for vertex i with state s_i at position x_i and neighbours j::

    dx_i   = MLP_h(s_i)                               (auto-registration: a learned offset)
    e_ij   = MLP_f([x_j - x_i + dx_i, s_j])           (the edge's message)
    s_i'   = MLP_g(max_j e_ij) + s_i                  (max aggregation, residual update)

Each layer is one round of the core's synchronous schedule
(:func:`structnets.propagate_rounds` with :func:`structnets.propagate.max_aggregate`); the
layers do not share weights. The offsets make the messages depend on positions only
through differences, so the network is invariant to translating the whole scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..pointgraph import PointGraph, VertexEncoder
from ..propagate import max_aggregate, propagate_rounds

__all__ = ["PointGNNConfig", "PointGNN"]


def _mlp(sizes: list[int], last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if last_activation or k < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class PointGNNConfig:
    state_size: int = 300
    layers: int = 3  # T in the paper
    num_classes: int = 4  # background, car, pedestrian, cyclist
    box_size: int = 7  # centre offset (3), log size (3), yaw


class _Update(nn.Module):
    """``s' = MLP_g(aggregated) + s``, called by propagate_rounds as cell(aggregated, state)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.net = _mlp([size, size, size])

    def forward(self, aggregated: Tensor, state: Tensor) -> Tensor:
        return state + self.net(aggregated)


class PointGNN(nn.Module):
    """Vertex encoder, T auto-registered graph layers, classification and box heads.

    ``forward(points, graph)`` returns ``(logits [V, num_classes], boxes [V, box_size])``.
    """

    def __init__(self, config: PointGNNConfig = PointGNNConfig()) -> None:
        super().__init__()
        self.config = config
        size = config.state_size
        self.encoder = VertexEncoder(size)
        self.offsets = nn.ModuleList(_mlp([size, 64, 3], last_activation=False) for _ in range(config.layers))
        self.edges = nn.ModuleList(_mlp([size + 3, size, size]) for _ in range(config.layers))
        self.updates = nn.ModuleList(_Update(size) for _ in range(config.layers))
        self.classify = _mlp([size, 64, config.num_classes], last_activation=False)
        self.regress = _mlp([size, 64, 64, config.box_size], last_activation=False)

    def forward(self, points: Tensor, graph: PointGraph) -> tuple[Tensor, Tensor]:
        x = graph.vertices[:, :3]
        state = self.encoder(points, graph)
        for offset, edge, update in zip(self.offsets, self.edges, self.updates):

            def message(s: Tensor, index: Tensor, attr: Tensor | None, offset=offset, edge=edge) -> Tensor:
                senders, receivers = index
                registered = x[senders] - x[receivers] + offset(s)[receivers]
                return edge(torch.cat([registered, s[senders]], -1))

            state = propagate_rounds(update, state, graph.edge_index, 1, message=message, aggregate=max_aggregate)
        return self.classify(state), self.regress(state)
