"""From Point-GNN's per-vertex outputs to detections, and detections to KITTI's AP.

Training targets (:func:`assign_targets`): a vertex inside an object's box belongs to that
object's class and regresses that box; a vertex just outside it (within ``margin``) or
inside a box of a class the model does not learn (a Van, for a car detector) is left out
of the loss; every other vertex is background.

Box coding (:class:`BoxCoder`), relative to the vertex and to the class's mean size, as in
Shi & Rajkumar (2020, section 3.3)::

    ((x - x_v) / d, (y - y_v) / d, (z - z_v) / h_m, log l / l_m, log w / w_m, log h / h_m,
     cos 2 yaw, sin 2 yaw)

with ``d`` the diagonal of the mean footprint. A box is the same box turned by half a
turn, so the yaw is coded as the doubled angle: the regression target is continuous and
has no wrap-around.

Post-processing, per class: plain non-maximum suppression (:func:`nms`), or the paper's
box merging and occlusion-aware scoring (:func:`merge_boxes`): overlapping candidates are
clustered around the best-scoring one, the cluster's box is the median of its members, and
its score is ``(o + 1) * sum_i IoU(m, b_i) * s_i``, where the occlusion factor ``o`` is the
product, over the box's three axes, of the fraction of the box's extent that its points
cover.

Evaluation (:func:`evaluate_detections`) follows the KITTI object benchmark: AP|R40 per
class, in bird's-eye view and in 3D, at IoU 0.7 for cars and 0.5 for pedestrians and
cyclists, for the easy, moderate and hard settings (minimum 2D box height, maximum
occlusion and truncation); ground truth outside a setting, and neighbouring classes (Van
for Car, Person_sitting for Pedestrian), are ignored rather than counted as misses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from .boxes import average_precision, iou_3d, iou_bev, points_in_boxes, to_box_frame
from .kitti import Calibration, KittiObject, boxes_in_lidar, read_labels

__all__ = [
    "MEAN_SIZES",
    "IOU_THRESHOLDS",
    "DIFFICULTIES",
    "BoxCoder",
    "assign_targets",
    "detection_loss",
    "Detections",
    "decode_detections",
    "nms",
    "occlusion_factor",
    "occlusion_factors",
    "merge_boxes",
    "evaluate_detections",
    "evaluate_label_dirs",
]

#: Mean (length, width, height) of each class in KITTI's training labels, in metres.
MEAN_SIZES = {"Car": (3.88, 1.63, 1.53), "Pedestrian": (0.84, 0.66, 1.76), "Cyclist": (1.76, 0.60, 1.74)}
#: The benchmark's IoU thresholds.
IOU_THRESHOLDS = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
#: (minimum 2D box height in pixels, maximum occlusion level, maximum truncation).
DIFFICULTIES = {"easy": (40.0, 0, 0.15), "moderate": (25.0, 1, 0.30), "hard": (25.0, 2, 0.50)}
#: Classes whose boxes neither teach nor test a class (KITTI's evaluation ignores them).
_NEIGHBOURS = {"Car": ("Van",), "Pedestrian": ("Person_sitting",), "Cyclist": ()}


@dataclass(frozen=True)
class BoxCoder:
    """Codes boxes ``[N, 7]`` relative to vertices ``[N, 3]`` and a class's mean size."""

    classes: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
    size: int = 8

    def _means(self, labels: Tensor) -> Tensor:
        """``[N, 3]`` mean sizes of the (1-based) class labels."""
        table = torch.tensor([MEAN_SIZES[c] for c in self.classes], dtype=torch.float32, device=labels.device)
        return table[labels - 1]

    def encode(self, boxes: Tensor, vertices: Tensor, labels: Tensor) -> Tensor:
        mean = self._means(labels).to(boxes.dtype)
        diagonal = mean[:, :2].norm(dim=1)
        yaw = boxes[:, 6]
        return torch.stack(
            [
                (boxes[:, 0] - vertices[:, 0]) / diagonal,
                (boxes[:, 1] - vertices[:, 1]) / diagonal,
                (boxes[:, 2] - vertices[:, 2]) / mean[:, 2],
                torch.log(boxes[:, 3] / mean[:, 0]),
                torch.log(boxes[:, 4] / mean[:, 1]),
                torch.log(boxes[:, 5] / mean[:, 2]),
                torch.cos(2 * yaw),
                torch.sin(2 * yaw),
            ],
            1,
        )

    def decode(self, codes: Tensor, vertices: Tensor, labels: Tensor) -> Tensor:
        mean = self._means(labels).to(codes.dtype)
        diagonal = mean[:, :2].norm(dim=1)
        return torch.stack(
            [
                vertices[:, 0] + codes[:, 0] * diagonal,
                vertices[:, 1] + codes[:, 1] * diagonal,
                vertices[:, 2] + codes[:, 2] * mean[:, 2],
                mean[:, 0] * torch.exp(codes[:, 3].clamp(max=3)),
                mean[:, 1] * torch.exp(codes[:, 4].clamp(max=3)),
                mean[:, 2] * torch.exp(codes[:, 5].clamp(max=3)),
                torch.atan2(codes[:, 7], codes[:, 6]) / 2,
            ],
            1,
        )


