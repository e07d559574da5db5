import math
import re
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from structnets.lidar.boxes import points_in_boxes
from structnets.lidar.kitti import (
    CLASSES,
    Calibration,
    KittiObject,
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


LABEL = "Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59"
CALIBRATION = """P0: 1 0 0 0 0 1 0 0 0 0 1 0
P2: 721.5 0 609.6 44.9 0 721.5 172.9 0.2 0 0 1 0.003
R0_rect: 1 0 0 0 1 0 0 0 1
Tr_velo_to_cam: 0 -1 0 0 0 0 -1 -0.08 1 0 0 -0.27
"""


def _refused(path, text, match):
    """``path`` holding ``text`` is refused by its reader (labels or calibration) with a message matching ``match``."""
    path.write_text(text)
    reader = read_calibration if path.name.startswith("calib") else read_labels
    with pytest.raises(ValueError, match=match):
        reader(path)


def _label(**changes):
    """:data:`LABEL` with fields replaced by index."""
    fields = LABEL.split()
    for index, value in changes.items():
        fields[int(index[1:])] = value
    return " ".join(fields)


def test_label_with_nan_size_is_refused(tmp_path):
    path = tmp_path / "label.txt"
    _refused(path, f"{LABEL}\n{_label(f9='nan')}\n", r"label.txt, line 2: width is 'nan'; values must be finite")
    _refused(path, _label(f8="-inf"), r"label.txt, line 1: height is '-inf'; values must be finite")
    _refused(path, _label(f10="0"), r"label.txt, line 1: box size \(h, w, l\) 1.65 1.67 0 is not positive")
    _refused(path, f"\n\n{_label(f8='-1.65')}", r"label.txt, line 3: box size \(h, w, l\) -1.65 1.67 3.64 is not")
    # KITTI's DontCare regions are 2D only: their size of -1 is what the benchmark writes
    dontcare = "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10"
    path.write_text(f"{LABEL}\n\n{dontcare}\n")
    assert [o.dimensions for o in read_labels(path)] == [(1.65, 1.67, 3.64), (-1.0, -1.0, -1.0)]


def test_label_with_non_finite_or_non_numeric_values_is_refused(tmp_path):
    path = tmp_path / "label_2.txt"
    _refused(path, _label(f12="NaN"), r"label_2.txt, line 1: y is 'NaN'; values must be finite")
    _refused(path, f"{LABEL} -inf", r"label_2.txt, line 1: score is '-inf'; values must be finite")
    _refused(path, f"{LABEL} 1e999", r"label_2.txt, line 1: score is '1e999'; values must be finite")
    _refused(path, f"\n{LABEL} high", r"label_2.txt, line 2: score is 'high', not a number")
    _refused(path, _label(f2="1.5"), r"label_2.txt, line 1: occluded is '1.5', not a whole number")
    path.write_bytes(LABEL.encode() + b" \xff")
    with pytest.raises(ValueError, match=rf"label_2.txt: not UTF-8 text \(byte {len(LABEL) + 1}: invalid start byte"):
        read_labels(path)


def test_calibration_with_non_finite_values_is_refused(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text(CALIBRATION)
    assert read_calibration(path).P2[0, 0] == 721.5
    for token in ("nan", "inf", "-Infinity", "1e400"):
        _refused(
            path,
            CALIBRATION.replace("721.5 0 609.6", f"721.5 {token} 609.6"),
            rf"calib.txt, line 2: a value of 'P2' is '{token}'; values must be finite",
        )
    _refused(path, CALIBRATION.replace("P0: 1", "P0: one"), r"calib.txt, line 1: a value of 'P0' is 'one', not a number")
    _refused(
        path,
        CALIBRATION.replace("R0_rect: 1 0 0", "R0_rect: 0 0 0"),
        r"calib.txt: R0_rect is singular \(determinant 0\)",
    )
    _refused(
        path,
        CALIBRATION.replace("0 -1 0 0 0 0 -1", "0 0 0 0 0 0 -1"),
        r"calib.txt: the rotation of Tr_velo_to_cam is singular",
    )
    _refused(
        path,
        CALIBRATION + "P2: 1 2 3 4 5 6 7 8 9 10 11 12\n",
        r"calib.txt, line 5: a second 'P2' \(the first is on line 2\)",
    )
    _refused(
        path,
        CALIBRATION.replace("P0:", "P0"),
        r"calib.txt, line 1: expected 'NAME: values', got 'P0 1 0 0 0 0 1 0 0 0 0 1 0'",
    )


def test_scan_with_nan_is_refused(tmp_path):
    points = np.zeros((5, 4), dtype="<f4")
    points[3, 1] = np.nan
    points.tofile(tmp_path / "000007.bin")
    with pytest.raises(ValueError, match=r"000007.bin: NaN or infinite values at point\(s\) \[3\]"):
        read_velodyne(tmp_path / "000007.bin")


def test_missing_label_folder_is_an_error(tmp_path, root):
    shutil.copytree(root / "training" / "velodyne", tmp_path / "training" / "velodyne")
    shutil.copytree(root / "training" / "calib", tmp_path / "training" / "calib")
    labels = tmp_path / "training" / "label_2"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{labels} not found: labelled frames need a label file")):
        load_frame(1, tmp_path)
    labels.mkdir()
    (labels / "000000.txt").write_text("")  # an empty file: a scene without objects
    assert load_frame(0, tmp_path)[2] == []
    with pytest.raises(FileNotFoundError, match=re.escape(f"no label file at {labels / '000001.txt'}; an empty file")):
        load_frame(1, tmp_path)
    # unlabelled frames (KITTI's testing split) are read when asked for
    points, _, objects = load_frame(1, tmp_path, labelled=False)
    assert points.shape[0] == 120268 and objects == []


# Fuzzing the label and calibration readers: every input either parses to what was written
# or is a ValueError that names the file; no other exception gets out.

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
finite = st.floats(allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=0.0, exclude_min=True, allow_infinity=False)
NON_FINITE = ("nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e999", "-1e400")


def _is_number(token):
    try:
        float(token)
    except ValueError:
        return False
    return True


garbage = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters="\ufeff"),
    min_size=1,
    max_size=6,
).filter(lambda t: t.split() == [t] and not _is_number(t) and t not in CLASSES)
number = finite.map(repr)


