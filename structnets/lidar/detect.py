"""Point-GNN detection on KITTI-format data: generate scenes, train, evaluate, predict.

``structnets detect generate --out DATA --scenes N`` writes synthetic ray-cast scenes
(:mod:`structnets.lidar_scenes`); ``train --data DATA --out RUN`` fits
:class:`structnets.models.PointGNN` on per-vertex classes and boxes
(:mod:`structnets.detection`), holding out the last tenth of the frames to keep the best
weights; ``evaluate --model RUN --data DATA --out DIR`` writes ``metrics.json`` (AP|R40
per class, in bird's-eye view and 3D, easy/moderate/hard), the detections as KITTI label
files and a bird's-eye-view picture; ``predict`` writes the label files and pictures for
frames without labels (or with them, drawn for comparison).

Scans are cropped to the camera's field of view, as KITTI labels only what the camera sees.
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

from ..graphs.pointgraph import PointGraph, build_point_graph
from ..models.pointgnn import PointGNN, PointGNNConfig
from ..train.checkpoint import clip_gradients, load_checkpoint, save_checkpoint
from .detection import (
    IOU_THRESHOLDS,
    MEAN_SIZES,
    BoxCoder,
    Detections,
    assign_targets,
    decode_detections,
    detection_loss,
    evaluate_detections,
    merge_boxes,
    nms,
)
from .kitti import (
    Calibration,
    KittiObject,
    boxes_in_lidar,
    in_camera_view,
    labels_from_boxes,
    load_frame,
    write_labels,
)

__all__ = [
    "DetectConfig",
    "Frame",
    "load_frames",
    "train",
    "load_model",
    "detect",
    "to_labels",
    "evaluate",
    "predict",
    "draw_bev",
    "format_table",
    "register",
]


@dataclasses.dataclass(frozen=True)
class DetectConfig:
    """Model, graph and training settings; the graph's are the paper's for cars."""

    state_size: int = 64
    layers: int = 3
    encoder: tuple[int, ...] = (32, 64)
    voxel_size: float = 0.8
    radius: float = 4.0
    feature_radius: float = 1.0
    classes: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
    epochs: int = 20
    batch_size: int = 4
    lr: float = 2e-3
    box_weight: float = 2.0
    max_seconds: float | None = None
    workers: int = 1  # processes building graphs
    seed: int = 0
    device: str = "cpu"


@dataclasses.dataclass
class Frame:
    """One scan, cropped to the camera's view, with its graph and labels."""

    name: str
    points: torch.Tensor
    graph: PointGraph
    calibration: Calibration
    objects: list[KittiObject]
    boxes: torch.Tensor  # [M, 7] LiDAR frame


def _frame_names(root: Path, split: str) -> list[str]:
    folder = root / split / "velodyne"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: expected KITTI's layout ({split}/velodyne, calib, label_2)")
    names = sorted(p.stem for p in folder.glob("*.bin"))
    if not names:
        raise FileNotFoundError(f"no .bin scans in {folder}")
    return names


def _read_frame(root: Path, name: str, split: str, config: DetectConfig) -> tuple:
    """One frame as numpy arrays and label objects (what worker processes send back:
    tensors would travel through shared-memory file descriptors, one per tensor)."""
    points, calibration, objects = load_frame(name, root, split=split)
    points = points[in_camera_view(points, calibration)]
    if points.shape[0] == 0:
        raise ValueError(f"{root}/{split}/velodyne/{name}.bin: no points in the camera's field of view")
    graph = build_point_graph(
        points, voxel_size=config.voxel_size, radius=config.radius, feature_radius=config.feature_radius
    )
    arrays = [t.numpy() for t in (points, graph.vertices, graph.edge_index, graph.point_index)]
    return name, arrays, calibration, objects


def _frame(read: tuple) -> Frame:
    name, arrays, calibration, objects = read
    points, vertices, edges, pairs = (torch.from_numpy(a) for a in arrays)
    return Frame(
        name, points, PointGraph(vertices, edges, pairs), calibration, objects, boxes_in_lidar(objects, calibration)
    )


