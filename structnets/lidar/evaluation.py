"""KITTI's object-detection metric: AP|R40 per class, in bird's-eye view and 3D.

:func:`evaluate_detections` follows the KITTI object benchmark (Geiger et al. 2012, as
revised in 2019): AP|R40 per class, in bird's-eye view and in 3D, at IoU 0.7 for cars and
0.5 for pedestrians and cyclists, for the easy, moderate and hard settings (minimum 2D box
height, maximum occlusion and truncation); ground truth outside a setting, and
neighbouring classes (Van for Car, Person_sitting for Pedestrian), are ignored rather than
counted as misses. :func:`evaluate_label_dirs` does the same from label folders, as the
benchmark's own tool does.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .boxes import IoUKind, average_precision
from .kitti import Calibration, KittiObject, boxes_in_lidar, read_calibration, read_labels

__all__ = ["IOU_THRESHOLDS", "DIFFICULTIES", "NEIGHBOURS", "evaluate_detections", "evaluate_label_dirs", "format_table"]

#: The benchmark's IoU thresholds.
IOU_THRESHOLDS = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
#: (minimum 2D box height in pixels, maximum occlusion level, maximum truncation).
DIFFICULTIES = {"easy": (40.0, 0, 0.15), "moderate": (25.0, 1, 0.30), "hard": (25.0, 2, 0.50)}
#: Classes whose boxes neither teach nor test a class (KITTI's evaluation ignores them).
NEIGHBOURS = {"Car": ("Van",), "Pedestrian": ("Person_sitting",), "Cyclist": ()}


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
        for kind in IoUKind:
            results[name][kind.value] = {}
            for difficulty in difficulties:
                min_height = DIFFICULTIES[difficulty][0]
                all_scores, all_positive, total = [], [], 0
                for truth, detected, truth_boxes, detected_boxes in prepared:
                    counted = torch.tensor([_counts_for(t, name, difficulty) for t in truth], dtype=torch.bool)
                    relevant = torch.tensor(
                        [t.type == name or t.type in NEIGHBOURS[name] for t in truth], dtype=torch.bool
                    )
                    ours = [k for k, d in enumerate(detected) if d.type == name]
                    total += int(counted.sum())
                    if not ours:
                        continue
                    scores = torch.tensor([detected[k].score for k in ours], dtype=torch.float64)
                    small = torch.tensor(
                        [detected[k].bbox[3] - detected[k].bbox[1] < min_height for k in ours], dtype=torch.bool
                    )
                    overlap = kind(detected_boxes[ours], truth_boxes) if len(truth) else torch.zeros(len(ours), 0)
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
                    results[name][kind.value][difficulty] = math.nan
                else:
                    results[name][kind.value][difficulty] = average_precision(
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


def format_table(ap: dict[str, dict[str, dict[str, float]]]) -> str:
    """AP as a small text table, one row per class and view."""
    lines = [f"{'class':<11}{'view':<5}{'easy':>8}{'moderate':>10}{'hard':>8}"]
    for name, views in ap.items():
        for view, values in views.items():
            cells = "".join(
                f"{values.get(d, math.nan):>{w}.3f}" for d, w in (("easy", 8), ("moderate", 10), ("hard", 8))
            )
            lines.append(f"{name:<11}{view:<5}{cells}")
    return "\n".join(lines)
