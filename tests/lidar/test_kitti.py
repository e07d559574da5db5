import math
from collections import Counter

import pytest
import torch

from structnets.lidar.boxes import points_in_boxes
from structnets.lidar.kitti import (
    boxes_in_lidar,
    format_label,
    in_camera_view,
    label_from_box,
    load_frame,
    read_calibration,
    read_labels,
    read_velodyne,
    write_labels,
)


@pytest.fixture
def root(data_dir):
    return data_dir / "kitti_sample"


def _inside(points, box):
    """Points inside a LiDAR-frame box (centre, l, w, h, yaw)."""
    x, y, z, length, width, height, yaw = box.tolist()
    d = points[:, :3] - torch.tensor([x, y, z])
    c, s = math.cos(-yaw), math.sin(-yaw)
    u, v = c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]
    return (u.abs() <= length / 2) & (v.abs() <= width / 2) & (d[:, 2].abs() <= height / 2)


def test_real_frames(root):
    counts = Counter()
    sizes = []
    for frame in range(6):
        points, calibration, objects = load_frame(frame, root)
        sizes.append(points.shape[0])
        counts.update(o.type for o in objects)
        assert points.shape[1] == 4 and points.dtype == torch.float32
    assert sizes == [115384, 120268, 126891, 113110, 115976, 125086]
    assert counts == Counter(Car=5, Pedestrian=2, Cyclist=1, Truck=1, Misc=1, DontCare=15)
    assert read_calibration(root / "training" / "calib" / "000000.txt").P2[0, 0] == pytest.approx(707.0493)
    assert read_calibration(root / "training" / "calib" / "000001.txt").P2[0, 0] == pytest.approx(721.5377)


def test_the_pedestrian_of_frame_0_lands_in_its_image_box_and_holds_lidar_points(root):
    points, calibration, objects = load_frame(0, root)
    (pedestrian,) = objects
    assert pedestrian.type == "Pedestrian" and pedestrian.location == (1.84, 1.47, 8.41)
    box = boxes_in_lidar(objects, calibration)[0]
    assert 8.0 < box[0] < 9.0  # about 8.4 m ahead of the LiDAR
    u, v = calibration.project(box[None, :3])[0].tolist()
    left, top, right, bottom = pedestrian.bbox
    assert left < u < right and top < v < bottom
    assert int(_inside(points, box).sum()) > 50  # the scan really has a person there


def test_lidar_camera_round_trip(root):
    points, calibration, _ = load_frame(2, root)
    back = calibration.camera_to_lidar(calibration.lidar_to_camera(points[:1000]))
    torch.testing.assert_close(back, points[:1000, :3], atol=1e-4, rtol=0)


def test_bad_files_are_named(tmp_path, root):
    (tmp_path / "short.bin").write_bytes(b"\0" * 17)
    with pytest.raises(ValueError, match=r"short.bin: 17 bytes is not a whole number of points"):
        read_velodyne(tmp_path / "short.bin")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.bin: empty scan"):
        read_velodyne(tmp_path / "empty.bin")
    calib = (root / "training" / "calib" / "000000.txt").read_text().splitlines()
    (tmp_path / "calib.txt").write_text("\n".join(line for line in calib if not line.startswith("Tr_velo_to_cam")))
    with pytest.raises(ValueError, match=r"calib.txt: no Tr_velo_to_cam matrix"):
        read_calibration(tmp_path / "calib.txt")
    (tmp_path / "label.txt").write_text("Spaceship 0 0 0 1 2 3 4 1 1 1 0 0 5 0\n")
    with pytest.raises(ValueError, match=r"label.txt, line 1: unknown class 'Spaceship'"):
        read_labels(tmp_path / "label.txt")
    (tmp_path / "few.txt").write_text("Car 0 0\n")
    with pytest.raises(ValueError, match=r"few.txt, line 1: 3 fields, expected 15"):
        read_labels(tmp_path / "few.txt")


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