def load_frames(
    root: Path,
    config: DetectConfig,
    names: list[str] | None = None,
    split: str = "training",
    progress: bool = False,
    workers: int = 1,
) -> list[Frame]:
    """Reads each frame (all of ``split`` by default), crops it to the camera's view and
    builds its graph, in ``workers`` processes."""
    names = names or _frame_names(root, split)
    bar = tqdm(total=len(names), desc="graphs", unit="frame", disable=not progress)
    frames = []
    if workers > 1 and len(names) > 1:
        import concurrent.futures
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        # One torch thread per worker: the workers are the parallelism.
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)
        ) as pool:
            for read in pool.map(
                _read_frame, [root] * len(names), names, [split] * len(names), [config] * len(names), chunksize=8
            ):
                frames.append(_frame(read))
                bar.update()
    else:
        for name in names:
            frames.append(_frame(_read_frame(root, name, split, config)))
            bar.update()
    bar.close()
    return frames


def _mirror(frame: Frame) -> Frame:
    """The scene reflected in the x-z plane (y to -y, yaw to -yaw). Voxels and radius
    neighbourhoods reflect with it, so the graph's indices stay valid."""
    flip = torch.tensor([1.0, -1.0, 1.0, 1.0])
    graph = PointGraph(frame.graph.vertices * flip, frame.graph.edge_index, frame.graph.point_index)
    boxes = frame.boxes.clone()
    boxes[:, 1], boxes[:, 6] = -boxes[:, 1], -boxes[:, 6]
    return dataclasses.replace(frame, points=frame.points * flip, graph=graph, boxes=boxes)


def _batch(frames: list[Frame], device: torch.device) -> tuple[torch.Tensor, PointGraph]:
    """Several scans as one graph of disjoint parts (indices offset per scan)."""
    points, vertices, edges, pairs = [], [], [], []
    n_points = n_vertices = 0
    for f in frames:
        points.append(f.points)
        vertices.append(f.graph.vertices)
        edges.append(f.graph.edge_index + n_vertices)
        pairs.append(f.graph.point_index + torch.tensor([[n_points], [n_vertices]]))
        n_points += f.points.shape[0]
        n_vertices += f.graph.vertices.shape[0]
    graph = PointGraph(torch.cat(vertices).to(device), torch.cat(edges, 1).to(device), torch.cat(pairs, 1).to(device))
    return torch.cat(points).to(device), graph


