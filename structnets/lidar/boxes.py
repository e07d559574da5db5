"""Rotated 3D boxes: corners, IoU in bird's-eye view and in 3D, and KITTI's average precision.

A box is ``(x, y, z, length, width, height, yaw)`` in the LiDAR frame: centre, size along
its own x (length), y (width) and z (height), and rotation around z. The bird's-eye-view
overlap of two rotated rectangles is a convex polygon; shapely computes its area (a
well-kept geometry library: written by hand, polygon clipping is easy to get subtly
wrong at touching edges). The 3D IoU multiplies that area by the overlap in height.

Average precision follows the KITTI protocol as revised in 2019: precision interpolated
at 40 recall positions (1/40, 2/40, ..., 1), detections matched greedily by score to the
unmatched ground truth box of highest IoU above the threshold.
"""

from __future__ import annotations

import enum

import numpy as np
import shapely
import torch
from torch import Tensor

__all__ = [
    "box_corners_bev",
    "box_corners_3d",
    "points_in_boxes",
    "to_box_frame",
    "iou_bev",
    "iou_3d",
    "IoUKind",
    "average_precision",
    "match_detections",
]


def box_corners_bev(boxes: Tensor) -> Tensor:
    """``[N, 4, 2]`` corners of the boxes ``[N, 7]`` seen from above, counter-clockwise."""
    x, y, length, width, yaw = boxes[:, 0], boxes[:, 1], boxes[:, 3], boxes[:, 4], boxes[:, 6]
    half = torch.stack([length, width], -1).unsqueeze(1) / 2
    signs = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], dtype=boxes.dtype)
    local = signs * half
    c, s = torch.cos(yaw).view(-1, 1), torch.sin(yaw).view(-1, 1)
    return torch.stack([x.view(-1, 1) + c * local[..., 0] - s * local[..., 1],
                        y.view(-1, 1) + s * local[..., 0] + c * local[..., 1]], -1)  # fmt: skip


def box_corners_3d(boxes: Tensor) -> Tensor:
    """``[N, 8, 3]`` corners: the four of :func:`box_corners_bev` at the bottom, then at the top."""
    bev = box_corners_bev(boxes)
    bottom = (boxes[:, 2] - boxes[:, 5] / 2).view(-1, 1, 1).expand(-1, 4, 1)
    top = (boxes[:, 2] + boxes[:, 5] / 2).view(-1, 1, 1).expand(-1, 4, 1)
    return torch.cat([torch.cat([bev, bottom], -1), torch.cat([bev, top], -1)], 1)


def to_box_frame(points: Tensor, boxes: Tensor) -> Tensor:
    """``[N, M, 3]``: the points ``[N, 3+]`` in each box's own frame (centre at the origin,
    length along x, width along y)."""
    d = points[:, None, :3] - boxes[None, :, :3]
    c, s = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
    return torch.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1], d[..., 2]], -1)


def points_in_boxes(points: Tensor, boxes: Tensor, margin: float = 0.0) -> Tensor:
    """``[N, M]`` whether each point lies in each box grown by ``margin`` on every side."""
    local = to_box_frame(points, boxes)
    return (local.abs() <= boxes[None, :, 3:6] / 2 + margin).all(-1)


def _polygons(boxes: Tensor) -> np.ndarray:
    return shapely.polygons(box_corners_bev(boxes.double()).numpy())


def _check(boxes: Tensor, name: str) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 7:
        raise ValueError(f"{name} must be [N, 7] boxes (x, y, z, l, w, h, yaw), got {tuple(boxes.shape)}")
    if bool((boxes[:, 3:6] <= 0).any()):
        raise ValueError(f"{name} has boxes with non-positive sizes")


def _intersection_bev(a: Tensor, b: Tensor) -> Tensor:
    if a.shape[0] == 0 or b.shape[0] == 0:
        return torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64)
    areas = shapely.area(shapely.intersection(_polygons(a)[:, None], _polygons(b)[None, :]))
    return torch.from_numpy(np.asarray(areas, dtype=np.float64))


def iou_bev(a: Tensor, b: Tensor) -> Tensor:
    """``[N, M]`` intersection over union of the boxes' footprints."""
    _check(a, "a")
    _check(b, "b")
    inter = _intersection_bev(a, b)
    area_a = (a[:, 3] * a[:, 4]).double().view(-1, 1)
    area_b = (b[:, 3] * b[:, 4]).double().view(1, -1)
    return inter / (area_a + area_b - inter)


def iou_3d(a: Tensor, b: Tensor) -> Tensor:
    """``[N, M]`` intersection over union of the boxes' volumes (``z`` is the centre)."""
    _check(a, "a")
    _check(b, "b")
    inter = _intersection_bev(a, b)
    a, b = a.double(), b.double()
    top = torch.minimum((a[:, 2] + a[:, 5] / 2).view(-1, 1), (b[:, 2] + b[:, 5] / 2).view(1, -1))
    bottom = torch.maximum((a[:, 2] - a[:, 5] / 2).view(-1, 1), (b[:, 2] - b[:, 5] / 2).view(1, -1))
    volume = inter * (top - bottom).clamp(min=0)
    va = (a[:, 3] * a[:, 4] * a[:, 5]).view(-1, 1)
    vb = (b[:, 3] * b[:, 4] * b[:, 5]).view(1, -1)
    return volume / (va + vb - volume)


class IoUKind(enum.Enum):
    """Which overlap of rotated boxes: of their footprints seen from above, or of their volumes."""

    BEV = "bev"
    THREE_D = "3d"

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        """``[N, M]``: :func:`iou_bev` or :func:`iou_3d` of the boxes ``a`` and ``b``."""
        return iou_bev(a, b) if self is IoUKind.BEV else iou_3d(a, b)


def match_detections(iou: Tensor, scores: Tensor, threshold: float) -> Tensor:
    """Whether each detection (``iou`` rows) is a true positive: in order of falling score,
    each takes the unmatched ground truth box (column) of highest IoU, if it reaches ``threshold``."""
    matched = torch.zeros(iou.shape[1], dtype=torch.bool)
    positive = torch.zeros(iou.shape[0], dtype=torch.bool)
    for d in torch.argsort(scores, descending=True).tolist():
        if iou.shape[1] == 0:
            break
        candidates = iou[d].masked_fill(matched, -1.0)
        best = int(candidates.argmax())
        if candidates[best] >= threshold:
            matched[best] = True
            positive[d] = True
    return positive


def average_precision(scores: Tensor, positive: Tensor, num_ground_truth: int, recall_positions: int = 40) -> float:
    """KITTI's AP|R40: mean over recall r in {1/40, ..., 1} of the best precision at recall >= r."""
    if num_ground_truth == 0:
        raise ValueError("average precision needs at least one ground truth box")
    order = torch.argsort(scores, descending=True)
    hits = positive[order].double()
    true_positives = torch.cumsum(hits, 0)
    precision = true_positives / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    recall = true_positives / num_ground_truth
    total = 0.0
    for k in range(1, recall_positions + 1):
        reached = recall >= k / recall_positions - 1e-12
        total += float(precision[reached].max()) if bool(reached.any()) else 0.0
    return total / recall_positions
