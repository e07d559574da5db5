from dataclasses import dataclass

import torch
from torch import Tensor
from torch.testing import assert_close

from structnets.nn import VertexEncoder

EXACT = dict(atol=1e-12, rtol=0)


@dataclass(frozen=True)
class _Graph:
    vertices: Tensor
    point_index: Tensor


def _scene(num_points: int = 60, num_vertices: int = 6):
    points = torch.cat(
        [torch.rand(num_points, 3, dtype=torch.double) * 4, torch.rand(num_points, 1, dtype=torch.double)], 1
    )
    vertices = torch.rand(num_vertices, 4, dtype=torch.double) * 4
    pairs = torch.cdist(points[:, :3], vertices[:, :3]) < 1.5
    pairs[:, -1] = False  # the last vertex has no points
    return points, _Graph(vertices, pairs.nonzero().t())


def test_each_vertex_is_the_maximum_over_its_points():
    encoder = VertexEncoder(state_size=5, hidden=(8, 6)).double()
    points, graph = _scene()
    states = encoder(points, graph)
    for v in range(graph.vertices.shape[0]):
        mine = graph.point_index[0, graph.point_index[1] == v]
        if mine.numel():
            features = torch.cat([points[mine, :3] - graph.vertices[v, :3], points[mine, 3:4]], -1)
            assert_close(states[v], encoder.net(features).max(0).values, **EXACT)
        else:
            assert torch.equal(states[v], torch.zeros(5, dtype=torch.double))
    assert graph.point_index[1].eq(graph.vertices.shape[0] - 1).sum() == 0


def test_point_order_and_a_shift_of_the_scene_do_not_matter():
    encoder = VertexEncoder(state_size=5, hidden=(8,)).double()
    points, graph = _scene()
    states = encoder(points, graph)
    perm = torch.randperm(points.shape[0])
    new_label = torch.argsort(perm)
    shuffled = _Graph(graph.vertices, torch.stack([new_label[graph.point_index[0]], graph.point_index[1]]))
    assert_close(encoder(points[perm], shuffled), states, **EXACT)
    shift = torch.tensor([10.0, -3.0, 2.0, 0.0], dtype=torch.double)
    assert_close(encoder(points + shift, _Graph(graph.vertices + shift, graph.point_index)), states, atol=1e-10, rtol=0)


def test_a_point_graph_is_accepted():
    from structnets.graphs.pointgraph import build_point_graph

    points = torch.cat([torch.rand(300, 3) * 6, torch.rand(300, 1)], 1)
    graph = build_point_graph(points, voxel_size=1.0, radius=2.0, feature_radius=1.0)
    states = VertexEncoder(state_size=4, hidden=(8,))(points, graph)
    assert states.shape == (graph.vertices.shape[0], 4)
    assert (states != 0).any(1).all()  # every vertex has its own points within the feature radius
