"""Point-GNN time per frame on the six real KITTI frames: graph construction and network.

Per frame: voxel downsampling (0.8 m), the vertex radius graph (4 m) and the raw-point to
vertex association (1 m), the paper's settings for cars; then the network at the paper's
size (states of 300, T = 3 layers), untrained, in inference mode (its time does not depend
on the weights). Two inputs: the scan cropped to the camera's field of view, as in the
paper (and as ``structnets detect`` does), and the full 360-degree scan. The paper reports
643 ms per frame on a GTX 1070, 121 ms of it graph construction.

    python benchmarks/kitti_graph.py --data-dir ../shared/data [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from core_speed import _cpu_name  # noqa: E402  (benchmarks run as scripts from this folder)

from structnets.graphs.pointgraph import build_point_graph
from structnets.lidar.kitti import in_camera_view, load_frame
from structnets.models import PointGNN
from structnets.train.data import data_dir


def _timed(fn, device: torch.device, repeats: int = 3):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=6, help="the first N of the six frames")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    out = args.out or Path(__file__).parent / "results" / f"kitti_graph_{device.type}.json"
    root = data_dir(args.data_dir) / "kitti_sample"
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    torch.manual_seed(0)
    model = PointGNN().to(device).eval()
    rows = []
    for frame in range(args.frames):
        scan, calibration, _ = load_frame(frame, root)
        for view, points in (("camera", scan[in_camera_view(scan, calibration)]), ("full", scan)):
            points = points.to(device)
            graph_seconds, graph = _timed(lambda points=points: build_point_graph(points), device)
            with torch.no_grad():
                network_seconds, _ = _timed(lambda points=points, graph=graph: model(points, graph), device)
            row = {
                "frame": frame,
                "view": view,
                "points": points.shape[0],
                "vertices": graph.vertices.shape[0],
                "edges": graph.edge_index.shape[1],
                "point_vertex_pairs": graph.point_index.shape[1],
                "graph_seconds": graph_seconds,
                "network_seconds": network_seconds,
            }
            rows.append(row)
            print(
                f"frame {frame} ({view}): {row['points']} points -> {row['vertices']} vertices, {row['edges']} edges: "
                f"graph {1000 * graph_seconds:.0f} ms, network {1000 * network_seconds:.0f} ms"
            )
    summary = {}
    for view in ("camera", "full"):
        mine = [r for r in rows if r["view"] == view]
        summary[view] = {
            "graph_ms": 1000 * statistics.mean(r["graph_seconds"] for r in mine),
            "network_ms": 1000 * statistics.mean(r["network_seconds"] for r in mine),
        }
        print(
            f"mean per frame, {view} view, on {machine}: graph {summary[view]['graph_ms']:.0f} ms + "
            f"network {summary[view]['network_ms']:.0f} ms "
            "(paper: 121 ms + 522 ms = 643 ms on a GTX 1070, camera view)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"machine": machine, "torch": torch.__version__, "device": str(device), "frames": rows, "mean": summary},
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
