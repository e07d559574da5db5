import pytest
import torch

from structnets.lidar.boxes import IoUKind, iou_bev
from structnets.lidar.postprocess import Merge, merge_boxes, nms, occlusion_factor, select_boxes


def box(x=0.0, y=0.0, z=0.0, length=4.0, w=1.6, h=1.5, yaw=0.0):
    return torch.tensor([x, y, z, length, w, h, yaw], dtype=torch.float64)


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


def test_nms_in_3d_keeps_boxes_stacked_in_height():
    boxes = torch.stack([box(0, 0, 0), box(0, 0, 5.0)])  # one footprint, 5 m apart in height
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.1).tolist() == [0]
    assert nms(boxes, scores, 0.1, kind=IoUKind.THREE_D).tolist() == [0, 1]


def test_select_boxes_merges_or_suppresses_each_class():
    boxes = torch.stack([box(0, 0), box(0.2, 0), box(0.4, 0), box(30, 0)]).float()
    scores = torch.tensor([0.9, 0.5, 0.6, 0.8])
    candidates = [("Car", boxes, scores), ("Pedestrian", boxes[:0], scores[:0])]
    no_points = torch.zeros(0, 4)
    merged = select_boxes(candidates, no_points, Merge.MERGE)
    suppressed = select_boxes(candidates, no_points, Merge.NMS)
    assert merged.names == suppressed.names == ["Car", "Car"]
    torch.testing.assert_close(suppressed.boxes, boxes[[0, 3]])
    torch.testing.assert_close(suppressed.scores, scores[[0, 3]])
    torch.testing.assert_close(merged.boxes[0], box(0.2, 0).float())  # the cluster's median
    assert merged.scores[0] > suppressed.scores[0]  # the cluster's overlap-weighted sum
    assert len(select_boxes([], no_points)) == 0
    with pytest.raises(TypeError, match="merge must be a Merge"):
        select_boxes(candidates, no_points, "nms")
