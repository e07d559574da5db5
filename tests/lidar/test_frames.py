import re

import pytest
import torch

from structnets.graphs.pointgraph import build_point_graph
from structnets.lidar.frames import GraphConfig, PackedFrames, frame_names, load_frames
from structnets.lidar.scenes import generate_scenes
from structnets.lidar.targets import BoxCoder, assign_targets
from structnets.models.pointgnn import PointGNN, PointGNNConfig


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    generate_scenes(root, 3, seed=3)
    return load_frames(root, GraphConfig())


def _rows(values):
    return sorted(map(tuple, values.round(decimals=4).tolist()))


def test_a_mirrored_batch_is_the_graph_and_targets_of_the_mirrored_scan(frames):
    coder = BoxCoder()
    frame = frames[0]
    mirrored = PackedFrames([frame], coder).batch(mirror=torch.tensor([True]))
    flip = torch.tensor([1.0, -1.0, 1.0, 1.0])
    torch.testing.assert_close(mirrored.points, frame.points * flip)
    rebuilt = build_point_graph(frame.points * flip, voxel_size=0.8, radius=4.0, feature_radius=1.0)
    assert _rows(mirrored.vertices) == _rows(rebuilt.vertices)

    def edges(vertices, edge_index):
        v = vertices[:, :3].round(decimals=4)
        return sorted(tuple(v[s].tolist() + v[t].tolist()) for s, t in edge_index.t().tolist())

    assert edges(mirrored.vertices, mirrored.edge_index) == edges(rebuilt.vertices, rebuilt.edge_index)
    # the targets computed once, then mirrored, are those of the mirrored scene's boxes
    boxes = frame.boxes.clone()
    boxes[:, 1], boxes[:, 6] = -boxes[:, 1], -boxes[:, 6]
    labels, codes = assign_targets(mirrored.vertices, boxes, [o.type for o in frame.objects], coder)
    assert (labels > 0).sum() >= 5
    assert torch.equal(mirrored.labels, labels)
    torch.testing.assert_close(mirrored.codes, codes)
    # and mirroring is the batch's choice only: the packed frames are left as they were
    plain = PackedFrames([frame], coder).batch()
    torch.testing.assert_close(plain.vertices, frame.graph.vertices)


def test_batching_offsets_each_frame_and_to_data_list_takes_it_apart(frames):
    packed = PackedFrames(frames, BoxCoder())
    batch = packed.batch([2, 0])
    chosen = [frames[2], frames[0]]
    n_vertices = [f.graph.vertices.shape[0] for f in chosen]
    n_points = [f.points.shape[0] for f in chosen]
    assert batch.num_graphs == 2 and batch.ptr.tolist() == [0, n_vertices[0], sum(n_vertices)]
    torch.testing.assert_close(batch.vertices, torch.cat([f.graph.vertices for f in chosen]))
    torch.testing.assert_close(batch.points, torch.cat([f.points for f in chosen]))
    expected_edges = torch.cat([chosen[0].graph.edge_index, chosen[1].graph.edge_index + n_vertices[0]], 1)
    assert torch.equal(batch.edge_index, expected_edges)
    second = chosen[1].graph.point_index + torch.tensor([[n_points[0]], [n_vertices[0]]])
    assert torch.equal(batch.point_index, torch.cat([chosen[0].graph.point_index, second], 1))
    for frame, data in zip(chosen, batch.to_data_list()):
        assert torch.equal(data.vertices, frame.graph.vertices) and torch.equal(data.points, frame.points)
        assert torch.equal(data.edge_index, frame.graph.edge_index)
        assert torch.equal(data.point_index, frame.graph.point_index)


def test_a_batch_of_scans_gives_each_scan_its_own_outputs(frames, one_thread):
    torch.manual_seed(0)
    model = PointGNN(PointGNNConfig(state_size=16, layers=2, encoder=(8, 16))).eval()
    packed = PackedFrames(frames)

    def run(batch):
        with torch.no_grad():
            return model(batch.points, batch)

    together = run(packed.batch([0, 1, 2]))
    alone = [run(packed.batch([k])) for k in range(3)]
    for part, whole in zip(zip(*alone), together):  # logits, then boxes
        torch.testing.assert_close(torch.cat(part), whole)


def test_frames_are_listed_or_the_layout_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="velodyne not found: expected KITTI's layout"):
        frame_names(tmp_path)
    (tmp_path / "training" / "velodyne").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no .bin scans"):
        frame_names(tmp_path)


def test_unlabelled_frames_are_refused_before_any_is_read(tmp_path):
    velodyne = tmp_path / "training" / "velodyne"
    velodyne.mkdir(parents=True)
    for k in range(6):
        (velodyne / f"{k:06d}.bin").write_bytes(b"")  # never read: the labels are checked first
    with pytest.raises(FileNotFoundError, match="label_2 not found: labelled frames need a label file per scan"):
        load_frames(tmp_path)
    labels = tmp_path / "training" / "label_2"
    labels.mkdir()
    (labels / "000001.txt").write_text("")
    missing = f"no label file at {labels / '000000.txt'} (nor for 4 more frame(s): 000002, 000003, 000004, ...)"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing}; an empty file is a scene without objects")):
        load_frames(tmp_path)
    with pytest.raises(ValueError, match="000000.bin: empty scan"):  # unlabelled frames are read
        load_frames(tmp_path, labelled=False)