def assign_targets(
    vertices: Tensor,
    boxes: Tensor,
    names: list[str],
    coder: BoxCoder,
    *,
    margin: float = 0.25,
) -> tuple[Tensor, Tensor]:
    """``(labels [V], codes [V, coder.size])`` for vertices ``[V, 3+]`` and the frame's
    boxes ``[M, 7]`` of classes ``names``: label 0 is background, ``k`` the k-th class of
    ``coder.classes``, -1 a vertex left out of the loss. Codes are zero where the label is
    not positive. A vertex inside two boxes (they touch) takes the nearer centre."""
    if boxes.shape[0] != len(names):
        raise ValueError(f"{boxes.shape[0]} boxes but {len(names)} class names")
    xyz = vertices[:, :3]
    labels = torch.zeros(xyz.shape[0], dtype=torch.long, device=xyz.device)
    codes = torch.zeros(xyz.shape[0], coder.size, dtype=xyz.dtype, device=xyz.device)
    if boxes.shape[0] == 0:
        return labels, codes
    boxes = boxes.to(xyz)
    inside = points_in_boxes(xyz, boxes)
    near = points_in_boxes(xyz, boxes, margin)
    taught = torch.tensor([n in coder.classes for n in names], device=xyz.device)
    labels[(near & ~taught).any(1) | (near & ~inside).any(1)] = -1
    positive = (inside & taught).any(1)
    if bool(positive.any()):
        distance = (xyz[:, None] - boxes[None, :, :3]).norm(dim=-1).masked_fill(~(inside & taught), math.inf)
        owner = distance[positive].argmin(1)
        class_of_box = torch.tensor([coder.classes.index(n) + 1 if n in coder.classes else 0 for n in names])
        labels[positive] = class_of_box.to(xyz.device)[owner]
        codes[positive] = coder.encode(boxes[owner], xyz[positive], labels[positive])
    return labels, codes


def detection_loss(
    logits: Tensor, codes: Tensor, labels: Tensor, target_codes: Tensor, box_weight: float = 1.0
) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy over the vertices that count, plus the Huber loss of the box codes of
    the positive vertices (``codes`` is ``[V, C, size]``, one box per object class; the
    target class's box is the one taught)."""
    counted = labels >= 0
    classification = F.cross_entropy(logits[counted], labels[counted]) if bool(counted.any()) else logits.sum() * 0
    positive = labels > 0
    if bool(positive.any()):
        predicted = codes[positive, labels[positive] - 1]
        regression = F.smooth_l1_loss(predicted, target_codes[positive], beta=1 / 9, reduction="sum") / max(
            int(positive.sum()), 1
        )
    else:
        regression = codes.sum() * 0
    loss = classification + box_weight * regression
    return loss, {"classification": classification.item(), "regression": regression.item()}


@dataclass(frozen=True)
class Detections:
    """One frame's detections: boxes ``[K, 7]`` (LiDAR frame), scores ``[K]``, class names."""

    boxes: Tensor
    scores: Tensor
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)


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


def _iou(kind: str):
    if kind not in ("bev", "3d"):
        raise ValueError(f"IoU kind must be 'bev' or '3d', got {kind!r}")
    return iou_bev if kind == "bev" else iou_3d