def _targets(frames: list[Frame], coder: BoxCoder, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    labels, codes = [], []
    for f in frames:
        label, code = assign_targets(f.graph.vertices, f.boxes, [o.type for o in f.objects], coder)
        labels.append(label)
        codes.append(code)
    return torch.cat(labels).to(device), torch.cat(codes).to(device)


def _model_config(config: DetectConfig) -> PointGNNConfig:
    return PointGNNConfig(
        state_size=config.state_size,
        layers=config.layers,
        num_classes=len(config.classes) + 1,
        encoder=config.encoder,
    )


def _validation_loss(model: PointGNN, frames: list[Frame], config: DetectConfig, device: torch.device) -> float:
    coder = BoxCoder(config.classes)
    model.eval()
    total = 0.0
    with torch.no_grad():
        for k in range(0, len(frames), config.batch_size):
            chunk = frames[k : k + config.batch_size]
            points, graph = _batch(chunk, device)
            labels, codes = _targets(chunk, coder, device)
            logits, boxes = model(points, graph)
            total += float(detection_loss(logits, boxes, labels, codes, config.box_weight)[0]) * len(chunk)
    model.train()
    return total / len(frames)


def _learning_rate(config: DetectConfig, done: float, seconds: float) -> float:
    """A short linear warm-up, then cosine decay to zero over the run: over the steps, or
    over ``max_seconds`` when the clock would end the run first."""
    if config.max_seconds is not None:
        done = max(done, seconds / config.max_seconds)
    done = min(done, 1.0)
    return config.lr * min(1.0, done / 0.05 + 0.01) * 0.5 * (1 + math.cos(math.pi * done))


def train(config: DetectConfig, data: Path, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Trains on the frames of ``data``; the last tenth is held out and picks the best epoch."""
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    frames = load_frames(Path(data), config, progress=progress, workers=config.workers)
    if len(frames) < 2:
        raise ValueError(f"{data}: {len(frames)} frame(s); training needs at least 2 (one held out)")
    held = max(1, len(frames) // 10)
    train_frames, valid_frames = frames[:-held], frames[-held:]
    coder = BoxCoder(config.classes)
    model = PointGNN(_model_config(config)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=_learning_rate(config, 0.0, 0.0), weight_decay=1e-4)
    total_steps = config.epochs * math.ceil(len(train_frames) / config.batch_size)
    step = 0
    generator = torch.Generator().manual_seed(config.seed)
    history, best, started = [], math.inf, time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(range(1, config.epochs + 1), desc="detect", unit="epoch", disable=not progress)
    for epoch in bar:
        order = torch.randperm(len(train_frames), generator=generator).tolist()
        flips = torch.rand(len(train_frames), generator=generator) < 0.5
        running = {"loss": 0.0, "classification": 0.0, "regression": 0.0}
        seen = 0
        for k in range(0, len(order), config.batch_size):
            chunk = [
                _mirror(train_frames[i]) if flips[i] else train_frames[i] for i in order[k : k + config.batch_size]
            ]
            points, graph = _batch(chunk, device)
            labels, codes = _targets(chunk, coder, device)
            logits, boxes = model(points, graph)
            loss, parts = detection_loss(logits, boxes, labels, codes, config.box_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(model, 10.0)
            optimizer.step()
            step += 1
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(config, step / total_steps, time.perf_counter() - started)
            seen += len(chunk)
            running["loss"] += loss.item() * len(chunk)
            for key, value in parts.items():
                running[key] += value * len(chunk)
            if config.max_seconds is not None and time.perf_counter() - started > config.max_seconds:
                break
        valid = _validation_loss(model, valid_frames, config, device)
        entry = {"epoch": epoch, **{k: v / seen for k, v in running.items()}, "valid_loss": valid}
        entry["seconds"] = time.perf_counter() - started
        history.append(entry)
        bar.set_postfix(loss=f"{entry['loss']:.3f}", valid=f"{valid:.3f}")
        if valid < best:
            best = valid
            save_checkpoint(out_dir / "model.pt", model, dataclasses.asdict(config), epoch=epoch)
        if config.max_seconds is not None and entry["seconds"] > config.max_seconds:
            break  # the learning rate has reached zero
    metrics = {
        "epochs": len(history),
        "seconds": time.perf_counter() - started,
        "train_frames": len(train_frames),
        "held_out_frames": len(valid_frames),
        "best_valid_loss": best,
        "history": history,
    }
    (out_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _plot_history(history, out_dir / "loss.png")
    return metrics


def _plot_history(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["loss"] for h in history], label="train")
    ax.plot(epochs, [h["valid_loss"] for h in history], label="held out")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_model(run: Path, device: str = "cpu") -> tuple[PointGNN, DetectConfig]:
    """The model and settings saved by :func:`train` (``weights_only`` loading)."""
    checkpoint = load_checkpoint(Path(run) / "model.pt", map_location=device)
    raw = checkpoint["config"]
    config = DetectConfig(**{**raw, "encoder": tuple(raw["encoder"]), "classes": tuple(raw["classes"])})
    model = PointGNN(_model_config(config))
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), config


@torch.no_grad()
def detect(
    model: PointGNN,
    frame: Frame,
    config: DetectConfig,
    *,
    threshold: float = 0.3,
    merge: str = "merge",
    iou_threshold: float = 0.1,
) -> Detections:
    """One frame's detections: candidate boxes of confident vertices, then per class either
    Point-GNN's merging and occlusion-aware scoring (``merge="merge"``) or plain NMS."""
    if merge not in ("merge", "nms"):
        raise ValueError(f"merge must be 'merge' or 'nms', got {merge!r}")
    device = next(model.parameters()).device
    points, graph = _batch([frame], device)
    logits, codes = model(points, graph)
    boxes, scores, names = [], [], []
    for name, candidates, candidate_scores in decode_detections(
        logits.cpu(), codes.cpu(), graph.vertices.cpu(), BoxCoder(config.classes), threshold=threshold
    ):
        if merge == "merge":
            kept, kept_scores = merge_boxes(candidates, candidate_scores, frame.points, iou_threshold)
        else:
            keep = nms(candidates, candidate_scores, iou_threshold)
            kept, kept_scores = candidates[keep].double(), candidate_scores[keep].double()
        boxes.append(kept)
        scores.append(kept_scores)
        names += [name] * len(kept)
    return Detections(torch.cat(boxes).float(), torch.cat(scores).float(), names)


def to_labels(detections: Detections, calibration: Calibration) -> list[KittiObject]:
    """KITTI result lines: truncation and occlusion -1 (unknown), the score last."""
    return labels_from_boxes(
        detections.names, detections.boxes, calibration, truncated=-1.0, occluded=-1, scores=detections.scores
    )


def draw_bev(frame: Frame, detections: Detections | None, path: Path, title: str = "") -> None:
    """Bird's-eye view: the road in grey, other points coloured by height, true boxes in
    green, detections in red with their class initial and score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .boxes import box_corners_bev

    fig, ax = plt.subplots(figsize=(7, 7))
    p = frame.points
    ground = p[:, 2] < p[:, 2].quantile(0.5) + 0.15  # about the lowest half: the road
    ax.scatter(p[ground, 1], p[ground, 0], s=0.1, c="0.8")
    above = p[~ground]
    ax.scatter(above[:, 1], above[:, 0], s=0.5, c=above[:, 2], cmap="viridis")

    def outline(boxes: torch.Tensor, colour: str, labels: list[str] | None = None) -> None:
        for k, corners in enumerate(box_corners_bev(boxes.double())):
            closed = torch.cat([corners, corners[:1]])
            ax.plot(closed[:, 1], closed[:, 0], color=colour, lw=1.2)
            if labels:
                ax.text(float(corners[:, 1].max()), float(corners[:, 0].max()), labels[k], color=colour, fontsize=6)

    if frame.boxes.shape[0]:
        outline(frame.boxes, "limegreen")
    if detections is not None and len(detections):
        outline(detections.boxes, "red", [f"{n[0]} {s:.2f}" for n, s in zip(detections.names, detections.scores)])
    ax.set_xlabel("y (m, left)")
    ax.set_ylabel("x (m, forward)")
    ax.invert_xaxis()
    ax.set_aspect("equal")
    ax.set_title(title or f"frame {frame.name}: true (green), detected (red)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def evaluate(
    run: Path,
    data: Path,
    out_dir: Path,
    *,
    merge: str = "merge",
    threshold: float = 0.3,
    limit: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """AP of the model on the labelled frames of ``data``; writes ``metrics.json``, the
    detections under ``detections/`` and ``bev.png`` of the first frame."""
    model, config = load_model(run, device)
    names = _frame_names(Path(data), "training")[:limit]
    frames = load_frames(Path(data), config, names, progress=progress, workers=workers)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "detections").mkdir(exist_ok=True)
    pairs, started = [], time.perf_counter()
    for k, frame in enumerate(tqdm(frames, desc="detect", unit="frame", disable=not progress)):
        found = detect(model, frame, config, threshold=threshold, merge=merge)
        labels = to_labels(found, frame.calibration)
        write_labels(out_dir / "detections" / f"{frame.name}.txt", labels)
        pairs.append((frame.objects, labels, frame.calibration))
        if k == 0:
            draw_bev(frame, found, out_dir / "bev.png")
    seconds = time.perf_counter() - started
    ap = evaluate_detections(pairs, classes=config.classes)
    metrics = {
        "frames": len(frames),
        "merge": merge,
        "score_threshold": threshold,
        "seconds_per_frame": seconds / len(frames),
        "ap_r40": ap,
        "iou_thresholds": {c: IOU_THRESHOLDS[c] for c in config.classes},
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def predict(
    run: Path,
    data: Path,
    out_dir: Path,
    *,
    split: str = "training",
    merge: str = "merge",
    threshold: float = 0.3,
    pictures: int = 3,
    device: str = "cpu",
    workers: int = 1,
) -> list[Path]:
    """KITTI label files (result format) for every scan of ``data/split``, and pictures."""
    model, config = load_model(run, device)
    frames = load_frames(Path(data), config, split=split, workers=workers)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for k, frame in enumerate(frames):
        found = detect(model, frame, config, threshold=threshold, merge=merge)
        path = out_dir / f"{frame.name}.txt"
        write_labels(path, to_labels(found, frame.calibration))
        written.append(path)
        if k < pictures:
            draw_bev(frame, found, out_dir / f"{frame.name}.png")
    return written


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


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("detect", help="Point-GNN 3D object detection on KITTI-format LiDAR data")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = actions.add_parser("generate", help="write synthetic ray-cast LiDAR scenes in KITTI's format")
    gen.add_argument("--out", required=True, type=Path)
    gen.add_argument("--scenes", type=int, default=500)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--workers", type=int, default=1, help="processes writing scenes")
    gen.set_defaults(func=_generate_cli)
    tr = actions.add_parser("train", help="train Point-GNN on DATA/training (the last tenth held out)")
    tr.add_argument("--data", required=True, type=Path)
    tr.add_argument("--out", required=True, type=Path)
    defaults = DetectConfig()
    for field in dataclasses.fields(DetectConfig):
        value = getattr(defaults, field.name)
        flag = f"--{field.name.replace('_', '-')}"
        if isinstance(value, tuple):
            tr.add_argument(flag, nargs="+", type=type(value[0]), default=value)
        elif field.name != "max_seconds":
            tr.add_argument(flag, type=type(value), default=value)
    tr.add_argument("--max-seconds", type=float, help="stop after the epoch that passes this budget")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_train_cli)
    for name, text in (
        ("evaluate", "AP per class (BEV and 3D) on DATA/training's labels: metrics.json, detections, bev.png"),
        ("predict", "KITTI label files of detections (with scores) and bird's-eye-view pictures"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("--model", required=True, type=Path, help="a folder written by train")
        sub.add_argument("--data", required=True, type=Path, help="a KITTI-layout folder")
        sub.add_argument("--out", required=True, type=Path)
        sub.add_argument("--merge", choices=("merge", "nms"), default="merge")
        sub.add_argument("--threshold", type=float, default=0.3, help="vertex score for proposing a box")
        sub.add_argument("--device", default="cpu")
        sub.add_argument("--workers", type=int, default=1, help="processes building graphs")
        if name == "evaluate":
            sub.add_argument("--limit", type=int, help="only the first N frames")
            sub.set_defaults(func=_evaluate_cli)
        else:
            sub.add_argument("--split", default="training")
            sub.add_argument("--pictures", type=int, default=3)
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
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(DetectConfig)}
    values["encoder"], values["classes"] = tuple(values["encoder"]), tuple(values["classes"])
    unknown = [c for c in values["classes"] if c not in MEAN_SIZES]
    if unknown:
        raise ValueError(f"--classes: no mean size for {', '.join(unknown)}; known: {', '.join(MEAN_SIZES)}")
    metrics = train(DetectConfig(**values), args.data, args.out, progress=not args.no_progress)
    print(
        f"{metrics['epochs']} epochs in {metrics['seconds']:.0f} s; best held-out loss {metrics['best_valid_loss']:.4f}"
    )
    print(f"wrote {args.out}/model.pt, train_metrics.json, loss.png")
    return 0


def _evaluate_cli(args: argparse.Namespace) -> int:
    metrics = evaluate(
        args.model,
        args.data,
        args.out,
        merge=args.merge,
        threshold=args.threshold,
        limit=args.limit,
        device=args.device,
    )
    print(format_table(metrics["ap_r40"]))
    print(f"wrote {args.out}/metrics.json, detections/, bev.png")
    return 0


def _predict_cli(args: argparse.Namespace) -> int:
    written = predict(
        args.model,
        args.data,
        args.out,
        split=args.split,
        merge=args.merge,
        threshold=args.threshold,
        pictures=args.pictures,
        device=args.device,
        workers=args.workers,
    )
    print(f"wrote {len(written)} label files under {args.out}")
    return 0
