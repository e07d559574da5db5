"""What Point-GNN learns per vertex: a class, and a box coded relative to the vertex.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from .boxes import points_in_boxes

__all__ = ["MEAN_SIZES", "MIRRORED_CODES", "BoxCoder", "assign_targets", "detection_loss"]

#: Mean (length, width, height) of each class in KITTI's training labels, in metres.
MEAN_SIZES = {"Car": (3.88, 1.63, 1.53), "Pedestrian": (0.84, 0.66, 1.76), "Cyclist": (1.76, 0.60, 1.74)}
#: What reflecting the scene in the x-z plane (y to -y, yaw to -yaw) does to a box code:
#: the y offset and the doubled angle's sine change sign.
MIRRORED_CODES = (1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0)


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
        # Sizes stay within e^3 of the class's mean either way: a box written to a label file
        # (two decimals) keeps a positive size, which the label reader requires.
        mean = self._means(labels).to(codes.dtype)
        diagonal = mean[:, :2].norm(dim=1)
        return torch.stack(
            [
                vertices[:, 0] + codes[:, 0] * diagonal,
                vertices[:, 1] + codes[:, 1] * diagonal,
                vertices[:, 2] + codes[:, 2] * mean[:, 2],
                mean[:, 0] * torch.exp(codes[:, 3].clamp(-3, 3)),
                mean[:, 1] * torch.exp(codes[:, 4].clamp(-3, 3)),
                mean[:, 2] * torch.exp(codes[:, 5].clamp(-3, 3)),
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
) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy over the vertices that count, plus the Huber loss of the box codes of
    the positive vertices (``codes`` is ``[V, C, size]``, one box per object class; the
    target class's box is the one taught). The parts come back detached, as tensors, so
    that a training step need not wait for them."""
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
    return loss, {"classification": classification.detach(), "regression": regression.detach()}
