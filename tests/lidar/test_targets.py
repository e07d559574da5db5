import math

import pytest
import torch

from structnets.lidar.targets import BoxCoder, assign_targets, detection_loss


def box(x=0.0, y=0.0, z=0.0, length=4.0, w=1.6, h=1.5, yaw=0.0):
    return torch.tensor([x, y, z, length, w, h, yaw], dtype=torch.float64)


def test_box_coding_round_trip_and_half_turn_symmetry():
    coder = BoxCoder()
    boxes = torch.stack([box(10, 2, -0.9, 4.1, 1.7, 1.5, 2.9), box(20, -3, -0.8, 0.8, 0.6, 1.8, -1.2)])
    vertices = boxes[:, :3] + torch.tensor([[0.5, -0.3, 0.2], [0.1, 0.1, -0.4]], dtype=torch.float64)
    labels = torch.tensor([1, 2])
    decoded = coder.decode(coder.encode(boxes, vertices, labels), vertices, labels)
    torch.testing.assert_close(decoded[:, :6], boxes[:, :6])
    # the yaw comes back modulo half a turn: the same box
    torch.testing.assert_close(
        torch.remainder(decoded[:, 6] - boxes[:, 6], math.pi), torch.zeros(2, dtype=torch.float64)
    )
    turned = boxes.clone()
    turned[:, 6] += math.pi
    torch.testing.assert_close(coder.encode(turned, vertices, labels), coder.encode(boxes, vertices, labels))


def test_targets_inside_near_and_of_unlearned_classes():
    coder = BoxCoder()
    boxes = torch.stack([box(10, 0, -0.9), box(20, 0, -0.9)])
    vertices = torch.tensor(
        [
            [10.0, 0.0, -0.9],  # inside the car
            [11.9, 0.7, -0.5],  # inside, near a corner
            [12.1, 0.0, -0.9],  # just outside the car: left out
            [15.0, 0.0, -0.9],  # background
            [20.0, 0.0, -0.9],  # inside the van: left out
        ]
    )
    labels, codes = assign_targets(vertices, boxes, ["Car", "Van"], coder)
    assert labels.tolist() == [1, 1, -1, 0, -1]
    torch.testing.assert_close(codes[:2], coder.encode(boxes[[0, 0]].float(), vertices[:2], labels[:2]))
    assert (codes[2:] == 0).all()
    with pytest.raises(ValueError, match="2 boxes but 1 class names"):
        assign_targets(vertices, boxes, ["Car"], coder)


def test_loss_teaches_the_target_class_box_only():
    labels = torch.tensor([0, 1, -1])
    target = torch.randn(3, 8)
    target[[0, 2]] = 0
    logits = torch.tensor([[20.0, 0, 0, 0], [0, 20.0, 0, 0], [0, 0, 20.0, 0]])
    codes = torch.randn(3, 3, 8)
    codes[1, 0] = target[1]
    loss, parts = detection_loss(logits, codes, labels, target)
    assert parts["regression"] == 0.0 and parts["classification"] < 1e-6  # the ignored vertex is wrong but free
    codes[1, 0], codes[1, 1] = codes[1, 1].clone(), target[1]
    assert detection_loss(logits, codes, labels, target)[1]["regression"] > 0.01
