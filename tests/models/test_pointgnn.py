import torch
from torch.testing import assert_close
from torch_geometric.utils import scatter

from structnets.graphs.pointgraph import PointGraph, build_point_graph
from structnets.models import PointGNN, PointGNNConfig

EXACT = dict(atol=1e-10, rtol=0)
SMALL = PointGNNConfig(state_size=16, layers=3, encoder=(8, 16), head=8)


def _scan(n: int = 400) -> torch.Tensor:
    return torch.cat([torch.rand(n, 3, dtype=torch.float64) * 10, torch.rand(n, 1, dtype=torch.float64)], 1)


def _forward_by_hand(model: PointGNN, points: torch.Tensor, graph: PointGraph):
    """Shi & Rajkumar's layers written out, with MLP_f's first layer unsplit."""
    x = graph.vertices[:, :3]
    s = model.encoder(points, graph)
    senders, receivers = graph.edge_index
    for offset, edge, update in zip(model.offsets, model.edges, model.updates):
        first = torch.cat([edge.position.weight, edge.state.weight], 1)  # one Linear on [offset, s_j]
        registered = x[senders] - x[receivers] + offset(s)[receivers]
        hidden = torch.cat([registered, s[senders]], -1) @ first.T + edge.position.bias
        messages = edge.out(hidden)
        s = s + update.net(scatter(messages, receivers, 0, dim_size=s.shape[0], reduce="max"))
    boxes = model.regress(s).view(s.shape[0], model.config.num_classes - 1, model.config.box_size)
    return model.classify(s), boxes


def test_forward_matches_the_layers_written_out():
    model = PointGNN(SMALL).double()
    points = _scan()
    graph = build_point_graph(points, voxel_size=1.0, radius=2.5, feature_radius=1.0)
    assert graph.edge_index.shape[1] > 5 * graph.vertices.shape[0]
    logits, boxes = model(points, graph)
    expected = _forward_by_hand(model, points, graph)
    assert_close(logits, expected[0], **EXACT)
    assert_close(boxes, expected[1], **EXACT)
    parameters = list(model.parameters())
    ours = torch.autograd.grad(logits.square().sum() + boxes.square().sum(), parameters)
    theirs = torch.autograd.grad(expected[0].square().sum() + expected[1].square().sum(), parameters)
    for a, b in zip(ours, theirs):
        assert_close(a, b, **EXACT)


def test_point_gnn_is_translation_invariant_and_uses_its_neighbours():
    model = PointGNN(PointGNNConfig(state_size=16, layers=2, encoder=(8, 16))).double().eval()
    # float64 and a whole-voxel shift: every point falls in the shifted copy of its voxel.
    points = _scan()
    graph = build_point_graph(points, voxel_size=1.0, radius=2.5, feature_radius=1.0)
    logits, boxes = model(points, graph)
    assert logits.shape == (graph.vertices.shape[0], 4) and boxes.shape == (graph.vertices.shape[0], 3, 8)
    shifted = points + torch.tensor([100.0, -50.0, 3.0, 0.0], dtype=torch.float64)
    moved = build_point_graph(shifted, voxel_size=1.0, radius=2.5, feature_radius=1.0)
    assert torch.equal(moved.edge_index, graph.edge_index)
    logits2, boxes2 = model(shifted, moved)
    assert_close(logits2, logits)
    assert_close(boxes2, boxes)
    # Without edges the layers see only zeros from max aggregation: the output changes.
    lonely = PointGraph(graph.vertices, torch.zeros(2, 0, dtype=torch.long), graph.point_index)
    assert not torch.allclose(model(points, lonely)[0], logits)


def test_relabelling_the_vertices_permutes_the_predictions():
    model = PointGNN(SMALL).double()
    points = _scan()
    graph = build_point_graph(points, voxel_size=1.0, radius=2.5, feature_radius=1.0)
    logits, boxes = model(points, graph)
    order = torch.randperm(graph.vertices.shape[0])
    new_label = torch.argsort(order)
    relabelled = PointGraph(
        graph.vertices[order],
        new_label[graph.edge_index],
        torch.stack([graph.point_index[0], new_label[graph.point_index[1]]]),
    )
    logits2, boxes2 = model(points, relabelled)
    assert_close(logits2, logits[order], **EXACT)
    assert_close(boxes2, boxes[order], **EXACT)


def test_state_dict_keys_are_those_of_trained_checkpoints():
    model = PointGNN(PointGNNConfig(state_size=8, layers=2, encoder=(4,), head=4))
    expected = {"encoder.net.0", "encoder.net.2", "classify.0", "classify.2", "regress.0", "regress.2", "regress.4"}
    for i in range(2):
        expected |= {f"offsets.{i}.0", f"offsets.{i}.2", f"updates.{i}.net.0", f"updates.{i}.net.2"}
        expected |= {f"edges.{i}.position", f"edges.{i}.state", f"edges.{i}.out.1"}
    assert {key.rsplit(".", 1)[0] for key in model.state_dict()} == expected
    assert len(model.state_dict()) == 40


def test_tensors_a_data_and_a_pyg_loaders_batches_are_taken():
    from torch_geometric.loader import DataLoader

    model = PointGNN(SMALL).double()
    scans = [_scan(300), _scan(200)]
    graphs = [build_point_graph(p, voxel_size=1.0, radius=2.5, feature_radius=1.0) for p in scans]
    alone = [model(p, g) for p, g in zip(scans, graphs)]
    points, graph = scans[0], graphs[0]
    for out in (model(points, graph.vertices, graph.edge_index, graph.point_index), model(graph.to_data(points))):
        assert_close(out[0], alone[0][0], **EXACT)
        assert_close(out[1], alone[0][1], **EXACT)
    batch = next(iter(DataLoader([g.to_data(p) for p, g in zip(scans, graphs)], batch_size=2)))
    logits, boxes = model(batch)
    assert_close(logits, torch.cat([a[0] for a in alone]), **EXACT)
    assert_close(boxes, torch.cat([a[1] for a in alone]), **EXACT)
    import pytest

    with pytest.raises(ValueError, match="pass edge_index and point_index too"):
        model(points, graph.vertices)
