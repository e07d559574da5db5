"""From Point-GNN's per-vertex outputs to one frame's detections.

Every vertex confident enough of a class proposes its box for that class
(:func:`decode_detections`); then, per class, either plain non-maximum suppression
(:func:`nms`) or the paper's box merging and occlusion-aware scoring (:func:`merge_boxes`):
overlapping candidates are clustered around the best-scoring one, the cluster's box is the
median of its members, and its score is ``(o + 1) * sum_i IoU(m, b_i) * s_i``, where the
occlusion factor ``o`` is the product, over the box's three axes, of the fraction of the
box's extent that its points cover (Shi & Rajkumar 2020, section 3.4). :class:`Merge`
chooses between the two.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .boxes import IoUKind, to_box_frame
from .kitti import Calibration, KittiObject, labels_from_boxes
from .targets import BoxCoder

__all__ = [
    "Merge",
    "Detections",
    "decode_detections",
    "nms",
    "occlusion_factor",
    "occlusion_factors",
    "merge_boxes",
    "select_boxes",
]


class Merge(enum.Enum):
    """How one class's candidate boxes become its detections."""

    #: Point-GNN's box merging with occlusion-aware scores (:func:`merge_boxes`).
    MERGE = "merge"
    #: Plain greedy non-maximum suppression (:func:`nms`).
    NMS = "nms"


@dataclass(frozen=True)
class Detections:
    """One frame's detections: boxes ``[K, 7]`` (LiDAR frame), scores ``[K]``, class names."""

    boxes: Tensor
    scores: Tensor
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def labels(self, calibration: Calibration) -> list[KittiObject]:
        """KITTI result lines: truncation and occlusion -1 (unknown), the score last."""
        return labels_from_boxes(self.names, self.boxes, calibration, truncated=-1.0, occluded=-1, scores=self.scores)


def decode_detections(
    logits: Tensor,
    codes: Tensor,
    vertices: Tensor,
    coder: BoxCoder,
    *,
    threshold: float = 0.3,
    max_candidates: int = 300,
) -> list[tuple[str, Tensor, Tensor]]:
    """Candidate boxes: for each class, every vertex whose probability of it reaches
    ``threshold`` proposes its box for that class, the ``max_candidates`` most probable at
    most (merging compares every pair). Returns ``(class, boxes, scores)`` per class."""
    probabilities = logits.softmax(-1)
    out = []
    for k, name in enumerate(coder.classes, start=1):
        keep = probabilities[:, k] >= threshold
        if int(keep.sum()) > max_candidates:
            keep = torch.zeros_like(keep)
            keep[probabilities[:, k].topk(max_candidates).indices] = True
        labels = torch.full((int(keep.sum()),), k, dtype=torch.long, device=logits.device)
        boxes = coder.decode(codes[keep, k - 1], vertices[keep, :3], labels)
        out.append((name, boxes, probabilities[keep, k]))
    return out