@st.composite
def label_line(draw):
    """``(tokens, the object they describe)`` of a valid label line."""
    kind = draw(st.sampled_from(CLASSES))
    occluded = draw(st.integers(-1, 3))
    values = [draw(finite) for _ in range(6)]  # truncated, alpha, 2D box
    sizes = [draw(finite if kind == "DontCare" else positive) for _ in range(3)]
    place = [draw(finite) for _ in range(4)]
    score = draw(st.none() | finite)
    obj = KittiObject(
        kind, values[0], occluded, values[1], tuple(values[2:6]), tuple(sizes), tuple(place[:3]), place[3], score
    )
    tokens = [kind, repr(values[0]), draw(st.sampled_from([str(occluded), f"{occluded}.0"]))]
    tokens += [repr(v) for v in (*values[1:6], *sizes, *place)] + ([] if score is None else [repr(score)])
    return tokens, obj


@st.composite
def mutated_label_line(draw):
    """``(tokens, object or None where the mutation makes the line invalid)``."""
    tokens, obj = draw(label_line())
    count = len(tokens)
    mutation = draw(st.sampled_from(["none", "drop", "extra", "garbage", "non-finite", "class", "size", "occluded"]))
    if mutation == "drop":  # 1 to 14 fields left
        for _ in range(draw(st.integers(count - 14, count - 1))):
            tokens.pop(draw(st.integers(0, len(tokens) - 1)))
    elif mutation == "extra":  # 17 or more
        for _ in range(draw(st.integers(17 - count, 3))):
            tokens.insert(draw(st.integers(0, len(tokens))), draw(number | garbage))
    elif mutation in ("garbage", "non-finite"):
        token = draw(garbage if mutation == "garbage" else st.sampled_from(NON_FINITE))
        tokens[draw(st.integers(1, count - 1))] = token
    elif mutation == "class":
        tokens[0] = draw(garbage | number | st.sampled_from(["car", "Cars", "DONTCARE"]))
    elif mutation == "size" and obj.type != "DontCare":
        tokens[draw(st.integers(8, 10))] = draw(
            st.sampled_from(["0", "-0.0", "0e5"]) | number.filter(lambda t: float(t) <= 0)
        )
    elif mutation == "occluded":
        tokens[2] = draw(st.sampled_from(["1.5", "0.25", "-0.5", "2.000001"]))
    else:
        return tokens, obj
    return tokens, None


