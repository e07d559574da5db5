"""Point-GNN's graph of a LiDAR scan (Shi & Rajkumar 2020, section 3.1).

A scan of some 120,000 points is reduced by voxel downsampling to one vertex per occupied
voxel (the mean of its points, reflectance included); vertices within ``radius`` of each
other are joined by edges in both directions (:func:`structnets.radius_graph`); and each
vertex is tied to the raw points within ``feature_radius`` of it, from which its initial
state is computed (an MLP on each point's offset and reflectance, then the maximum over
the points: :class:`structnets.nn.VertexEncoder`).

:meth:`PointGraph.to_data` puts a scan's graph and its raw points into one torch_geometric
``Data`` (:class:`PointGraphData`), which PyG's ``DataLoader`` batches as the LiDAR field's
batches are laid out, and :class:`structnets.models.PointGNN` takes as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import scatter

from .neighbors import radius_graph

__all__ = ["PointGraph", "PointGraphData", "voxel_downsample", "build_point_graph"]


def voxel_downsample(points: Tensor, voxel_size: float) -> Tensor:
    """``[V, C]``: the mean of the points ``[N, C]`` (x, y, z first) in each occupied voxel.

    Voxels are listed in the order of their integer coordinates, so the result does not
    depend on the order of the points.
    """
    if points.shape[0] == 0:
        raise ValueError("cannot downsample an empty point cloud")
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    cells = torch.floor(points[:, :3] / voxel_size).long()
    _, inverse = torch.unique(cells, dim=0, return_inverse=True)
    return scatter(points, inverse, 0, reduce="mean")


@dataclass(frozen=True)
class PointGraph:
    """Shapes: vertices ``[V, C]``; edge_index ``[2, E]`` (vertex to vertex, both
    directions); point_index ``[2, P]``: row 0 raw point, row 1 the vertex it informs."""

    vertices: Tensor
    edge_index: Tensor
    point_index: Tensor

    def to_data(self, points: Tensor, **fields: Tensor) -> PointGraphData:
        """The graph with its scan's raw ``points`` ``[N, C]`` (and any ``fields``) as one ``Data``."""
        if points.shape[0] and self.point_index.numel() and int(self.point_index[0].max()) >= points.shape[0]:
            raise ValueError(
                f"point_index refers to point {int(self.point_index[0].max())}, but there are {points.shape[0]} points"
            )
        return PointGraphData(
            points=points,
            vertices=self.vertices,
            edge_index=self.edge_index,
            point_index=self.point_index,
            num_nodes=self.vertices.shape[0],
            **fields,
        )


class PointGraphData(Data):
    """A scan's point graph and raw points as a torch_geometric ``Data``: ``vertices``
    ``[V, C]`` (the nodes), ``edge_index`` ``[2, E]``, ``points`` ``[N, C]`` and
    ``point_index`` ``[2, P]`` (row 0 a raw point, row 1 the vertex it informs).

    Batched (``Batch.from_data_list``, PyG's ``DataLoader``), ``point_index``'s rows are
    offset by the points and by the vertices before it respectively, and ``batch`` gives
    each vertex's scan: the layout of :class:`structnets.lidar.frames.PackedFrames`' batches.
    """

    def __inc__(self, key: str, value, *args, **kwargs):
        if key == "point_index":
            return torch.tensor([[self.points.shape[0]], [self.num_nodes]], device=value.device)
        return super().__inc__(key, value, *args, **kwargs)

    def __cat_dim__(self, key: str, value, *args, **kwargs):
        if key == "point_index":
            return 1
        return super().__cat_dim__(key, value, *args, **kwargs)


def build_point_graph(
    points: Tensor, *, voxel_size: float = 0.8, radius: float = 4.0, feature_radius: float = 1.0
) -> PointGraph:
    """The graph of one scan; the defaults are the paper's for cars (0.8 m voxels, 4 m edges, 1 m features)."""
    vertices = voxel_downsample(points, voxel_size)
    edge_index = radius_graph(vertices[:, :3], radius, max_num_neighbors=None)
    from scipy.spatial import cKDTree

    # Pairs (raw point, vertex) within feature_radius, from two k-d trees in scipy's C code
    # (on the CPU whatever the device: a cell list over raw points would hold every dense
    # pair among the points themselves).
    pairs = cKDTree(points[:, :3].detach().cpu().double().numpy()).sparse_distance_matrix(
        cKDTree(vertices[:, :3].detach().cpu().double().numpy()), feature_radius, output_type="ndarray"
    )
    point_index = torch.from_numpy(np.stack([pairs["i"], pairs["j"]]).astype(np.int64)).to(points.device)
    return PointGraph(vertices, edge_index, point_index)
