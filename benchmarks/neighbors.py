"""Neighbour search: time and memory from 10^3 to 10^6 points, 2D and 3D.

Random points in the unit square or cube, with the radius chosen for about 10 neighbours
per point. Each case runs in its own process, so that its peak memory (maximum resident
set size, minus that of a process that only imported the libraries) is its own:

* ``structnets.radius_graph(backend="kdtree")``: scipy's cKDTree plus the edge_index;
* ``structnets.radius_graph(backend="cells")``: the torch cell list (the GPU path), on CPU;
* scipy's ``cKDTree.query_pairs`` alone, the issue's anchor (0.25 s at 200,000 3D points);
* brute force (``torch.cdist``), up to 20,000 points.

    python benchmarks/neighbors.py [--sizes 1000 10000 100000 1000000] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CASE = r"""
import json, math, resource, sys, time
import torch
import structnets
from scipy.spatial import cKDTree
n, dim, method, device = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.manual_seed(0)
pos = torch.rand(n, dim, device=device)
volume_per_point = 1.0 / n
unit_ball = math.pi if dim == 2 else 4 / 3 * math.pi
r = (10 * volume_per_point / unit_ball) ** (1 / dim)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
def run():
    if method == "kdtree" or method == "cells":
        return structnets.radius_graph(pos, r, backend=method).shape[1]
    if method == "scipy":
        return 2 * len(cKDTree(pos.cpu().numpy()).query_pairs(r, output_type="ndarray"))
    d = torch.cdist(pos, pos)
    return int((d <= r).sum()) - n
run()  # warm-up
if device == "cuda":
    torch.cuda.synchronize()
times = []
for _ in range(3):
    start = time.perf_counter()
    pairs = run()
    if device == "cuda":
        torch.cuda.synchronize()
    times.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": sorted(times)[1], "pairs": pairs, "extra_mb": (peak - base) / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "neighbors.json")
    args = parser.parse_args()
    results = []
    print(f"{'dim':>3} {'points':>9} {'method':>8} {'seconds':>9} {'pairs':>10} {'extra MB':>9}")
    for dim in (2, 3):
        for n in args.sizes:
            for method in ("kdtree", "cells", "scipy", "brute"):
                if method == "brute" and n > 20000:
                    continue
                done = subprocess.run(
                    [sys.executable, "-c", CASE, str(n), str(dim), method, args.device],
                    capture_output=True,
                    text=True,
                )
                if done.returncode:
                    print(f"{dim:>3} {n:>9} {method:>8} failed: {done.stderr[-300:]}")
                    continue
                row = {"dim": dim, "points": n, "method": method, **json.loads(done.stdout.strip().splitlines()[-1])}
                results.append(row)
                print(f"{dim:>3} {n:>9} {method:>8} {row['seconds']:9.4f} {row['pairs']:>10} {row['extra_mb']:9.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": args.device, "cases": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
