import dataclasses
import json
import math
import shutil

import pytest
import torch

from structnets.cli import main
from structnets.lidar.detect import DetectConfig, _with_warmup
from structnets.lidar.frames import PackedFrames, load_frames
from structnets.lidar.kitti import read_labels
from structnets.lidar.scenes import generate_scenes
from structnets.lidar.targets import BoxCoder, detection_loss
from structnets.models.pointgnn import PointGNN
from structnets.train import engine
from structnets.train.checkpoint import RunDirectory

TINY = ["--state-size", "16", "--encoder", "8", "16", "--layers", "2"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    generate_scenes(root, 6, seed=3)
    return root


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    """A finished run: one epoch of a tiny model on the scenes."""
    out = tmp_path_factory.mktemp("trained") / "run"
    train = ["detect", "train", "--data", str(scenes), "--out", str(out), "--epochs", "1", "--no-progress", *TINY]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: see the one_thread fixture
    try:
        assert main(train) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_a_small_model_fits_one_scene(scenes):
    torch.manual_seed(0)
    config = DetectConfig(state_size=32, encoder=(16, 32))
    batch = PackedFrames(load_frames(scenes, config.graph, ["000001"]), BoxCoder()).batch()
    model = PointGNN(config.model_config())
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    labels, codes = batch.labels, batch.codes
    assert (labels > 0).sum() >= 5
    losses = []
    for _ in range(60):
        logits, boxes = model(batch.points, batch)
        loss, _ = detection_loss(logits, boxes, labels, codes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    counted = labels >= 0
    right = logits.argmax(1)[counted] == labels[counted]
    background = (labels[counted] == 0).float().mean()
    assert right.float().mean() > 0.9 and right.float().mean() > background  # beats calling it all background


def test_generate_train_evaluate_predict(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["detect", "generate", "--out", str(data), "--scenes", "5", "--seed", "4"]) == 0
    train = ["detect", "train", "--data", str(data), "--out", str(run), "--epochs", "2", "--no-progress", *TINY]
    assert main([*train, "--ema-decay", "0.5"]) == 0  # the weights kept are the averaged ones
    assert (run / "model.pt").is_file() and (run / "loss.png").is_file()
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    history = json.loads((run / "metrics.json").read_text())["history"]
    validations = [h for h in history if "val_loss" in h]
    assert len(validations) == 2 and [h["epoch"] for h in validations] == [1, 2]
    assert all(h["train_loss"] > 0 for h in history if "train_loss" in h)
    out = tmp_path / "eval"
    evaluate = ["detect", "evaluate", "--model", str(run), "--data", str(data), "--out", str(out), "--no-progress"]
    assert main([*evaluate, "--threshold", "0.0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["ap_r40"]) == {"Car", "Pedestrian", "Cyclist"}
    assert set(metrics["ap_r40"]["Car"]) == {"bev", "3d"}
    assert set(metrics["ap_r40"]["Car"]["bev"]) == {"easy", "moderate", "hard"}
    assert metrics["merge"] == "merge" and json.loads((out / "timing.json").read_text())["seconds_per_frame"] > 0
    assert (out / "bev.png").stat().st_size > 10000
    assert len(list((out / "detections").glob("*.txt"))) == 5
    assert "moderate" in capsys.readouterr().out
    pred = tmp_path / "pred"
    predict = ["detect", "predict", "--model", str(run), "--data", str(data), "--out", str(pred), "--no-progress"]
    assert main([*predict, "--merge", "nms", "--threshold", "0.0"]) == 0
    objects = [o for f in sorted(pred.glob("*.txt")) for o in read_labels(f)]
    assert objects and all(o.score is not None for o in objects)
    assert len(list(pred.glob("*.png"))) == 3
    with pytest.raises(SystemExit):  # an unknown choice is refused by the parser
        main([*predict, "--merge", "soft"])
    assert "'soft' is not one of merge, nms" in capsys.readouterr().err


def test_same_seed_same_metrics_and_a_resumed_run_continues(tmp_path, scenes, one_thread):
    common = ["detect", "train", "--data", str(scenes), "--no-progress", "--warmup-fraction", "0", *TINY]
    common += ["--schedule", "constant"]  # so that one epoch + one more is the same run as two
    for name in ("a", "b"):
        assert main([*common, "--out", str(tmp_path / name), "--epochs", "2"]) == 0
    first = (tmp_path / "a" / "metrics.json").read_bytes()
    assert first == (tmp_path / "b" / "metrics.json").read_bytes()
    resumed = tmp_path / "resumed"
    assert main([*common, "--out", str(resumed), "--epochs", "1"]) == 0
    one = json.loads((resumed / "metrics.json").read_text())
    assert main([*common, "--out", str(resumed), "--epochs", "2", "--resume", str(resumed)]) == 0
    two = json.loads((resumed / "metrics.json").read_text())
    assert (one["epochs"], one["steps"], two["epochs"], two["steps"]) == (1, 2, 2, 4)
    assert two["history"][: len(one["history"])] == one["history"]

    def validations(metrics):
        return [h for h in metrics["history"] if "val_loss" in h]

    assert validations(two) == validations(json.loads(first))  # the same as the run never interrupted


def test_evaluate_and_predict_refuse_unfinished_and_foreign_runs(tmp_path, scenes, capsys):
    RunDirectory.start(tmp_path / "unfinished", task="detect")  # training was interrupted
    other = RunDirectory.start(tmp_path / "other", task="palindrome")
    other.finish()
    for action in ("evaluate", "predict"):
        for run, reason in (("unfinished", "the run is incomplete"), ("other", "a run of task 'palindrome'")):
            path = tmp_path / run
            args = ["detect", action, "--model", str(path), "--data", str(scenes), "--out", str(tmp_path / "o")]
            assert main(args) == 2
            error = capsys.readouterr().err.strip().splitlines()
            assert len(error) == 1 and str(path) in error[0] and reason in error[0]
    assert not (tmp_path / "o").exists()


def test_bad_inputs_are_named(tmp_path, scenes, capsys):
    import shutil

    data = tmp_path / "bad"
    shutil.copytree(scenes, data)
    scan = data / "training" / "velodyne" / "000002.bin"
    scan.write_bytes(scan.read_bytes()[:-6])
    assert main(["detect", "train", "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "000002.bin" in capsys.readouterr().err
    scan.write_bytes(b"")
    assert main(["detect", "train", "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "000002.bin: empty scan" in capsys.readouterr().err
    assert main(["detect", "train", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "velodyne not found" in capsys.readouterr().err
    assert main(["detect", "train", "--data", str(scenes), "--out", str(tmp_path / "r"), "--classes", "Tram"]) == 2
    assert "no mean size for Tram" in capsys.readouterr().err


def _todays_learning_rate(lr: float, done: float, seconds: float, max_seconds: float | None) -> float:
    """detect's schedule before the engine: 5% warm-up, then cosine, over the steps or the clock."""
    if max_seconds is not None:
        done = max(done, seconds / max_seconds)
    done = min(done, 1.0)
    return lr * min(1.0, done / 0.05 + 0.01) * 0.5 * (1 + math.cos(math.pi * done))


@pytest.mark.parametrize("max_seconds", [None, 30.0])
def test_the_engine_runs_todays_schedule(monkeypatch, max_seconds):
    """Warm-up over 5% of the run, then cosine to zero, over the steps or, when the clock
    ends the run first, over max_seconds (here a fake clock: 0.1 s a step, 300 of 1000 steps)."""
    steps_per_epoch, epochs, tick = 50, 20, 0.1
    train = dataclasses.replace(DetectConfig().train, epochs=epochs, max_seconds=max_seconds, log_every=1)
    config = _with_warmup(DetectConfig(train=dataclasses.replace(train, progress=False)), steps_per_epoch)
    assert config.train.warmup_steps == 50
    now = [0.0]
    monkeypatch.setattr(engine.time, "perf_counter", lambda: now[0])
    model, x = torch.nn.Linear(2, 1), torch.randn(4, 2)

    def loss_fn(net, batch):
        now[0] += tick
        return net(x).pow(2).mean()

    result = engine.fit(model, loss_fn, lambda epoch: range(steps_per_epoch), config.train)
    assert result.steps == (1000 if max_seconds is None else 300)
    lr = config.train.lr
    gaps = [
        abs(h["lr"] - _todays_learning_rate(lr, h["step"] / 1000, h["step"] * tick, max_seconds)) / lr
        for h in result.train_history
    ]
    # by the clock the same to within a warm-up step; by the steps the cosine starts after the warm-up, not with it
    largest, mean = (0.05, 0.03) if max_seconds is None else (0.025, 0.005)
    assert max(gaps) < largest and sum(gaps) / len(gaps) < mean


def _runs(data, tmp_path, run):
    """The train and evaluate commands on ``data``."""
    train = ["detect", "train", "--data", str(data), "--out", str(tmp_path / "r"), "--no-progress", *TINY]
    evaluate = ["detect", "evaluate", "--model", str(run), "--data", str(data), "--out", str(tmp_path / "e")]
    return train, [*evaluate, "--no-progress"]


def test_missing_label_folder_is_an_error(tmp_path, scenes, run, capsys, one_thread):
    data = tmp_path / "data"
    shutil.copytree(scenes, data)
    labels = data / "training" / "label_2"
    (labels / "000003.txt").unlink()
    for args in _runs(data, tmp_path, run):  # a missing file is not a scene without objects
        assert main(args) == 2
        error = capsys.readouterr().err.strip()
        assert error == (
            f"structnets detect: error: no label file at {labels / '000003.txt'}; an empty file is a scene without objects"
        )
    shutil.rmtree(labels)
    for args in _runs(data, tmp_path, run):
        assert main(args) == 2
        assert f"error: {labels} not found: labelled frames need a label file per scan" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "e").exists()
    # predict needs only the scans and calibrations: KITTI's testing frames have no labels
    (data / "training").rename(data / "testing")
    for scan in sorted((data / "testing" / "velodyne").glob("*.bin"))[2:]:
        scan.unlink()  # two frames are enough
    predict = ["detect", "predict", "--model", str(run), "--data", str(data), "--out", str(tmp_path / "p")]
    assert main([*predict, "--split", "testing", "--no-progress", "--merge", "nms", "--pictures", "1"]) == 0
    assert [p.name for p in sorted((tmp_path / "p").iterdir())] == ["000000.png", "000000.txt", "000001.txt"]


def test_label_with_nan_size_is_refused_by_train_and_evaluate(tmp_path, scenes, run, capsys):
    data = tmp_path / "data"
    shutil.copytree(scenes, data)
    label = data / "training" / "label_2" / "000002.txt"
    lines = label.read_text().splitlines()
    fields = lines[1].split()
    fields[8] = "nan"  # the height
    label.write_text("\n".join([lines[0], " ".join(fields), *lines[2:]]) + "\n")
    for args in _runs(data, tmp_path, run):
        assert main(args) == 2
        assert f"error: {label}, line 2: height is 'nan'; values must be finite" in capsys.readouterr().err


def test_limit_zero_is_refused(tmp_path, scenes, run, capsys):
    _, evaluate = _runs(scenes, tmp_path, run)
    for limit in ("0", "-2"):
        assert main([*evaluate, "--limit", limit]) == 2
        assert capsys.readouterr().err.strip() == f"structnets detect: error: --limit must be at least 1, got {limit}"
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("action", ["evaluate", "predict"])
def test_threshold_nan_is_refused(tmp_path, scenes, run, capsys, action):
    args = ["detect", action, "--model", str(run), "--data", str(scenes), "--out", str(tmp_path / "o")]
    for flag, value in [("--threshold", v) for v in ("nan", "inf", "-inf", "-0.1", "1.5")] + [
        ("--iou-threshold", v) for v in ("nan", "1.01")
    ]:
        assert main([*args, f"{flag}={value}"]) == 2  # '=': argparse takes '-inf' for a flag otherwise
        error = capsys.readouterr().err.strip()
        assert error == f"structnets detect: error: {flag} must lie in [0, 1], got {float(value)}"
    assert not (tmp_path / "o").exists()


def test_negative_pictures_are_refused(tmp_path, scenes, run, capsys):
    args = ["detect", "predict", "--model", str(run), "--data", str(scenes), "--out", str(tmp_path / "o")]
    assert main([*args, "--pictures", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "structnets detect: error: --pictures must be at least 0, got -1"
    assert not (tmp_path / "o").exists()
