"""KITTI 3D object detection data: LiDAR scans, calibrations and labels.

The layout is the KITTI object benchmark's (Geiger et al. 2012): under a root folder,
``training/velodyne/NNNNNN.bin`` (float32 x, y, z, reflectance per point, LiDAR frame:
x forward, y left, z up), ``training/calib/NNNNNN.txt`` (the cameras' projection matrices
``P0``-``P3``, ``R0_rect``, ``Tr_velo_to_cam``) and ``training/label_2/NNNNNN.txt`` (15
fields per object, a 16th for a detector's score). The canonical downloads are listed in
:data:`KITTI_URL`; :func:`load_frame` reads a local copy through the data-directory setting
(``kitti_sample`` by default, where the six real frames used by the tests live).

Every reader names the file, and where it applies the line, of what it refuses: a
truncated or empty scan, or one with NaN or infinite values; a calibration without one of
the matrices, with a value that is not a finite number, a line that is not ``NAME: values``,
a matrix given twice, or a singular rectification or rotation; a label with an unknown
class, the wrong number of fields, a value that is not a finite number, a fractional
occlusion level or a box size (height, width, length) that is not positive (``DontCare``
regions, 2D only, keep KITTI's -1); a file that is not UTF-8 text. :func:`load_frame`
refuses a frame without a label file unless told the frames are unlabelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..train.checkpoint import atomic_write
from ..train.data import data_dir
from .boxes import box_corners_3d

__all__ = [
    "KITTI_URL",
    "CLASSES",
    "Calibration",
    "KittiObject",
    "read_velodyne",
    "read_calibration",
    "read_labels",
    "load_frame",
    "require_labels",
    "LABEL_FIELDS",
    "boxes_in_lidar",
    "label_from_box",
    "labels_from_boxes",
    "format_label",
    "write_labels",
    "in_camera_view",
]

KITTI_URL = "http://www.cvlibs.net/datasets/kitti/eval_object.php?obj_benchmark=3d"
CLASSES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")


def read_velodyne(path: str | Path) -> Tensor:
    """``[N, 4]`` float32 points (x, y, z, reflectance) of a ``.bin`` scan."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no scan at {path}")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path}: empty scan (0 points)")
    if size % 16:
        raise ValueError(f"{path}: {size} bytes is not a whole number of points (16 bytes each); truncated file?")
    points = np.fromfile(path, dtype="<f4").reshape(-1, 4)
    if not np.isfinite(points).all():
        raise ValueError(
            f"{path}: NaN or infinite values at point(s) {np.argwhere(~np.isfinite(points))[:5, 0].tolist()}"
        )
    return torch.from_numpy(points.copy())


@dataclass(frozen=True)
class Calibration:
    """The transforms of one frame: ``P2`` (3x4), ``R0_rect`` (3x3), ``Tr_velo_to_cam`` (3x4)."""

    P2: Tensor
    R0_rect: Tensor
    Tr_velo_to_cam: Tensor

    def lidar_to_camera(self, points: Tensor) -> Tensor:
        """``[N, 3]`` LiDAR points in the rectified camera frame (x right, y down, z forward)."""
        homogeneous = torch.cat([points[:, :3].double(), torch.ones(points.shape[0], 1, dtype=torch.float64)], 1)
        return (homogeneous @ self.Tr_velo_to_cam.T @ self.R0_rect.T).to(points.dtype)

    def camera_to_lidar(self, points: Tensor) -> Tensor:
        """The inverse of :meth:`lidar_to_camera`."""
        rotation, translation = self.Tr_velo_to_cam[:, :3], self.Tr_velo_to_cam[:, 3]
        unrectified = points.double() @ torch.linalg.inv(self.R0_rect).T
        return ((unrectified - translation) @ torch.linalg.inv(rotation).T).to(points.dtype)

    def project(self, points: Tensor) -> Tensor:
        """``[N, 2]`` pixel coordinates in image_2 of ``[N, 3]`` LiDAR points."""
        camera = self.lidar_to_camera(points).double()
        homogeneous = torch.cat([camera, torch.ones(camera.shape[0], 1, dtype=torch.float64)], 1) @ self.P2.T
        return (homogeneous[:, :2] / homogeneous[:, 2:]).to(points.dtype)


