"""Synthetic LiDAR scenes in the KITTI format, for training and evaluating detectors at scale.

A scene is a flat ground plane with cars, pedestrians and cyclists as boxes standing on
it (sizes drawn around KITTI's class averages). A spinning 64-beam sensor 1.73 m above the
ground (the geometry of KITTI's Velodyne HDL-64E: elevations from -24.9 to +2 degrees)
casts rays over the camera's field of view; each ray returns the nearest hit among the
boxes and the ground, so near objects hide far ones and points thin out with range, as
in real scans. Unlabelled clutter (walls, poles, bushes) stands among them. Range noise
and dropped returns are added. An object that no ray reaches is
left out of the labels, and one that few rays reach is marked occluded. Each scene is written as
``training/velodyne/NNNNNN.bin``, ``label_2`` and ``calib`` files that
:func:`structnets.lidar.kitti.load_frame` reads.

Ray casting is done here, in torch, because the scenes are boxes and a plane: the slab
test for every ray against every box is a few vectorised lines, which no library adds to.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .boxes import iou_bev
from .kitti import Calibration, labels_from_boxes, write_labels

__all__ = ["SENSOR_HEIGHT", "CLASS_SIZES", "CLUTTER_SIZES", "random_boxes", "cast_rays", "generate_scenes"]

SENSOR_HEIGHT = 1.73
#: Mean (length, width, height) in metres and the spread drawn around them.
CLASS_SIZES = {
    "Car": ((3.9, 1.6, 1.56), (0.3, 0.1, 0.1)),
    "Pedestrian": ((0.8, 0.6, 1.75), (0.1, 0.08, 0.1)),
    "Cyclist": ((1.76, 0.6, 1.73), (0.15, 0.05, 0.1)),
}
#: Unlabelled clutter that a detector must learn to reject: stretches of wall, poles, bushes.
CLUTTER_SIZES = {
    "wall": ((8.0, 0.5, 2.5), (3.0, 0.1, 0.8)),
    "pole": ((0.3, 0.3, 4.0), (0.05, 0.05, 1.0)),
    "bush": ((1.6, 1.2, 1.0), (0.5, 0.3, 0.3)),
}
# A KITTI-like calibration: camera x right, y down, z forward; image_2 intrinsics of the
# recordings from 2011-09-26.
_TR_VELO_TO_CAM = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27]])
_P2 = np.array([[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791], [0.0, 0.0, 1.0, 0.002745884]])


def random_boxes(rng: np.random.Generator, counts: dict[str, int], max_range: float = 50.0) -> tuple[Tensor, list[str]]:
    """Non-overlapping boxes ``[M, 7]`` (LiDAR frame, centre z) standing on the ground in
    front of the sensor; ``counts`` by name, from :data:`CLASS_SIZES` or :data:`CLUTTER_SIZES`."""
    boxes, names = [], []
    for name, count in counts.items():
        (mean, spread) = CLASS_SIZES.get(name) or CLUTTER_SIZES[name]
        for _ in range(count):
            for _attempt in range(50):
                size = np.maximum(np.array(mean) + rng.normal(0, spread), 0.3)
                distance = rng.uniform(5.0, max_range)
                bearing = rng.uniform(-0.6, 0.6)  # within the camera's field of view
                x, y = distance * math.cos(bearing), distance * math.sin(bearing)
                z = -SENSOR_HEIGHT + size[2] / 2
                candidate = torch.tensor([[x, y, z, *size, rng.uniform(-math.pi, math.pi)]], dtype=torch.float64)
                if not boxes or float(iou_bev(candidate, torch.cat(boxes)).max()) == 0.0:
                    boxes.append(candidate)
                    names.append(name)
                    break
    if not boxes:
        return torch.zeros(0, 7, dtype=torch.float64), []
    return torch.cat(boxes), names


def _rays(azimuths: int, field_of_view: float) -> Tensor:
    elevation = torch.deg2rad(torch.linspace(-24.9, 2.0, 64, dtype=torch.float64))
    azimuth = torch.linspace(-field_of_view / 2, field_of_view / 2, azimuths, dtype=torch.float64)
    e, a = torch.meshgrid(elevation, azimuth, indexing="ij")
    return torch.stack([torch.cos(e) * torch.cos(a), torch.cos(e) * torch.sin(a), torch.sin(e)], -1).view(-1, 3)


def cast_rays(directions: Tensor, boxes: Tensor, max_range: float = 70.0) -> tuple[Tensor, Tensor]:
    """``(distance [R], hit [R])`` of unit rays from the sensor (the origin): ``hit`` is the
    index of the box struck first, -1 for the ground, -2 for nothing within ``max_range``."""
    distance = torch.full((directions.shape[0],), math.inf, dtype=torch.float64)
    hit = torch.full((directions.shape[0],), -2, dtype=torch.long)
    down = directions[:, 2] < 0
    ground = torch.where(down, -SENSOR_HEIGHT / directions[:, 2].clamp(max=-1e-9), torch.full_like(distance, math.inf))
    distance, hit = torch.where(ground < distance, ground, distance), torch.where(ground < distance, -1, hit)
    if boxes.shape[0]:
        # Slab test in each box's own frame: rays [R, 1, 3] against boxes [1, M, ...].
        c, s = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
        origin = -boxes[:, :3]  # the sensor, relative to each box centre
        ox, oy = c * origin[:, 0] + s * origin[:, 1], -s * origin[:, 0] + c * origin[:, 1]
        local_origin = torch.stack([ox, oy, origin[:, 2]], -1)[None]  # [1, M, 3]
        d = directions[:, None, :]
        dx = c[None] * d[..., 0] + s[None] * d[..., 1]
        dy = -s[None] * d[..., 0] + c[None] * d[..., 1]
        local_direction = torch.stack([dx, dy, d[..., 2].expand_as(dx)], -1)  # [R, M, 3]
        half = boxes[None, :, 3:6] / 2
        inverse = 1.0 / torch.where(
            local_direction.abs() < 1e-12, torch.full_like(local_direction, 1e-12), local_direction
        )
        t1, t2 = (-half - local_origin) * inverse, (half - local_origin) * inverse
        near = torch.minimum(t1, t2).amax(-1)
        far = torch.maximum(t1, t2).amin(-1)
        valid = (near <= far) & (near > 0)
        t = torch.where(valid, near, torch.full_like(near, math.inf))
        best, index = t.min(1)
        closer = best < distance
        distance, hit = torch.where(closer, best, distance), torch.where(closer, index, hit)
    beyond = distance > max_range
    return distance.masked_fill(beyond, math.inf), hit.masked_fill(beyond, -2)


_CALIBRATION = Calibration(
    P2=torch.from_numpy(_P2),
    R0_rect=torch.eye(3, dtype=torch.float64),
    Tr_velo_to_cam=torch.from_numpy(_TR_VELO_TO_CAM),
)


def _calibration_text() -> str:
    return (
        "\n".join(
            [f"P{k}: " + " ".join(f"{v:.12e}" for v in _P2.ravel()) for k in range(4)]
            + ["R0_rect: " + " ".join(f"{v:.12e}" for v in np.eye(3).ravel())]
            + ["Tr_velo_to_cam: " + " ".join(f"{v:.12e}" for v in _TR_VELO_TO_CAM.ravel())]
            + ["Tr_imu_to_velo: " + " ".join(f"{v:.12e}" for v in np.eye(3, 4).ravel())]
        )
        + "\n"
    )


def _write_scene(
    folder: Path, frame: int, seed: int, ranges: dict, azimuths: int, field_of_view: float, noise: float, dropout: float
) -> None:
    # Each scene draws from its own stream (seed, frame): the same scene whichever process writes it.
    rng = np.random.default_rng([seed, frame])
    counts = {name: int(rng.integers(low, high + 1)) for name, (low, high) in ranges.items()}
    boxes, names = random_boxes(rng, counts)
    directions = _rays(azimuths, field_of_view)
    distance, hit = cast_rays(directions, boxes)
    keep = (hit > -2) & torch.from_numpy(rng.random(len(hit)) >= dropout)
    ranged = distance[keep] + torch.from_numpy(rng.normal(0, noise, int(keep.sum())))
    xyz = directions[keep] * ranged.unsqueeze(1)
    reflectance = torch.where(hit[keep] >= 0, 0.5, 0.2) + torch.from_numpy(rng.uniform(-0.1, 0.1, int(keep.sum())))
    points = torch.cat([xyz, reflectance.unsqueeze(1)], 1).float().numpy()
    name = f"{frame:06d}"
    points.astype("<f4").tofile(folder / "velodyne" / f"{name}.bin")
    # Returns per object: none, and it is left out of the labels (KITTI labels what the
    # sensors saw); a few, and it counts as occluded (2: largely, 1: partly).
    hits = torch.bincount(hit[keep & (hit >= 0)], minlength=len(names)).tolist()
    seen = [k for k, (n, count) in enumerate(zip(names, hits)) if count > 0 and n in CLASS_SIZES]
    occlusion = [0 if hits[k] >= 20 else 1 if hits[k] >= 5 else 2 for k in seen]
    labels = labels_from_boxes([names[k] for k in seen], boxes[seen], _CALIBRATION, occluded=occlusion)
    write_labels(folder / "label_2" / f"{name}.txt", labels)
    (folder / "calib" / f"{name}.txt").write_text(_calibration_text())


def _write_scenes(args: tuple) -> None:
    torch.set_num_threads(1)
    folder, frames, *rest = args
    for frame in frames:
        _write_scene(folder, frame, *rest)


def generate_scenes(
    out_dir: str | Path,
    count: int,
    *,
    seed: int = 0,
    objects: dict[str, tuple[int, int]] | None = None,
    clutter: dict[str, tuple[int, int]] | None = None,
    azimuths: int = 450,
    field_of_view: float = math.radians(90),
    noise: float = 0.02,
    dropout: float = 0.1,
    workers: int = 1,
) -> Path:
    """Writes ``count`` scenes under ``out_dir/training``, in ``workers`` processes;
    returns that folder.

    ``objects`` gives each class's (min, max) count per scene (default: cars 2-8,
    pedestrians 0-4, cyclists 0-3); ``clutter`` the same for the unlabelled distractors
    (default: walls 0-2, poles 0-4, bushes 0-4; ``{}`` for none).
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    ranges = objects or {"Car": (2, 8), "Pedestrian": (0, 4), "Cyclist": (0, 3)}
    ranges = {**ranges, **(clutter if clutter is not None else {"wall": (0, 2), "pole": (0, 4), "bush": (0, 4)})}
    unknown = [name for name in ranges if name not in CLASS_SIZES and name not in CLUTTER_SIZES]
    if unknown:
        raise ValueError(f"no sizes for {', '.join(unknown)}; known: {', '.join([*CLASS_SIZES, *CLUTTER_SIZES])}")
    folder = Path(out_dir) / "training"
    for sub in ("velodyne", "label_2", "calib"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rest = (seed, ranges, azimuths, field_of_view, noise, dropout)
    if workers > 1 and count > 1:
        import concurrent.futures
        import multiprocessing

        chunks = [(folder, list(range(start, count, workers)), *rest) for start in range(workers)]
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            list(pool.map(_write_scenes, chunks))
    else:
        for frame in range(count):
            _write_scene(folder, frame, *rest)
    return folder