def _write(path, lines, draw):
    """Writes text lines with random spacing, blank lines and line endings; returns each line's number."""
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    out, numbers = [], []
    for tokens in lines:
        out += [draw(st.sampled_from(["", " ", "\t"])) for _ in range(draw(st.integers(0, 1)))]  # blank lines
        separator = draw(st.sampled_from([" ", "  ", "\t", " \t "]))
        out.append(draw(st.sampled_from(["", " "])) + separator.join(tokens) + draw(st.sampled_from(["", " ", "\t"])))
        numbers.append(len(out))
    text = ending.join(out) + draw(st.sampled_from(["", ending]))
    path.write_bytes((draw(st.sampled_from(["", "\ufeff"])) + text).encode())
    return numbers


def _parsed_or_named(reader, path):
    """What ``reader`` makes of ``path``, or the ValueError it raised (which must name the file)."""
    try:
        return reader(path)
    except ValueError as error:
        assert path.name in str(error)
        return error


@FUZZ
@given(data=st.data())
def test_fuzzed_label_lines_parse_to_what_was_written_or_name_the_file_and_line(tmp_path, data):
    clean = data.draw(st.booleans())  # half the files are valid throughout
    lines = data.draw(st.lists(label_line() if clean else mutated_label_line(), max_size=5))
    path = tmp_path / "000042.txt"
    numbers = _write(path, [tokens for tokens, _ in lines], data.draw)
    result = _parsed_or_named(read_labels, path)
    bad = [n for n, (_, obj) in zip(numbers, lines) if obj is None]
    if bad:
        assert isinstance(result, ValueError) and f"000042.txt, line {bad[0]}: " in str(result)
    else:
        assert result == [obj for _, obj in lines]


token = st.sampled_from(CLASSES) | number | garbage | st.sampled_from([*NON_FINITE, "0", "-1", "1.5"])


def _check_labels(text, objects):
    """The objects parsed from ``text`` are its non-blank lines, field by field."""
    rows = [line.split() for line in text.removeprefix("\ufeff").splitlines() if line.split()]
    assert len(rows) == len(objects)
    for fields, obj in zip(rows, objects):
        values = [obj.truncated, obj.occluded, obj.alpha, *obj.bbox, *obj.dimensions, *obj.location, obj.rotation_y]
        assert [obj.type, *values, *([] if obj.score is None else [obj.score])] == [fields[0], *map(float, fields[1:])]
        assert all(map(math.isfinite, values)) and (obj.type == "DontCare" or min(obj.dimensions) > 0)


@FUZZ
@given(
    content=st.text(max_size=300)
    | st.binary(max_size=300)
    | st.lists(st.lists(token, min_size=14, max_size=17).map(" ".join), max_size=4).map("\n".join)
)
def test_random_label_files_parse_or_name_the_file(tmp_path, content):
    path = tmp_path / "label_000007.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = _parsed_or_named(read_labels, path)
    if not isinstance(result, ValueError):
        _check_labels(content.decode("utf-8") if isinstance(content, bytes) else content, result)


