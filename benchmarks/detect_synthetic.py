"""Point-GNN AP on held-out synthetic LiDAR scenes: one run from generation to KITTI's AP|R40.

Generates training and test scenes (different seeds) with :mod:`structnets.lidar.scenes`,
trains :class:`structnets.models.PointGNN` (``structnets detect train``), and evaluates the
test scenes with the paper's box merging and with plain NMS. Prints AP per class in
bird's-eye view and 3D (IoU 0.7 for cars, 0.5 for pedestrians and cyclists) beside the
issue's target (car BEV AP at 0.7 of at least 0.7). The scenes are simpler than KITTI's
(boxes on a plane, with clutter), so these figures say the pipeline works, not how it
ranks on the real benchmark.

    python benchmarks/detect_synthetic.py --train-scenes 800 --test-scenes 200 --epochs 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from core_speed import _cpu_name  # noqa: E402  (benchmarks run as scripts from this folder)

from structnets.lidar.detect import DetectConfig, DetectOptions, evaluate, train
from structnets.lidar.evaluation import format_table
from structnets.lidar.postprocess import Merge
from structnets.lidar.scenes import generate_scenes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/detect-bench"))
    parser.add_argument("--train-scenes", type=int, default=800)
    parser.add_argument("--test-scenes", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--state-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-seconds", type=float)
    parser.add_argument("--ema-decay", type=float, help="keep an exponential moving average of the weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1, help="processes generating scenes and building graphs")
    parser.add_argument("--tag", default="run", help="names the run's folders under --work")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "detect_synthetic.json")
    args = parser.parse_args()
    started = time.perf_counter()
    train_data, test_data = args.work / "train", args.work / "test"
    if not (train_data / "training" / "velodyne").is_dir():
        generate_scenes(train_data, args.train_scenes, seed=0, workers=args.workers)
    if not (test_data / "training" / "velodyne").is_dir():
        generate_scenes(test_data, args.test_scenes, seed=1, workers=args.workers)
    defaults = DetectConfig()
    config = DetectConfig(
        state_size=args.state_size,
        encoder=(32, args.state_size),
        workers=args.workers,
        train=dataclasses.replace(
            defaults.train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            max_seconds=args.max_seconds,
            device=args.device,
            ema_decay=args.ema_decay,
        ),
    )
    run = args.work / args.tag
    trained, timing = train(config, train_data, run)
    results, seconds_per_frame = {}, {}
    for merge in Merge:
        out = args.work / f"{args.tag}-eval-{merge.value}"
        options = DetectOptions(merge=merge, device=args.device, workers=args.workers)
        metrics = evaluate(run, test_data, out, options)
        results[merge.value] = metrics
        seconds_per_frame[merge.value] = json.loads((out / "timing.json").read_text())["seconds_per_frame"]
        print(f"\n{merge.value}: AP|R40 on {metrics['frames']} held-out scenes")
        print(format_table(metrics["ap_r40"]))
    car = results["merge"]["ap_r40"]["Car"]["bev"]["moderate"]
    machine = torch.cuda.get_device_name() if args.device.startswith("cuda") else _cpu_name()
    print(
        f"\ncar BEV AP@0.7 (moderate, merging): ours {car:.3f}; target >= 0.7. Trained {trained['epochs']} epochs in {timing['seconds']:.0f} s on {machine}."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": machine,
                "torch": torch.__version__,
                "config": {k: v for k, v in vars(args).items() if k not in ("work", "out")},
                "train": {**{k: v for k, v in trained.items() if k != "history"}, **timing},
                "ap_r40": {m: r["ap_r40"] for m, r in results.items()},
                "seconds_per_frame": seconds_per_frame,
                "target": {"car_bev_ap_0.7": 0.7},
                "total_seconds": time.perf_counter() - started,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