def nms(boxes: Tensor, scores: Tensor, threshold: float = 0.1, kind: str = "bev") -> Tensor:
    """Indices kept by greedy non-maximum suppression of rotated boxes, best first."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(scores, descending=True)
    overlap = _iou(kind)(boxes[order].cpu(), boxes[order].cpu())
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
    boxes: Tensor, scores: Tensor, points: Tensor | None = None, threshold: float = 0.1, kind: str = "bev"
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
    iou = _iou(kind)
    order = torch.argsort(scores, descending=True)
    boxes, scores = boxes[order].cpu().double(), scores[order].cpu().double()
    overlap = iou(boxes, boxes)
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
        merged_scores.append(float((iou(box.view(1, 7), members)[0] * member_scores).sum()))
    merged_boxes, total = torch.stack(merged), torch.tensor(merged_scores, dtype=torch.float64)
    if points is not None:
        total = total * (occlusion_factors(points, merged_boxes) + 1)
    return merged_boxes, total


def _counts_for(obj: KittiObject, name: str, difficulty: str) -> bool:
    min_height, max_occlusion, max_truncation = DIFFICULTIES[difficulty]
    return (
        obj.type == name
        and obj.bbox[3] - obj.bbox[1] >= min_height
        and obj.occluded <= max_occlusion
        and obj.truncated <= max_truncation
    )


def evaluate_detections(
    frames: list[tuple[list[KittiObject], list[KittiObject], Calibration]],
    classes: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist"),
    difficulties: tuple[str, ...] = ("easy", "moderate", "hard"),
    iou_thresholds: dict[str, float] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """AP|R40 as ``{class: {"bev"|"3d": {difficulty: ap}}}`` over frames given as
    ``(ground truth, detections with scores, calibration)``; NaN where a class has no
    ground truth in a setting. Greedy matching by score: each detection takes the unmatched
    counted box of highest IoU; failing that, a detection overlapping an ignored box, or
    smaller in the image than the setting's minimum height, is ignored; the rest are false
    positives."""
    thresholds = {**IOU_THRESHOLDS, **(iou_thresholds or {})}
    results: dict[str, dict[str, dict[str, float]]] = {}
    prepared = []
    for truth, detected, calibration in frames:
        if any(d.score is None for d in detected):
            raise ValueError("detections need scores (the 16th field of a KITTI label line)")
        prepared.append(
            (
                truth,
                detected,
                boxes_in_lidar(truth, calibration).double(),
                boxes_in_lidar(detected, calibration).double(),
            )
        )
    for name in classes:
        results[name] = {}
        for kind in ("bev", "3d"):
            iou = _iou(kind)
            results[name][kind] = {}
            for difficulty in difficulties:
                min_height = DIFFICULTIES[difficulty][0]
                all_scores, all_positive, total = [], [], 0
                for truth, detected, truth_boxes, detected_boxes in prepared:
                    counted = torch.tensor([_counts_for(t, name, difficulty) for t in truth], dtype=torch.bool)
                    relevant = torch.tensor(
                        [t.type == name or t.type in _NEIGHBOURS[name] for t in truth], dtype=torch.bool
                    )
                    ours = [k for k, d in enumerate(detected) if d.type == name]
                    total += int(counted.sum())
                    if not ours:
                        continue
                    scores = torch.tensor([detected[k].score for k in ours], dtype=torch.float64)
                    small = torch.tensor(
                        [detected[k].bbox[3] - detected[k].bbox[1] < min_height for k in ours], dtype=torch.bool
                    )
                    overlap = iou(detected_boxes[ours], truth_boxes) if len(truth) else torch.zeros(len(ours), 0)
                    matched = torch.zeros(len(truth), dtype=torch.bool)
                    for d in torch.argsort(scores, descending=True).tolist():
                        candidates = overlap[d].masked_fill(~counted | matched, -1.0)
                        best = int(candidates.argmax()) if len(truth) else -1
                        if best >= 0 and candidates[best] >= thresholds[name]:
                            matched[best] = True
                            all_scores.append(scores[d])
                            all_positive.append(True)
                        elif bool(small[d]) or bool(
                            (overlap[d].masked_fill(~(relevant & ~counted), -1.0) >= thresholds[name]).any()
                        ):
                            continue  # ignored: neither a hit nor a false alarm
                        else:
                            all_scores.append(scores[d])
                            all_positive.append(False)
                if total == 0:
                    results[name][kind][difficulty] = math.nan
                else:
                    results[name][kind][difficulty] = average_precision(
                        torch.stack(all_scores) if all_scores else torch.zeros(0, dtype=torch.float64),
                        torch.tensor(all_positive, dtype=torch.bool),
                        total,
                    )
    return results


def evaluate_label_dirs(
    truth_dir: str | Path, detection_dir: str | Path, calib_dir: str | Path, **options
) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`evaluate_detections` over every frame labelled in ``truth_dir``, with its
    detections (KITTI result format) from ``detection_dir``; a frame without a detection
    file is an error, not a silent skip."""
    truth_dir, detection_dir, calib_dir = Path(truth_dir), Path(detection_dir), Path(calib_dir)
    from .kitti import read_calibration

    names = sorted(p.stem for p in truth_dir.glob("*.txt"))
    if not names:
        raise FileNotFoundError(f"no label files in {truth_dir}")
    missing = [n for n in names if not (detection_dir / f"{n}.txt").is_file()]
    if missing:
        raise FileNotFoundError(f"{detection_dir}: no detections for frame(s) {', '.join(missing[:5])}")
    frames = [
        (
            read_labels(truth_dir / f"{n}.txt"),
            read_labels(detection_dir / f"{n}.txt"),
            read_calibration(calib_dir / f"{n}.txt"),
        )
        for n in names
    ]
    return evaluate_detections(frames, **options)
