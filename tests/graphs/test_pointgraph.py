import pytest
import torch

from structnets.graphs.pointgraph import build_point_graph, voxel_downsample
from structnets.lidar.kitti import load_frame


def test_voxel_means_match_a_dictionary_and_ignore_point_order():
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(500, 4, generator=generator, dtype=torch.float64) * 3
    vertices = voxel_downsample(points, 1.0)
    groups = {}
    for p in points:
        groups.setdefault(tuple(torch.floor(p[:3]).long().tolist()), []).append(p)
    expected = torch.stack([torch.stack(groups[k]).mean(0) for k in sorted(groups)])
    torch.testing.assert_close(vertices, expected)
    shuffled = voxel_downsample(points[torch.randperm(500, generator=generator)], 1.0)
    torch.testing.assert_close(shuffled, vertices)
    with pytest.raises(ValueError, match="empty point cloud"):
        voxel_downsample(torch.zeros(0, 4), 1.0)


def test_graph_of_a_real_scan(data_dir):
    points, _, _ = load_frame(0, data_dir / "kitti_sample")
    points = points[points[:, 0] > 0][:20000]  # a slice ahead of the car, for speed
    graph = build_point_graph(points, voxel_size=0.8, radius=4.0, feature_radius=1.0)
    v = graph.vertices
    assert 100 < v.shape[0] < points.shape[0]
    s, t = graph.edge_index
    assert ((v[s, :3] - v[t, :3]).norm(dim=1) <= 4.0 + 1e-5).all()
    pairs = set(map(tuple, graph.edge_index.t().tolist()))
    assert all((b, a) in pairs for a, b in list(pairs)[:500])  # both directions
    # point -> vertex pairs against brute force on the first 300 points
    d = torch.cdist(points[:300, :3].double(), v[:, :3].double())
    expected = {(i, j) for i, j in (d <= 1.0).nonzero().tolist()}
    got = {(i, j) for i, j in graph.point_index.t().tolist() if i < 300}
    assert got == expected


def test_a_point_graph_as_data_batches_its_points_and_vertices_apart():
    """Batched by PyG, point_index's rows are offset by the points and the vertices before them."""
    from torch_geometric.data import Batch

    from structnets.graphs.pointgraph import PointGraphData

    generator = torch.Generator().manual_seed(1)
    scans = [torch.rand(n, 4, generator=generator, dtype=torch.float64) * 6 for n in (300, 150)]
    graphs = [build_point_graph(p, voxel_size=1.0, radius=2.0, feature_radius=1.0) for p in scans]
    data = [g.to_data(p, labels=torch.zeros(g.vertices.shape[0], dtype=torch.long)) for p, g in zip(scans, graphs)]
    assert isinstance(data[0], PointGraphData) and data[0].num_nodes == graphs[0].vertices.shape[0]
    batch = Batch.from_data_list(data)
    vertices = graphs[0].vertices.shape[0]
    expected = torch.cat([graphs[0].point_index, graphs[1].point_index + torch.tensor([[300], [vertices]])], 1)
    assert torch.equal(batch.point_index, expected)
    assert torch.equal(batch.edge_index, torch.cat([graphs[0].edge_index, graphs[1].edge_index + vertices], 1))
    assert torch.equal(batch.points, torch.cat(scans)) and batch.batch.shape == (batch.vertices.shape[0],)
    again = batch.to_data_list()[1]
    assert torch.equal(again.point_index, graphs[1].point_index) and torch.equal(again.points, scans[1])
    with pytest.raises(ValueError, match="point_index refers to point"):
        graphs[0].to_data(scans[1])
