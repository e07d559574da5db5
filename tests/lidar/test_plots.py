import pytest
import torch

from structnets.lidar.frames import load_frames
from structnets.lidar.plots import draw_bev, figure_bytes, plot_history, save_figure
from structnets.lidar.postprocess import Detections
from structnets.lidar.scenes import generate_scenes

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    generate_scenes(root, 1, seed=5)
    return load_frames(root)[0]


def test_bird_eye_view_with_true_and_detected_boxes(frame, tmp_path):
    assert frame.boxes.shape[0] > 0
    found = Detections(frame.boxes[:1] + torch.tensor([0.5, 0, 0, 0, 0, 0, 0]), torch.tensor([0.8]), ["Car"])
    path = save_figure(tmp_path / "sub" / "bev.png", draw_bev(frame, found, title="x"))
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 10000
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    empty = figure_bytes(draw_bev(frame, Detections(torch.zeros(0, 7), torch.zeros(0), [])))
    assert empty.startswith(PNG) and empty != data


def test_loss_curves_of_a_history():
    history = [
        {"step": 2, "epoch": 1, "val_loss": 2.0},
        {"step": 2, "epoch": 1, "train_loss": 3.0, "lr": 1e-3},
        {"step": 4, "epoch": 2, "val_loss": 1.0},
        {"step": 4, "epoch": 2, "train_loss": 1.5, "lr": 1e-3},
    ]
    figure = plot_history(history)
    train, held_out = figure.axes[0].get_lines()
    assert list(train.get_ydata()) == [3.0, 1.5] and list(held_out.get_xdata()) == [2, 4]
    assert figure_bytes(figure).startswith(PNG)
