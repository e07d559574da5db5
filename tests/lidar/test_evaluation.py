import math

import pytest

from structnets.lidar.evaluation import evaluate_detections, evaluate_label_dirs, format_table
from structnets.lidar.kitti import KittiObject, load_frame, write_labels


def _label(name, x, score=None, occluded=0, top=100.0, bottom=200.0):
    return KittiObject(name, 0.0, occluded, 0.0, (0.0, top, 10.0, bottom), (1.5, 1.6, 4.0), (0.0, 1.0, x), 0.0, score)


def test_average_precision_protocol(data_dir):
    _, calibration, _ = load_frame(0, data_dir / "kitti_sample")
    truth = [_label("Car", 10.0), _label("Car", 20.0), _label("Van", 30.0), _label("Car", 40.0, top=190.0)]
    perfect = [_label("Car", 10.0, 0.9), _label("Car", 20.0, 0.8)]
    ap = evaluate_detections([(truth, perfect, calibration)], classes=("Car",))
    # the 10-pixel-tall car counts in no setting: found or not, AP is 1
    assert ap["Car"]["bev"] == {"easy": 1.0, "moderate": 1.0, "hard": 1.0}
    # a detection of the van, or of the tiny car, is ignored, not a false positive
    more = perfect + [_label("Car", 30.0, 0.95), _label("Car", 40.0, 0.99, top=190.0)]
    assert evaluate_detections([(truth, more, calibration)], classes=("Car",))["Car"]["3d"]["moderate"] == 1.0
    # a real false positive on top: precision 1/2 at recall 1/2, 2/3 at recall 1; the
    # interpolated precision (the best at this recall or more) is 2/3 everywhere
    wrong = perfect + [_label("Car", 60.0, 0.99)]
    expected = 2 / 3
    assert evaluate_detections([(truth, wrong, calibration)], classes=("Car",))["Car"]["bev"]["easy"] == pytest.approx(
        expected
    )
    # occlusion 2 counts only as hard; no pedestrians: NaN, not zero
    occluded = [_label("Car", 10.0, occluded=2)]
    result = evaluate_detections([(occluded, [], calibration)], classes=("Car", "Pedestrian"))
    assert math.isnan(result["Car"]["bev"]["easy"]) and result["Car"]["bev"]["hard"] == 0.0
    assert math.isnan(result["Pedestrian"]["3d"]["moderate"])
    with pytest.raises(ValueError, match="need scores"):
        evaluate_detections([(truth, truth, calibration)])


def test_label_folders_give_the_same_ap_and_a_missing_file_is_named(data_dir, tmp_path):
    import shutil

    _, calibration, _ = load_frame(0, data_dir / "kitti_sample")
    truth = [_label("Car", 10.0), _label("Car", 20.0)]
    found = [_label("Car", 10.0, 0.9), _label("Car", 60.0, 0.95)]
    for folder, objects in (("truth", truth), ("found", found)):
        write_labels(tmp_path / folder / "000000.txt", objects)
    (tmp_path / "calib").mkdir()
    shutil.copy(data_dir / "kitti_sample" / "training" / "calib" / "000000.txt", tmp_path / "calib")
    ap = evaluate_label_dirs(tmp_path / "truth", tmp_path / "found", tmp_path / "calib", classes=("Car",))
    assert ap == evaluate_detections([(truth, found, calibration)], classes=("Car",))
    assert 0 < ap["Car"]["bev"]["easy"] < 1
    write_labels(tmp_path / "truth" / "000001.txt", truth)
    with pytest.raises(FileNotFoundError, match="no detections for frame.s. 000001"):
        evaluate_label_dirs(tmp_path / "truth", tmp_path / "found", tmp_path / "calib")


def test_table_has_a_row_per_class_and_view():
    table = format_table({"Car": {"bev": {"easy": 0.5, "moderate": 0.25}, "3d": {"hard": math.nan}}}).splitlines()
    assert table[0].split() == ["class", "view", "easy", "moderate", "hard"]
    assert table[1].split() == ["Car", "bev", "0.500", "0.250", "nan"]
    assert table[2].split() == ["Car", "3d", "nan", "nan", "nan"]
