import math

import pytest
import torch

from structnets.lidar.boxes import iou_bev, points_in_boxes
from structnets.lidar.detection import (
    BoxCoder,
    assign_targets,
    detection_loss,
    evaluate_detections,
    merge_boxes,
    nms,
    occlusion_factor,
)
from structnets.lidar.kitti import (
    KittiObject,
    boxes_in_lidar,
    format_label,
    in_camera_view,
    label_from_box,
    load_frame,
    read_labels,
    write_labels,
)


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


def test_nms_keeps_the_best_of_each_overlapping_group():
    boxes = torch.stack([box(0, 0), box(0.3, 0.1), box(10, 0), box(0.5, 0)])
    scores = torch.tensor([0.6, 0.9, 0.5, 0.7])
    assert nms(boxes, scores, 0.1).tolist() == [1, 2]
    assert nms(boxes, scores, 0.99).tolist() == [1, 3, 0, 2]


def test_occlusion_factor_measures_the_covered_extent():
    b = box()
    full = torch.cartesian_prod(
        *(torch.linspace(-a, a, n, dtype=torch.float64) for a, n in ((2, 5), (0.8, 3), (0.75, 3)))
    )
    assert occlusion_factor(full.double(), b) == pytest.approx(1.0)
    # only the front face's upper half is seen: no depth, half the height
    face = full[(full[:, 0] == 2) & (full[:, 2] >= 0)].double()
    assert occlusion_factor(face, b) == 0.0
    half = full[full[:, 0] >= 0].double()  # half the length, all the width and height
    assert occlusion_factor(half, b) == pytest.approx(0.5)
    assert occlusion_factor(torch.zeros(1, 3, dtype=torch.float64), b) == 0.0


def test_merging_takes_medians_and_sums_overlap_weighted_scores():
    boxes = torch.stack([box(0, 0), box(0.2, 0), box(0.4, 0), box(30, 0)])
    scores = torch.tensor([0.9, 0.5, 0.6, 0.8], dtype=torch.float64)
    merged, merged_scores = merge_boxes(boxes, scores, threshold=0.1)
    assert len(merged) == 2
    torch.testing.assert_close(merged[0], box(0.2, 0))  # the median of the cluster
    overlaps = iou_bev(merged[:1], boxes[:3])[0]
    assert merged_scores[0].item() == pytest.approx(float((overlaps * scores[:3]).sum()))
    assert merged_scores[1].item() == pytest.approx(0.8)
    # with the box's points in view, the score grows by the occlusion factor
    points = torch.cartesian_prod(
        torch.linspace(-1.8, 2.2, 5, dtype=torch.float64),
        *(torch.linspace(-a, a, 3, dtype=torch.float64) for a in (0.8, 0.75)),
    )
    _, with_points = merge_boxes(boxes, scores, points.double(), threshold=0.1)
    factor = occlusion_factor(points.double(), merged[0])
    assert factor > 0.9 and with_points[0].item() == pytest.approx((1 + factor) * merged_scores[0].item())


def _label(name, x, score=None, occluded=0, top=100.0, bottom=200.0):
    return KittiObject(name, 0.0, occluded, 0.0, (0.0, top, 10.0, bottom), (1.5, 1.6, 4.0), (0.0, 1.0, x), 0.0, score)


def test_average_precision_protocol(data_dir):
    _, calibration, _ = load_frame(0, data_dir / "kitti_sample")
    truth = [_label("Car", 10.0), _label("Car", 20.0), _label("Van", 30.0), _label("Car", 40.0, top=190.0)]
    perfect = [_label("Car", 10.0, 0.9), _label("Car", 20.0, 0.8)]
    ap = evaluate_detections([(truth, perfect, calibration)], classes=("Car",))
    # the 10-pixel-tall car counts in no setting: found or not, AP is 1
    assert ap["Car"]["bev"] == {"easy": 1.0, "moderate": 1.0, "hard": 1.0}
    # a detection of the van, or of the tiny car, is ignored, not a false positive
    more = perfect + [_label("Car", 30.0, 0.95), _label("Car", 40.0, 0.99, top=190.0)]
    assert evaluate_detections([(truth, more, calibration)], classes=("Car",))["Car"]["3d"]["moderate"] == 1.0
    # a real false positive on top: precision 1/2 at recall 1/2, 2/3 at recall 1; the
    # interpolated precision (the best at this recall or more) is 2/3 everywhere
    wrong = perfect + [_label("Car", 60.0, 0.99)]
    expected = 2 / 3
    assert evaluate_detections([(truth, wrong, calibration)], classes=("Car",))["Car"]["bev"]["easy"] == pytest.approx(
        expected
    )
    # occlusion 2 counts only as hard; no pedestrians: NaN, not zero
    occluded = [_label("Car", 10.0, occluded=2)]
    result = evaluate_detections([(occluded, [], calibration)], classes=("Car", "Pedestrian"))
    assert math.isnan(result["Car"]["bev"]["easy"]) and result["Car"]["bev"]["hard"] == 0.0
    assert math.isnan(result["Pedestrian"]["3d"]["moderate"])
    with pytest.raises(ValueError, match="need scores"):
        evaluate_detections([(truth, truth, calibration)])


def test_labels_round_trip_through_the_lidar_frame(data_dir, tmp_path):
    _, calibration, objects = load_frame(1, data_dir / "kitti_sample")
    objects = [o for o in objects if o.type != "DontCare"]  # DontCare regions are 2D only
    assert objects
    boxes = boxes_in_lidar(objects, calibration)
    rebuilt = [label_from_box(o.type, b, calibration, score=0.5) for o, b in zip(objects, boxes)]
    for original, new in zip(objects, rebuilt):
        assert new.location == pytest.approx(original.location, abs=1e-3)
        assert new.rotation_y == pytest.approx(original.rotation_y, abs=1e-4)
        assert new.alpha == pytest.approx(original.alpha, abs=0.02)
        if original.bbox[2] - original.bbox[0] < 1200:  # not cut by the image's edge
            assert new.bbox == pytest.approx(original.bbox, abs=25)  # a box's projection is not KITTI's tight 2D box
    write_labels(tmp_path / "x.txt", rebuilt)
    again = read_labels(tmp_path / "x.txt")
    assert [o.score for o in again] == [0.5] * len(objects)
    assert format_label(again[0]).split()[0] == objects[0].type
    torch.testing.assert_close(boxes_in_lidar(again, calibration), boxes, atol=0.01, rtol=0)


def test_camera_view_crop(data_dir):
    points, calibration, objects = load_frame(0, data_dir / "kitti_sample")
    view = in_camera_view(points, calibration)
    assert 0.1 < view.float().mean() < 0.35  # a quarter of the 360-degree scan, give or take
    assert (points[view, 0] > 0).all()
    boxes = boxes_in_lidar(objects, calibration)
    inside = points_in_boxes(points, boxes[:1]).squeeze(1)
    assert view[inside].all()  # the labelled pedestrian is in view