def _read_text(path: Path) -> str:
    """The text of a UTF-8 file (a byte-order mark is dropped); other bytes are an error that names the file."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})") from None


def _finite(token: str, where: str, name: str) -> float:
    """``token`` as a finite float, or a ValueError naming ``where``, the field and the token."""
    try:
        value = float(token)
    except ValueError:
        raise ValueError(f"{where}: {name} is {token!r}, not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {name} is {token!r}; values must be finite")
    return value


def read_calibration(path: str | Path) -> Calibration:
    """The matrices of a KITTI ``calib/*.txt``: one ``NAME: values`` line per matrix, all
    values finite numbers; ``P2``, ``R0_rect`` and ``Tr_velo_to_cam`` must be there, once each."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no calibration at {path}")
    found: dict[str, list[float]] = {}
    lines: dict[str, int] = {}
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        key, colon, values = line.partition(":")
        key = key.strip()
        if not colon or not key or len(key.split()) > 1:
            raise ValueError(f"{path}, line {number}: expected 'NAME: values', got {line.strip()[:40]!r}")
        if key in found:
            raise ValueError(f"{path}, line {number}: a second {key!r} (the first is on line {lines[key]})")
        numbers = [_finite(token, f"{path}, line {number}", f"a value of {key!r}") for token in values.split()]
        found[key], lines[key] = numbers, number
    shapes = {"P2": (3, 4), "R0_rect": (3, 3), "Tr_velo_to_cam": (3, 4)}
    matrices = {}
    for key, shape in shapes.items():
        if key not in found:
            raise ValueError(f"{path}: no {key} matrix (has {', '.join(found) or 'nothing'})")
        if len(found[key]) != shape[0] * shape[1]:
            raise ValueError(f"{path}: {key} has {len(found[key])} values, expected {shape[0] * shape[1]}")
        matrices[key] = torch.tensor(found[key], dtype=torch.float64).view(shape)
    for name, square in (
        ("R0_rect", matrices["R0_rect"]),
        ("the rotation of Tr_velo_to_cam", matrices["Tr_velo_to_cam"][:, :3]),
    ):
        determinant = float(torch.linalg.det(square))
        if not abs(determinant) > 1e-9:  # camera_to_lidar inverts both
            raise ValueError(f"{path}: {name} is singular (determinant {determinant:.3g})")
    return Calibration(**matrices)


@dataclass(frozen=True)
class KittiObject:
    """One label line. ``dimensions`` are (height, width, length) in metres; ``location``
    the bottom centre of the box in the rectified camera frame; ``rotation_y`` the yaw
    around the camera's y axis; ``score`` only in detections."""

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: tuple[float, float, float, float]
    dimensions: tuple[float, float, float]
    location: tuple[float, float, float]
    rotation_y: float
    score: float | None = None


#: The numeric fields of a label line, in order (the 16th, a detector's score, is optional).
LABEL_FIELDS = (
    "truncated",
    "occluded",
    "alpha",
    "bbox left",
    "bbox top",
    "bbox right",
    "bbox bottom",
    "height",
    "width",
    "length",
    "x",
    "y",
    "z",
    "rotation_y",
    "score",
)


def read_labels(path: str | Path) -> list[KittiObject]:
    """The objects of a ``label_2/*.txt`` file (an empty file is a frame without objects).

    Each line has a class of :data:`CLASSES` and 14 finite numbers (15 with a score); the
    occlusion level is a whole number and the box size (height, width, length) positive,
    except for ``DontCare`` regions, which are 2D only (KITTI writes -1 for their size).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no label file at {path}")
    objects = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}, line {number}"
        if len(fields) not in (15, 16):
            raise ValueError(f"{where}: {len(fields)} fields, expected 15 (16 with a score)")
        if fields[0] not in CLASSES:
            raise ValueError(f"{where}: unknown class {fields[0]!r}; KITTI's are {', '.join(CLASSES)}")
        values = [_finite(token, where, name) for name, token in zip(LABEL_FIELDS, fields[1:])]
        if not values[1].is_integer():
            raise ValueError(f"{where}: occluded is {fields[2]!r}, not a whole number")
        if fields[0] != "DontCare" and not min(values[7:10]) > 0:
            raise ValueError(f"{where}: box size (h, w, l) {' '.join(fields[8:11])} is not positive")
        objects.append(
            KittiObject(
                type=fields[0],
                truncated=values[0],
                occluded=int(values[1]),
                alpha=values[2],
                bbox=tuple(values[3:7]),
                dimensions=tuple(values[7:10]),
                location=tuple(values[10:13]),
                rotation_y=values[13],
                score=values[14] if len(values) == 15 else None,
            )
        )
    return objects


def load_frame(
    frame: int | str, root: str | Path | None = None, *, split: str = "training", labelled: bool = True
) -> tuple[Tensor, Calibration, list[KittiObject]]:
    """``(points, calibration, objects)`` of one frame; ``root`` defaults to ``kitti_sample``
    in the data directory.

    A labelled frame (the default) must have its ``label_2`` file, empty for a scene without
    objects: a missing one is an error, not a scene without objects. With ``labelled=False``
    (KITTI's testing frames, or predictions) the labels are read where there are some and the
    object list is empty otherwise.
    """
    base = Path(root) if root is not None else data_dir() / "kitti_sample"
    name = f"{int(frame):06d}" if str(frame).isdigit() else str(frame)
    folder = base / split
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found; KITTI's object benchmark is at {KITTI_URL}")
    if labelled:
        require_labels(folder, [name])
    points = read_velodyne(folder / "velodyne" / f"{name}.bin")
    calibration = read_calibration(folder / "calib" / f"{name}.txt")
    label = folder / "label_2" / f"{name}.txt"
    objects = read_labels(label) if label.is_file() else []
    return points, calibration, objects


def require_labels(folder: str | Path, names: list[str]) -> None:
    """Refuses frames of ``folder`` (a split: ``training``) without a ``label_2`` file, naming
    the missing folder, or the first missing file and how many more there are."""
    labels = Path(folder) / "label_2"
    if not labels.is_dir():
        raise FileNotFoundError(
            f"{labels} not found: labelled frames need a label file per scan (empty for a scene without objects)"
        )
    missing = [n for n in names if not (labels / f"{n}.txt").is_file()]
    if missing:
        message = f"no label file at {labels / f'{missing[0]}.txt'}"
        if len(missing) > 1:
            shown = ", ".join(missing[1:4]) + (", ..." if len(missing) > 4 else "")
            message += f" (nor for {len(missing) - 1} more frame(s): {shown})"
        raise FileNotFoundError(f"{message}; an empty file is a scene without objects")


def boxes_in_lidar(objects: list[KittiObject], calibration: Calibration) -> Tensor:
    """``[M, 7]`` boxes in the LiDAR frame: centre x, y, z, length, width, height, yaw.

    The label's location is the bottom centre in the camera frame; the LiDAR box's centre
    is half a height above it. Yaw in the LiDAR frame (around z, from the x axis) is
    ``-rotation_y - pi/2``, wrapped to [-pi, pi).
    """
    if not objects:
        return torch.zeros(0, 7, dtype=torch.float32)
    location = torch.tensor([o.location for o in objects], dtype=torch.float64)
    h, w, length = (torch.tensor([o.dimensions[k] for o in objects], dtype=torch.float64) for k in range(3))
    bottom = calibration.camera_to_lidar(location)
    centre = bottom + torch.stack([torch.zeros_like(h), torch.zeros_like(h), h / 2], 1)
    yaw = -torch.tensor([o.rotation_y for o in objects], dtype=torch.float64) - math.pi / 2
    yaw = torch.remainder(yaw + math.pi, 2 * math.pi) - math.pi
    return torch.cat([centre, torch.stack([length, w, h, yaw], 1)], 1).float()


def labels_from_boxes(
    names: list[str],
    boxes: Tensor,
    calibration: Calibration,
    *,
    truncated: float | list[float] = 0.0,
    occluded: int | list[int] = 0,
    scores: list[float] | Tensor | None = None,
    image_size: tuple[int, int] = (1242, 375),
) -> list[KittiObject]:
    """The labels of LiDAR-frame boxes ``[M, 7]``: the inverse of :func:`boxes_in_lidar`,
    with each 2D box from the projected corners, clipped to the image (``width, height``)."""
    if len(names) != boxes.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {len(names)} names")
    if boxes.shape[0] == 0:
        return []
    boxes = boxes.double()
    bottom_lidar = torch.cat([boxes[:, :2], (boxes[:, 2] - boxes[:, 5] / 2).unsqueeze(1)], 1)
    bottom = calibration.lidar_to_camera(bottom_lidar)
    rotation_y = torch.remainder(-boxes[:, 6] - math.pi / 2 + math.pi, 2 * math.pi) - math.pi
    alpha = torch.remainder(rotation_y - torch.atan2(bottom[:, 0], bottom[:, 2]) + math.pi, 2 * math.pi) - math.pi
    pixels = calibration.project(box_corners_3d(boxes).reshape(-1, 3)).view(-1, 8, 2)
    low = pixels.amin(1).clamp(min=0)
    high = torch.minimum(pixels.amax(1), torch.tensor(image_size, dtype=torch.float64) - 1)
    count = len(names)
    truncated = truncated if isinstance(truncated, list) else [truncated] * count
    occluded = occluded if isinstance(occluded, list) else [occluded] * count
    score_list = [None] * count if scores is None else [float(v) for v in scores]
    return [
        KittiObject(
            type=names[k],
            truncated=float(truncated[k]),
            occluded=int(occluded[k]),
            alpha=float(alpha[k]),
            bbox=(float(low[k, 0]), float(low[k, 1]), float(high[k, 0]), float(high[k, 1])),
            dimensions=(float(boxes[k, 5]), float(boxes[k, 4]), float(boxes[k, 3])),
            location=tuple(bottom[k].tolist()),
            rotation_y=float(rotation_y[k]),
            score=score_list[k],
        )
        for k in range(count)
    ]


def label_from_box(
    name: str, box: Tensor, calibration: Calibration, *, score: float | None = None, **options
) -> KittiObject:
    """:func:`labels_from_boxes` of one box ``[7]``."""
    return labels_from_boxes([name], box.view(1, 7), calibration, scores=None if score is None else [score], **options)[
        0
    ]


def format_label(obj: KittiObject) -> str:
    """One line of a ``label_2`` file (16 fields when the object has a score)."""
    fields = [obj.type, f"{obj.truncated:.2f}", str(obj.occluded), f"{obj.alpha:.2f}"]
    fields += [f"{v:.2f}" for v in (*obj.bbox, *obj.dimensions, *obj.location, obj.rotation_y)]
    if obj.score is not None:
        fields.append(f"{obj.score:.4f}")
    return " ".join(fields)


def write_labels(path: str | Path, objects: list[KittiObject]) -> None:
    """Writes a ``label_2``-format file (an empty file for no objects), atomically."""
    atomic_write(path, "".join(format_label(o) + "\n" for o in objects))


def in_camera_view(points: Tensor, calibration: Calibration, image_size: tuple[int, int] = (1242, 375)) -> Tensor:
    """``[N]`` whether each point is in front of the camera and projects into image_2
    (``width, height``): the field-of-view crop that KITTI's labels and Point-GNN use."""
    front = calibration.lidar_to_camera(points[:, :3])[:, 2] > 0.1
    pixels = calibration.project(points[:, :3])
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < image_size[0]) & (pixels[:, 1] >= 0) & (pixels[:, 1] < image_size[1])
    return front & inside