MATRICES = {"P0": 12, "P1": 12, "P2": 12, "P3": 12, "R0_rect": 9, "Tr_velo_to_cam": 12, "Tr_imu_to_velo": 12}
REQUIRED = ("P2", "R0_rect", "Tr_velo_to_cam")


@st.composite
def calibration_file(draw):
    """``(lines of (key, tokens), the matrices the file holds, whether it is valid)``."""
    diagonal = st.floats(1.0, 10.0) | st.floats(-10.0, -1.0)
    small = st.floats(-0.1, 0.1)
    found = {}
    for key, size in MATRICES.items():
        if key == "R0_rect" or key == "Tr_velo_to_cam":  # invertible (diagonally dominant) rotations
            width = 3 if key == "R0_rect" else 4
            found[key] = [
                draw(diagonal if k % width == k // width else finite if k % width == 3 else small) for k in range(size)
            ]
        else:
            found[key] = [draw(finite) for _ in range(size)]
    for key in draw(st.lists(st.sampled_from(["Tr_cam_to_road", "extra", "K_02"]), unique=True, max_size=2)):
        found[key] = [draw(finite) for _ in range(draw(st.integers(0, 12)))]
    lines = [[key, [repr(v) for v in values]] for key, values in found.items()]
    lines = draw(st.permutations(lines))
    mutation = draw(
        st.sampled_from(["none", "drop", "extra", "garbage", "non-finite", "colon", "delete", "twice", "zero"])
    )
    index = draw(st.integers(0, len(lines) - 1))
    key, tokens = lines[index]
    required = key in REQUIRED
    if mutation == "drop" and tokens:
        tokens.pop(draw(st.integers(0, len(tokens) - 1)))
    elif mutation == "extra":
        tokens.insert(draw(st.integers(0, len(tokens))), draw(number))
    elif mutation in ("garbage", "non-finite") and tokens:
        tokens[draw(st.integers(0, len(tokens) - 1))] = draw(
            garbage if mutation == "garbage" else st.sampled_from(NON_FINITE)
        )
        required = True  # any line's values must be finite numbers
    elif mutation == "colon":
        lines[index][0] = key + " "  # 'P2 1 2 ...'
        required = True
    elif mutation == "delete":
        del lines[index]
    elif mutation == "twice":
        lines.insert(draw(st.integers(0, len(lines))), [key, list(tokens)])
        required = True
    elif mutation == "zero" and key in ("R0_rect", "Tr_velo_to_cam"):
        lines[index][1] = ["0"] * len(tokens)
    else:
        required = False
    return lines, found, not (mutation != "none" and required)


@FUZZ
@given(data=st.data())
def test_fuzzed_calibrations_parse_to_what_was_written_or_name_the_file(tmp_path, data):
    lines, found, valid = data.draw(calibration_file())
    path = tmp_path / "calib_000042.txt"
    text = [
        key + ("" if key.endswith(" ") else data.draw(st.sampled_from([":", ": ", " :  ", ":\t"]))) + " ".join(tokens)
        for key, tokens in lines
    ]
    _write(path, [[line] for line in text], data.draw)
    result = _parsed_or_named(read_calibration, path)
    if valid:
        assert isinstance(result, Calibration)
        for key, shape in (("P2", (3, 4)), ("R0_rect", (3, 3)), ("Tr_velo_to_cam", (3, 4))):
            assert torch.equal(getattr(result, key), torch.tensor(found[key], dtype=torch.float64).view(shape))
    else:
        assert isinstance(result, ValueError)


@FUZZ
@given(content=st.text(max_size=300) | st.binary(max_size=300))
def test_random_calibration_files_parse_or_name_the_file(tmp_path, content):
    path = tmp_path / "calib_000007.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert isinstance(_parsed_or_named(read_calibration, path), Calibration | ValueError)
