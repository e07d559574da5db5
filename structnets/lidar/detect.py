"""Point-GNN detection on KITTI-format data: generate scenes, train, evaluate, predict.

``structnets detect generate --out DATA --scenes N`` writes synthetic ray-cast scenes
(:mod:`structnets.lidar.scenes`); ``train --data DATA --out RUN`` fits
:class:`structnets.models.PointGNN` on per-vertex classes and boxes
(:mod:`structnets.lidar.targets`) with the engine (:func:`structnets.train.engine.fit`),
holding out the last tenth of the frames to keep the best epoch's weights; ``evaluate
--model RUN --data DATA --out DIR`` writes ``metrics.json`` (AP|R40 per class, in bird's-eye
view and 3D, easy/moderate/hard: :mod:`structnets.lidar.evaluation`), the detections as
KITTI label files and a bird's-eye-view picture; ``predict`` writes the label files and
pictures for frames without labels (or with them, drawn for comparison).

Scans are cropped to the camera's field of view, as KITTI labels only what the camera sees
(:mod:`structnets.lidar.frames`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..models.pointgnn import PointGNN, PointGNNConfig
from ..train.checkpoint import RunDirectory, atomic_write, load_model, open_run
from ..train.config import add_arguments, from_args, from_dict
from ..train.distributed import shard
from ..train.engine import LRSchedule, TrainConfig, fit, seed_everything
from .evaluation import IOU_THRESHOLDS, evaluate_detections, format_table
from .frames import Frame, GraphConfig, PackedFrames, frame_names, load_frames
from .kitti import write_labels
from .plots import draw_bev, figure_bytes, plot_history, save_figure
from .postprocess import Detections, Merge, decode_detections, select_boxes
from .targets import MEAN_SIZES, BoxCoder, detection_loss

__all__ = [
    "TASK",
    "DetectConfig",
    "DetectOptions",
    "train",
    "load_detector",
    "detect",
    "evaluate",
    "predict",
    "register",
]

TASK = "detect"


@dataclasses.dataclass(frozen=True)
class DetectConfig:
    """Point-GNN's sizes, its graph and its training (the graph's settings are the paper's for cars).

    Attributes:
        state_size: size of each vertex's state.
        layers: graph layers (T in the paper).
        encoder: hidden sizes of the MLP that encodes each vertex's raw points.
        classes: the object classes learnt (each needs a mean size: Car, Pedestrian, Cyclist).
        box_weight: weight of the box-regression loss beside the classification loss.
        warmup_fraction: learning-rate warm-up as a share of the run (of its steps, or of
            max-seconds when the clock ends it first), used when warmup-steps is 0.
        workers: processes building graphs.
        graph: the graph of each scan.
        train: the engine's settings.
    """

    state_size: int = 64
    layers: int = 3
    encoder: tuple[int, ...] = (32, 64)
    classes: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
    box_weight: float = 2.0
    warmup_fraction: float = 0.05
    workers: int = 1
    graph: GraphConfig = dataclasses.field(default_factory=GraphConfig)
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            epochs=20,
            batch_size=4,
            lr=2e-3,
            schedule=LRSchedule.COSINE,
            lr_by_clock=True,
            weight_decay=1e-4,
            clip_grad_norm=10.0,
        )
    )

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in MEAN_SIZES]
        if unknown:
            raise ValueError(f"--classes: no mean size for {', '.join(unknown)}; known: {', '.join(MEAN_SIZES)}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"--warmup-fraction must lie in [0, 1), got {self.warmup_fraction}")

    def model_config(self) -> PointGNNConfig:
        return PointGNNConfig(
            state_size=self.state_size, layers=self.layers, num_classes=len(self.classes) + 1, encoder=self.encoder
        )


@dataclasses.dataclass(frozen=True)
class DetectOptions:
    """How a trained detector runs on frames.

    Attributes:
        merge: per class, Point-GNN's box merging with occlusion-aware scores (merge) or plain NMS (nms).
        threshold: class probability at which a vertex proposes its box.
        iou_threshold: bird's-eye-view overlap above which candidate boxes merge (or suppress each other).
        device: torch device to run the network on (cpu, cuda, ...).
        workers: processes building graphs.
        progress: show progress bars.
    """

    merge: Merge = Merge.MERGE
    threshold: float = 0.3
    iou_threshold: float = 0.1
    device: str = "cpu"
    workers: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        # Both are compared with probabilities or overlaps: NaN would silently keep nothing.
        for flag, value in (("--threshold", self.threshold), ("--iou-threshold", self.iou_threshold)):
            if not 0 <= value <= 1:
                raise ValueError(f"{flag} must lie in [0, 1], got {value}")


def _held_out_loss(model: PointGNN, frames: PackedFrames, config: DetectConfig) -> dict[str, float]:
    """The loss and its parts over the held-out frames (the engine calls it under no_grad, in eval mode)."""
    device = next(model.parameters()).device
    totals = {"val_loss": 0.0, "val_classification": 0.0, "val_regression": 0.0}
    for chosen in torch.arange(len(frames)).split(config.train.batch_size):
        batch = frames.batch(chosen).to(device)
        logits, boxes = model(batch.points, batch)
        loss, parts = detection_loss(logits, boxes, batch.labels, batch.codes, config.box_weight)
        for key, value in (("val_loss", loss), *((f"val_{k}", v) for k, v in parts.items())):
            totals[key] += float(value) * len(chosen)
    return {key: value / len(frames) for key, value in totals.items()}


def _with_warmup(config: DetectConfig, steps_per_epoch: int) -> DetectConfig:
    """``config`` with ``warmup_fraction`` of the run's steps as the engine's ``warmup_steps``
    (unless those are given); by the clock, the engine warms up over the same share of ``max_seconds``."""
    if config.train.warmup_steps or not config.warmup_fraction:
        return config
    steps = min(config.train.steps or math.inf, (config.train.epochs or math.inf) * steps_per_epoch)
    warmup = max(1, round(config.warmup_fraction * steps))
    return dataclasses.replace(config, train=dataclasses.replace(config.train, warmup_steps=warmup))


def train(config: DetectConfig, data: Path, out: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """Trains on the frames of ``data``, each of which must have its label file (a missing
    one is an error, not a scene without objects); the last tenth is held out and picks the best epoch.

    Writes the run directory ``out`` (``model.pt``, ``metrics.json``, ``timing.json``,
    ``loss.png``) and returns ``(metrics, timing)``.
    """
    RunDirectory.check_target(out)
    frames = load_frames(Path(data), config.graph, progress=config.train.progress, workers=config.workers)
    if len(frames) < 2:
        raise ValueError(f"{data}: {len(frames)} frame(s); training needs at least 2 (one held out)")
    held = max(1, len(frames) // 10)
    coder = BoxCoder(config.classes)
    training, held_out = PackedFrames(frames[:-held], coder), PackedFrames(frames[-held:], coder)
    del frames  # the packed copies are what training reads
    size, seed, device = config.train.batch_size, config.train.seed, torch.device(config.train.device)
    steps_per_epoch = math.ceil(len(shard(len(training), 0, seed)) / size)
    config = _with_warmup(config, steps_per_epoch)

    def batches(epoch: int):
        # Each frame is mirrored with probability 1/2, drawn per epoch (so a resumed run draws the same).
        flips = torch.rand(len(training), generator=torch.Generator().manual_seed(seed * 100_003 + epoch + 1)) < 0.5
        for chosen in shard(len(training), epoch, seed).split(size):
            yield training.batch(chosen, mirror=flips[chosen]).to(device)

    def loss_fn(net: torch.nn.Module, batch) -> torch.Tensor:
        logits, boxes = net(batch.points, batch)
        return detection_loss(logits, boxes, batch.labels, batch.codes, config.box_weight)[0]

    seed_everything(seed)
    model = PointGNN(config.model_config()).to(device)
    run = RunDirectory.start(out, task=TASK)
    result = fit(
        model,
        loss_fn,
        batches,
        config.train,
        validate=lambda net: _held_out_loss(net, held_out, config),
        optimizer=lambda p: torch.optim.AdamW(p, lr=config.train.lr, weight_decay=config.train.weight_decay),
        steps_per_epoch=steps_per_epoch,
        run_dir=out,
        description=TASK,
    )
    best = result.best or {}
    metrics = {
        "train_frames": len(training),
        "held_out_frames": len(held_out),
        "epochs": result.epochs,
        "steps": result.steps,
        "stop": result.stop.value,
        "best_epoch": best.get("epoch"),
        "best_valid_loss": best.get("val_loss"),
        "history": result.history,
    }
    timing = {**result.timing(), "seconds": result.seconds}
    run.write_json("metrics.json", metrics)
    run.write_json("timing.json", timing)
    run.save_model(result.model, task_config=config)
    run.write_bytes("loss.png", figure_bytes(plot_history(result.history), dpi=120))
    run.finish()
    return metrics, timing


def load_detector(run: Path, device: str = "cpu") -> tuple[PointGNN, DetectConfig]:
    """The model and settings of a finished ``train`` run (refusing an incomplete run or another task's)."""
    path = open_run(run, task=TASK)
    model, checkpoint = load_model(path, task=TASK, map_location=device)
    return model, from_dict(DetectConfig, checkpoint.task_config)


@torch.no_grad()
def detect(model: PointGNN, frame: Frame, config: DetectConfig, options: DetectOptions = DetectOptions()) -> Detections:
    """One frame's detections: candidate boxes of confident vertices, then per class either
    Point-GNN's merging and occlusion-aware scoring (``Merge.MERGE``) or plain NMS."""
    batch = PackedFrames([frame]).batch().to(next(model.parameters()).device)
    logits, codes = model(batch.points, batch)
    coder = BoxCoder(config.classes)
    candidates = decode_detections(logits.cpu(), codes.cpu(), batch.vertices.cpu(), coder, threshold=options.threshold)
    return select_boxes(candidates, frame.points, options.merge, options.iou_threshold)


def _detections(run: Path, data: Path, options: DetectOptions, names: list[str] | None, split: str, *, labelled: bool):
    """``(config, frames, iterator of (frame, detections))``: the detector runs as the iterator is read."""
    model, config = load_detector(run, options.device)
    frames = load_frames(Path(data), config.graph, names, split, options.progress, options.workers, labelled=labelled)
    bar = tqdm(frames, desc=TASK, unit="frame", disable=not options.progress)
    return config, frames, ((frame, detect(model, frame, config, options)) for frame in bar)


def evaluate(
    run: Path, data: Path, out: Path, options: DetectOptions = DetectOptions(), *, limit: int | None = None
) -> dict[str, Any]:
    """AP of the model on the frames of ``data/training``, each of which must have its label
    file (a missing one is an error, not a scene without objects); ``limit`` takes the first
    frames only. Writes ``metrics.json`` (results only), ``timing.json``, the detections under
    ``detections/`` and ``bev.png`` of the first frame."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    out = RunDirectory.check_target(out)
    names = frame_names(Path(data), "training")[:limit]
    config, frames, found = _detections(run, data, options, names, "training", labelled=True)
    pairs, started = [], time.perf_counter()
    for k, (frame, detections) in enumerate(found):
        labels = detections.labels(frame.calibration)
        write_labels(out / "detections" / f"{frame.name}.txt", labels)
        pairs.append((frame.objects, labels, frame.calibration))
        if k == 0:
            save_figure(out / "bev.png", draw_bev(frame, detections))
    seconds = time.perf_counter() - started
    metrics = {
        "frames": len(frames),
        "merge": options.merge.value,
        "score_threshold": options.threshold,
        "ap_r40": evaluate_detections(pairs, classes=config.classes),
        "iou_thresholds": {c: IOU_THRESHOLDS[c] for c in config.classes},
    }
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write(out / "timing.json", json.dumps({"seconds_per_frame": seconds / len(frames)}, indent=2) + "\n")
    return metrics


def predict(
    run: Path,
    data: Path,
    out: Path,
    options: DetectOptions = DetectOptions(),
    *,
    split: str = "training",
    pictures: int = 3,
) -> list[Path]:
    """KITTI label files (result format) for every scan of ``data/split``, and pictures of the
    first ``pictures``. Labels are not needed (only the scans and calibrations are read); where
    a frame has them, its pictures draw them beside the detections."""
    if pictures < 0:
        raise ValueError(f"--pictures must be at least 0, got {pictures}")
    out = RunDirectory.check_target(out)
    _, _, found = _detections(run, data, options, None, split, labelled=False)
    written = []
    for k, (frame, detections) in enumerate(found):
        path = out / f"{frame.name}.txt"
        write_labels(path, detections.labels(frame.calibration))
        written.append(path)
        if k < pictures:
            save_figure(out / f"{frame.name}.png", draw_bev(frame, detections))
    return written


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "detect", aliases=["lidar"], help="Point-GNN 3D object detection on KITTI-format LiDAR data"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = actions.add_parser("generate", help="write synthetic ray-cast LiDAR scenes in KITTI's format")
    gen.add_argument("--out", required=True, type=Path, help="folder for the scenes (KITTI's layout, training/)")
    gen.add_argument("--scenes", type=int, default=500, help="how many scenes (default: 500)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the scenes' random streams (default: 0)")
    gen.add_argument("--workers", type=int, default=1, help="processes writing scenes (default: 1)")
    gen.set_defaults(func=_generate_cli)
    tr = actions.add_parser("train", help="train Point-GNN on DATA/training (the last tenth held out)")
    tr.add_argument(
        "--data", required=True, type=Path, help="a KITTI-layout folder (training/velodyne, calib, label_2)"
    )
    tr.add_argument("--out", required=True, type=Path, help="run directory: model.pt, metrics.json, loss.png")
    add_arguments(tr, DetectConfig)
    tr.set_defaults(func=_train_cli)
    for name, text in (
        ("evaluate", "AP per class (BEV and 3D) on DATA/training's labels: metrics.json, detections, bev.png"),
        ("predict", "KITTI label files of detections (with scores) and bird's-eye-view pictures"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("--model", required=True, type=Path, help="a run directory written by train")
        sub.add_argument("--data", required=True, type=Path, help="a KITTI-layout folder")
        sub.add_argument("--out", required=True, type=Path, help="folder for the outputs")
        add_arguments(sub, DetectOptions)
        if name == "evaluate":
            sub.add_argument("--limit", type=int, help="only the first N frames (default: all)")
            sub.set_defaults(func=_evaluate_cli)
        else:
            sub.add_argument("--split", default="training", help="the folder of DATA to read (default: training)")
            sub.add_argument("--pictures", type=int, default=3, help="pictures of the first N frames (default: 3)")
            sub.set_defaults(func=_predict_cli)
    return parser


def _generate_cli(args: argparse.Namespace) -> int:
    from .scenes import generate_scenes

    if args.scenes < 1:
        raise ValueError(f"--scenes must be at least 1, got {args.scenes}")
    folder = generate_scenes(args.out, args.scenes, seed=args.seed, workers=args.workers)
    print(f"wrote {args.scenes} scenes under {folder}")
    return 0


def _train_cli(args: argparse.Namespace) -> int:
    metrics, timing = train(from_args(DetectConfig, args), args.data, args.out)
    print(
        f"{metrics['epochs']} epochs in {timing['seconds']:.0f} s; best held-out loss {metrics['best_valid_loss']:.4f}"
    )
    print(f"wrote {args.out}/model.pt, metrics.json, timing.json, loss.png")
    return 0


def _evaluate_cli(args: argparse.Namespace) -> int:
    metrics = evaluate(args.model, args.data, args.out, from_args(DetectOptions, args), limit=args.limit)
    print(format_table(metrics["ap_r40"]))
    print(f"wrote {args.out}/metrics.json, timing.json, detections/, bev.png")
    return 0


def _predict_cli(args: argparse.Namespace) -> int:
    written = predict(
        args.model, args.data, args.out, from_args(DetectOptions, args), split=args.split, pictures=args.pictures
    )
    print(f"wrote {len(written)} label files under {args.out}")
    return 0
