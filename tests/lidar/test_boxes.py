import math

import pytest
import torch

from structnets.lidar.boxes import IoUKind, average_precision, box_corners_bev, iou_3d, iou_bev, match_detections


def box(x=0.0, y=0.0, z=0.0, length=4.0, w=2.0, h=1.5, yaw=0.0):
    return torch.tensor([[x, y, z, length, w, h, yaw]], dtype=torch.float64)


def test_corners():
    corners = box_corners_bev(box(1.0, 2.0, yaw=math.pi / 2))[0]
    # rotated a quarter turn: the 4 m length now runs along y
    assert torch.allclose(corners.min(0).values, torch.tensor([0.0, 0.0], dtype=torch.float64))
    assert torch.allclose(corners.max(0).values, torch.tensor([2.0, 4.0], dtype=torch.float64))


def test_iou_values():
    assert iou_bev(box(), box()).item() == pytest.approx(1.0)
    assert iou_bev(box(), box(x=10.0)).item() == 0.0
    # shifted by half a length: overlap 2 x 2 = 4, union 8 + 8 - 4 = 12
    assert iou_bev(box(), box(x=2.0)).item() == pytest.approx(4 / 12)
    # a square turned a quarter turn is the same square
    square = box(length=2.0, w=2.0)
    assert iou_bev(square, box(length=2.0, w=2.0, yaw=math.pi / 2)).item() == pytest.approx(1.0)
    # a square turned 45 degrees: the overlap is the regular octagon, area 8 (sqrt 2 - 1) for side 2
    assert iou_bev(square, box(length=2.0, w=2.0, yaw=math.pi / 4)).item() == pytest.approx(
        8 * (math.sqrt(2) - 1) / (8 - 8 * (math.sqrt(2) - 1))
    )
    # 3D: same footprint, half the height overlapping: 1 / (2 + 2 - 1)
    assert iou_3d(box(h=2.0), box(z=1.0, h=2.0)).item() == pytest.approx(1 / 3)
    assert iou_bev(torch.zeros(0, 7), box()).shape == (0, 1)
    with pytest.raises(ValueError, match=r"must be \[N, 7\] boxes"):
        iou_bev(torch.zeros(2, 5), box())
    with pytest.raises(ValueError, match="non-positive sizes"):
        iou_3d(box(length=0.0), box())


def test_matching_and_average_precision():
    truth = torch.cat([box(), box(x=10.0)])
    detections = torch.cat([box(x=0.2), box(x=10.1), box(x=0.1), box(x=30.0)])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    positive = match_detections(iou_bev(detections, truth), scores, 0.7)
    assert positive.tolist() == [True, True, False, False]  # the second box on the first car is a duplicate
    assert average_precision(scores, positive, 2) == pytest.approx(1.0)
    # the only detection misses: AP 0; half the cars found at full precision: AP 0.5
    assert average_precision(torch.tensor([0.5]), torch.tensor([False]), 1) == 0.0
    assert average_precision(torch.tensor([0.5]), torch.tensor([True]), 2) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one ground truth"):
        average_precision(scores, positive, 0)


def test_iou_kind_picks_the_overlap():
    a, b = box(0.0, 0.0), box(1.0, 0.0, z=0.5)
    torch.testing.assert_close(IoUKind.BEV(a, b), iou_bev(a, b))
    torch.testing.assert_close(IoUKind("3d")(a, b), iou_3d(a, b))
    assert IoUKind.THREE_D(a, b) < IoUKind.BEV(a, b)  # the boxes are offset in height too
