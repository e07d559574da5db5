import json

import pytest
import torch

from structnets.cli import main
from structnets.graphs.pointgraph import build_point_graph
from structnets.lidar.detect import DetectConfig, _batch, _mirror, _model_config, _targets, load_frames
from structnets.lidar.detection import BoxCoder, detection_loss
from structnets.lidar.kitti import read_labels
from structnets.lidar.scenes import generate_scenes
from structnets.models.pointgnn import PointGNN

TINY = ["--state-size", "16", "--encoder", "8", "16", "--layers", "2"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    generate_scenes(root, 6, seed=3)
    return root


def test_mirrored_frame_equals_the_graph_of_the_mirrored_scan(scenes):
    config = DetectConfig()
    (frame,) = load_frames(scenes, config, ["000000"])
    mirrored = _mirror(frame)
    rebuilt = build_point_graph(mirrored.points, voxel_size=0.8, radius=4.0, feature_radius=1.0)

    def rows(v):
        return sorted(map(tuple, v.round(decimals=4).tolist()))

    assert rows(mirrored.graph.vertices) == rows(rebuilt.vertices)

    def edges(graph):
        v = graph.vertices[:, :3].round(decimals=4)
        return sorted(tuple(v[s].tolist() + v[t].tolist()) for s, t in graph.edge_index.t().tolist())

    assert edges(mirrored.graph) == edges(rebuilt)
    assert torch.equal(mirrored.boxes[:, 1], -frame.boxes[:, 1])


def test_a_small_model_fits_one_scene(scenes):
    torch.manual_seed(0)
    config = DetectConfig(state_size=32, encoder=(16, 32))
    frames = load_frames(scenes, config, ["000001"])
    model = PointGNN(_model_config(config))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    points, graph = _batch(frames, torch.device("cpu"))
    labels, codes = _targets(frames, BoxCoder(), torch.device("cpu"))
    assert (labels > 0).sum() >= 5
    losses = []
    for _ in range(60):
        logits, boxes = model(points, graph)
        loss, _ = detection_loss(logits, boxes, labels, codes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    counted = labels >= 0
    right = logits.argmax(1)[counted] == labels[counted]
    background = (labels[counted] == 0).float().mean()
    assert right.float().mean() > 0.9 and right.float().mean() > background  # beats calling it all background


def test_generate_train_evaluate_predict(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["detect", "generate", "--out", str(data), "--scenes", "5", "--seed", "4"]) == 0
    code = main(["detect", "train", "--data", str(data), "--out", str(run), "--epochs", "2", "--no-progress", *TINY])
    assert code == 0
    assert (run / "model.pt").is_file() and (run / "loss.png").is_file()
    history = json.loads((run / "train_metrics.json").read_text())["history"]
    assert len(history) == 2 and history[0]["loss"] > 0
    out = tmp_path / "eval"
    assert (
        main(["detect", "evaluate", "--model", str(run), "--data", str(data), "--out", str(out), "--threshold", "0.0"])
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["ap_r40"]) == {"Car", "Pedestrian", "Cyclist"}
    assert set(metrics["ap_r40"]["Car"]) == {"bev", "3d"}
    assert set(metrics["ap_r40"]["Car"]["bev"]) == {"easy", "moderate", "hard"}
    assert (out / "bev.png").stat().st_size > 10000
    assert len(list((out / "detections").glob("*.txt"))) == 5
    assert "moderate" in capsys.readouterr().out
    pred = tmp_path / "pred"
    assert (
        main(
            [
                "detect",
                "predict",
                "--model",
                str(run),
                "--data",
                str(data),
                "--out",
                str(pred),
                "--merge",
                "nms",
                "--threshold",
                "0.0",
            ]
        )
        == 0
    )
    objects = [o for f in sorted(pred.glob("*.txt")) for o in read_labels(f)]
    assert objects and all(o.score is not None for o in objects)
    assert len(list(pred.glob("*.png"))) == 3


def test_bad_inputs_are_named(tmp_path, scenes, capsys):
    import shutil

    data = tmp_path / "bad"
    shutil.copytree(scenes, data)
    scan = data / "training" / "velodyne" / "000002.bin"
    scan.write_bytes(scan.read_bytes()[:-6])
    assert main(["detect", "train", "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "000002.bin" in capsys.readouterr().err
    scan.write_bytes(b"")
    assert main(["detect", "train", "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "000002.bin: empty scan" in capsys.readouterr().err
    assert main(["detect", "train", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "velodyne not found" in capsys.readouterr().err
    assert main(["detect", "train", "--data", str(scenes), "--out", str(tmp_path / "r"), "--classes", "Tram"]) == 2
    assert "no mean size for Tram" in capsys.readouterr().err
