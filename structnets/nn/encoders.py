"""Encoders: a node's initial state from raw inputs attached to it."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from .mlp import MLP

__all__ = ["PointsToVertices", "VertexEncoder"]


class PointsToVertices(Protocol):
    """Vertices and the raw points that inform them, as in :class:`structnets.graphs.pointgraph.PointGraph`.

    Shapes:
        vertices: ``[num_vertices, C]``, x, y, z first; point_index: ``[2, P]``, row 0 a
        raw point, row 1 the vertex it informs.
    """

    @property
    def vertices(self) -> Tensor: ...

    @property
    def point_index(self) -> Tensor: ...


class VertexEncoder(nn.Module):
    """Point-GNN's initial vertex state (Shi & Rajkumar 2020, sec. 3.2).

    ``s_v = max_{j -> v} MLP([x_j - x_v, r_j])`` over the raw points ``j`` tied to vertex
    ``v``, with ``x`` positions and ``r`` reflectance; zeros for a vertex with no points.

    Shapes:
        points: ``[N, 4]`` (x, y, z, reflectance); returns ``[num_vertices, state_size]``.
    """

    def __init__(self, state_size: int = 300, hidden: tuple[int, ...] = (32, 64, 128, 300)) -> None:
        super().__init__()
        self.net = MLP([4, *hidden, state_size])

    def forward(self, points: Tensor, graph: PointsToVertices) -> Tensor:
        source, vertex = graph.point_index
        offsets = points[source, :3] - graph.vertices[vertex, :3]
        features = self.net(torch.cat([offsets, points[source, 3:4]], -1))
        return scatter(features, vertex, 0, dim_size=graph.vertices.shape[0], reduce="max")
