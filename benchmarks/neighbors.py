"""Neighbour search: time and memory from 10^3 to 10^6 points, against scipy.

Random points in the unit square or cube, with the radius chosen for about
``--neighbours`` (default 10) neighbours per point. Each case runs in its own process,
with ``OMP_NUM_THREADS`` and torch's threads set to its worker count, so that its peak
memory (maximum resident set size, minus that of a process that only imported the
libraries) is its own. Methods:

* ``kdtree``: ``structnets.radius_graph(pos, r, backend="kdtree")``, called as torch_cluster's
  (its default ``max_num_neighbors=32``, both directions, sorted, as a tensor);
* ``kdtree-all``: the same with ``max_num_neighbors=None`` (no cap: what structnets' own
  callers pass; differs from ``kdtree`` only where a point has more than 32 neighbours);
* ``cells``: ``backend="cells"`` (the torch cell list, the GPU path), on CPU;
* ``scipy``: scipy's ``cKDTree(points).query_pairs(r, output_type="ndarray")`` alone (one
  direction, unsorted), the anchor;
* ``brute``: ``torch.cdist``, up to 20,000 points;
* ``knn`` / ``scipy-knn``: ``structnets.knn_graph(pos, 16, num_workers=w)`` against
  ``cKDTree(points).query(points, k=17, workers=w)``.

Each case runs once to warm up, then ``--repeats`` times; the JSON keeps the minimum (the
least disturbed by other work on the machine) and the median::

    OMP_NUM_THREADS=1 python benchmarks/neighbors.py [--dims 2 3] [--sizes 1000 ... 1000000]
        [--workers 1 2] [--methods kdtree kdtree-all cells scipy brute knn scipy-knn] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

CASE = r"""
import json, math, resource, sys, time
import torch
import structnets
from scipy.spatial import cKDTree
n, dim, method, device, workers, neighbours, repeats = (
    int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
)
torch.set_num_threads(workers)
torch.manual_seed(0)
pos = torch.rand(n, dim, device=device)
unit_ball = math.pi if dim == 2 else 4 / 3 * math.pi
r = (neighbours / n / unit_ball) ** (1 / dim)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
def run():
    if method in ("kdtree", "cells"):
        return structnets.radius_graph(pos, r, num_workers=workers, backend=method).shape[1]
    if method == "kdtree-all":
        return structnets.radius_graph(pos, r, max_num_neighbors=None, backend="kdtree").shape[1]
    if method == "scipy":
        return 2 * len(cKDTree(pos.cpu().numpy()).query_pairs(r, output_type="ndarray"))
    if method == "knn":
        return structnets.knn_graph(pos, 16, num_workers=workers).shape[1]
    if method == "scipy-knn":
        points = pos.cpu().numpy()
        return cKDTree(points).query(points, k=17, workers=workers)[1][:, 1:].size
    d = torch.cdist(pos, pos)
    return int((d < r).sum()) - n
run()  # warm-up
if device == "cuda":
    torch.cuda.synchronize()
times = []
for _ in range(repeats):
    start = time.perf_counter()
    pairs = run()
    if device == "cuda":
        torch.cuda.synchronize()
    times.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": min(times), "median_seconds": sorted(times)[len(times) // 2], "pairs": pairs,
                  "radius": r, "extra_mb": (peak - base) / 1024}))
"""

RADIUS_METHODS = ("kdtree", "kdtree-all", "cells", "scipy", "brute")
KNN_METHODS = ("knn", "scipy-knn")


def _seconds(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 200000, 1000000])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--methods", nargs="+", default=list(RADIUS_METHODS + KNN_METHODS))
    parser.add_argument("--neighbours", type=float, default=10.0, help="expected neighbours per point")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "neighbors.json")
    args = parser.parse_args()
    results = []
    print(
        f"{'dim':>3} {'points':>9} {'workers':>7} {'method':>9} {'min s':>9} {'median s':>9} {'pairs':>10} {'extra MB':>9}"
    )
    for dim in args.dims:
        for n in args.sizes:
            for workers in args.workers:
                for method in args.methods:
                    if method == "brute" and n > 20000:
                        continue
                    env = dict(os.environ, OMP_NUM_THREADS=str(workers), MKL_NUM_THREADS=str(workers))
                    command = [sys.executable, "-c", CASE, str(n), str(dim), method, args.device, str(workers)]
                    done = subprocess.run(
                        command + [str(args.neighbours), str(args.repeats)], capture_output=True, text=True, env=env
                    )
                    if done.returncode:
                        print(f"{dim:>3} {n:>9} {workers:>7} {method:>9} failed: {done.stderr[-300:]}")
                        continue
                    row = {"dim": dim, "points": n, "workers": workers, "method": method}
                    row.update(json.loads(done.stdout.strip().splitlines()[-1]))
                    results.append(row)
                    print(
                        f"{dim:>3} {n:>9} {workers:>7} {method:>9} {row['seconds']:9.4f} {row['median_seconds']:9.4f} "
                        f"{row['pairs']:>10} {row['extra_mb']:9.1f}"
                    )
    summary = _summary(results)
    print()
    print("\n".join(summary))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()}
    args.out.write_text(
        json.dumps(
            {
                "device": args.device,
                "machine": machine,
                "neighbours_per_point": args.neighbours,
                "repeats": args.repeats,
                "statistic": "min",
                "cases": results,
                "table": summary,
            },
            indent=2,
        )
        + "\n"
    )


def _summary(results: list[dict]) -> list[str]:
    """A markdown table: structnets against scipy, per dim, size and worker count (minimum times)."""
    by = {(r["dim"], r["points"], r["workers"], r["method"]): r for r in results}
    keys = sorted({(r["dim"], r["points"], r["workers"]) for r in results})
    lines = [
        "| dim | points | workers | `radius_graph` kdtree | no cap | cells | scipy `query_pairs` | ratio | brute | "
        "`knn_graph` k=16 | scipy `query` k=17 | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for dim, n, workers in keys:
        row = {m: by.get((dim, n, workers, m)) for m in RADIUS_METHODS + KNN_METHODS}
        text = {m: _seconds(row[m]["seconds"]) if row[m] else "" for m in row}
        ratio = {
            a: f"{row[a]['seconds'] / row[b]['seconds']:.2f}x" if row[a] and row[b] else ""
            for a, b in (("kdtree", "scipy"), ("knn", "scipy-knn"))
        }
        lines.append(
            f"| {dim} | {n:,} | {workers} | {text['kdtree']} | {text['kdtree-all']} | {text['cells']} | {text['scipy']} | "
            f"{ratio['kdtree']} | {text['brute']} | {text['knn']} | {text['scipy-knn']} | {ratio['knn']} |"
        )
    return lines


if __name__ == "__main__":
    main()