def nms(boxes: Tensor, scores: Tensor, threshold: float = 0.1, kind: IoUKind = IoUKind.BEV) -> Tensor:
    """Indices kept by greedy non-maximum suppression of rotated boxes, best first."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(scores, descending=True)
    overlap = kind(boxes[order].cpu(), boxes[order].cpu())
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    kept = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= overlap[i] > threshold
    return order[torch.tensor(kept, dtype=torch.long)]


def occlusion_factors(points: Tensor, boxes: Tensor, chunk: int = 64) -> Tensor:
    """``[K]``: for each box, the product over its three axes of the covered fraction of
    its extent (the spread of the box's points along the axis over the box's size); 0 for
    a box with fewer than two points."""
    points, boxes = points[:, :3].double(), boxes.double()
    out = torch.zeros(boxes.shape[0], dtype=torch.float64)
    if points.shape[0] == 0:
        return out
    # A box's points lie within its half-diagonal of its centre: test only those.
    reach = boxes[:, 3:6].norm(dim=1) / 2
    for start in range(0, boxes.shape[0], chunk):
        part = boxes[start : start + chunk]
        near = (torch.cdist(points, part[:, :3]) <= reach[start : start + chunk]).any(1)
        local = to_box_frame(points[near], part)  # [n, k, 3]
        inside = (local.abs() <= part[None, :, 3:6] / 2).all(-1, keepdim=True)
        high = local.masked_fill(~inside, -math.inf).amax(0)
        low = local.masked_fill(~inside, math.inf).amin(0)
        cover = ((high - low) / part[:, 3:6]).clamp(min=0, max=1).prod(1)
        enough = inside[..., 0].sum(0) >= 2
        out[start : start + chunk] = torch.where(enough, cover, torch.zeros_like(cover))
    return out


def occlusion_factor(points: Tensor, box: Tensor) -> float:
    """:func:`occlusion_factors` of one box ``[7]``."""
    return float(occlusion_factors(points, box.view(1, 7))[0])


def merge_boxes(
    boxes: Tensor,
    scores: Tensor,
    points: Tensor | None = None,
    threshold: float = 0.1,
    kind: IoUKind = IoUKind.BEV,
) -> tuple[Tensor, Tensor]:
    """Point-GNN's box merging and scoring: ``(boxes [K, 7], scores [K])``.

    Candidates are taken best first; each takes with it every remaining candidate that
    overlaps it by more than ``threshold``; the cluster's box is the coordinate-wise median
    (the yaw's through its doubled-angle vector), and its score is
    ``(o + 1) * sum_i IoU(merged, b_i) * s_i`` with ``o`` the :func:`occlusion_factor` of
    the merged box among ``points`` (0 without points).
    """
    if boxes.shape[0] == 0:
        return boxes.new_zeros(0, 7), scores.new_zeros(0)
    order = torch.argsort(scores, descending=True)
    boxes, scores = boxes[order].cpu().double(), scores[order].cpu().double()
    overlap = kind(boxes, boxes)
    free = torch.ones(len(boxes), dtype=torch.bool)
    merged, merged_scores = [], []
    for i in range(len(boxes)):
        if not free[i]:
            continue
        cluster = free & (overlap[i] > threshold)
        cluster[i] = True
        free &= ~cluster
        members, member_scores = boxes[cluster], scores[cluster]
        box = members.median(0).values
        doubled = torch.stack([torch.cos(2 * members[:, 6]), torch.sin(2 * members[:, 6])], 1).median(0).values
        box[6] = torch.atan2(doubled[1], doubled[0]) / 2
        merged.append(box)
        merged_scores.append(float((kind(box.view(1, 7), members)[0] * member_scores).sum()))
    merged_boxes, total = torch.stack(merged), torch.tensor(merged_scores, dtype=torch.float64)
    if points is not None:
        total = total * (occlusion_factors(points, merged_boxes) + 1)
    return merged_boxes, total


def select_boxes(
    candidates: list[tuple[str, Tensor, Tensor]],
    points: Tensor,
    merge: Merge = Merge.MERGE,
    iou_threshold: float = 0.1,
) -> Detections:
    """The detections among each class's candidates (from :func:`decode_detections`), by
    ``merge``; ``points`` are the scan's, for the occlusion factors of merged boxes."""
    if not isinstance(merge, Merge):
        raise TypeError(f"merge must be a Merge ({', '.join(m.name for m in Merge)}), got {merge!r}")
    boxes, scores, names = [], [], []
    for name, class_boxes, class_scores in candidates:
        if merge is Merge.MERGE:
            kept, kept_scores = merge_boxes(class_boxes, class_scores, points, iou_threshold)
        else:
            keep = nms(class_boxes, class_scores, iou_threshold)
            kept, kept_scores = class_boxes[keep].cpu().double(), class_scores[keep].cpu().double()
        boxes.append(kept)
        scores.append(kept_scores)
        names += [name] * len(kept)
    if not boxes:
        return Detections(torch.zeros(0, 7), torch.zeros(0), [])
    return Detections(torch.cat(boxes).float(), torch.cat(scores).float(), names)
