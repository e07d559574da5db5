"""Point-GNN time per frame on the six real KITTI frames: graph construction and network.

Per frame: voxel downsampling (0.8 m), the vertex radius graph (4 m) and the raw-point to
vertex association (1 m), the paper's settings for cars, on the full 360-degree scans.
The network is the paper's size (states of 300, T = 3 layers), untrained, in inference
mode; its time does not depend on the weights. The paper reports 121 ms of graph
construction per frame (643 ms in all) on a GTX 1070, on scans cropped to the camera's
field of view.

    python benchmarks/kitti_graph.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from core_speed import _cpu_name  # noqa: E402  (benchmarks run as scripts from this folder)

from structnets.data import data_dir
from structnets.kitti import load_frame
from structnets.models import PointGNN
from structnets.pointgraph import build_point_graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "kitti_graph.json")
    args = parser.parse_args()
    root = data_dir(args.data_dir) / "kitti_sample"
    rows = []
    torch.manual_seed(0)
    model = PointGNN().eval()
    for frame in range(6):
        points, _, _ = load_frame(frame, root)
        build_point_graph(points)  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            graph = build_point_graph(points)
            times.append(time.perf_counter() - start)
        with torch.no_grad():
            model(points, graph)  # warm-up
            network = []
            for _ in range(3):
                start = time.perf_counter()
                model(points, graph)
                network.append(time.perf_counter() - start)
        rows.append(
            {
                "network_seconds": statistics.median(network),
                "frame": frame,
                "points": points.shape[0],
                "vertices": graph.vertices.shape[0],
                "edges": graph.edge_index.shape[1],
                "point_vertex_pairs": graph.point_index.shape[1],
                "seconds": statistics.median(times),
            }
        )
        r = rows[-1]
        print(
            f"frame {frame}: {r['points']} points -> {r['vertices']} vertices, {r['edges']} edges, "
            f"{r['point_vertex_pairs']} point-vertex pairs: graph {1000 * r['seconds']:.0f} ms, "
            f"network {1000 * r['network_seconds']:.0f} ms"
        )
    mean = statistics.mean(r["seconds"] for r in rows)
    network = statistics.mean(r["network_seconds"] for r in rows)
    print(
        f"mean per frame on {_cpu_name()}: graph {1000 * mean:.0f} ms, network {1000 * network:.0f} ms "
        "(paper: 121 ms + 522 ms on a GTX 1070, FOV-cropped scans)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": _cpu_name(), "frames": rows, "mean_seconds": mean, "mean_network_seconds": network}, indent=2
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
