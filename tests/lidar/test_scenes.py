import math

import pytest
import torch

from structnets.lidar.kitti import boxes_in_lidar, load_frame
from structnets.lidar.scenes import SENSOR_HEIGHT, cast_rays, generate_scenes


def test_ray_casting_against_a_box_and_the_ground():
    box = torch.tensor([[10.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.3]], dtype=torch.float64)
    rays = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [math.cos(-0.2), 0.0, math.sin(-0.2)]], dtype=torch.float64)
    distance, hit = cast_rays(rays, box)
    # straight ahead: the rotated box's near face, between 9 m (a face) and 10 - sqrt 2 (a corner)
    assert hit.tolist() == [0, -2, -1] and 10 - math.sqrt(2) - 1e-9 <= distance[0] <= 9.0 + 1e-9
    assert distance[2].item() == pytest.approx(SENSOR_HEIGHT / math.sin(0.2))  # the ground
    assert math.isinf(distance[1])


def test_generated_scenes_load_as_kitti_and_labels_match_the_points(tmp_path):
    generate_scenes(tmp_path, 2, seed=1)
    for frame in range(2):
        points, calibration, objects = load_frame(frame, tmp_path)
        assert points.shape[0] > 10000 and objects
        assert abs(float(points[:, 2].median()) + SENSOR_HEIGHT) < 0.05  # mostly ground
        boxes = boxes_in_lidar(objects, calibration)
        for obj, box in zip(objects, boxes):
            x, y, z, length, width, height, yaw = box.tolist()
            d = points[:, :3] - torch.tensor([x, y, z])
            c, s = math.cos(-yaw), math.sin(-yaw)
            u, v = c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]
            margin = 0.1
            inside = (
                (u.abs() <= length / 2 + margin)
                & (v.abs() <= width / 2 + margin)
                & (d[:, 2].abs() <= height / 2 + margin)
            )
            assert int(inside.sum()) > 0, obj  # every labelled object was seen
    again = tmp_path / "again"
    generate_scenes(again, 2, seed=1, workers=2)  # each scene has its own random stream
    assert (again / "training" / "velodyne" / "000000.bin").read_bytes() == (
        tmp_path / "training" / "velodyne" / "000000.bin"
    ).read_bytes()
    assert (again / "training" / "label_2" / "000001.txt").read_text() == (
        tmp_path / "training" / "label_2" / "000001.txt"
    ).read_text()
    with pytest.raises(ValueError, match="no sizes for truck"):
        generate_scenes(tmp_path, 1, objects={"truck": (1, 1)})
