"""Test RMSE with and without extra molecule features, on the same random splits.

For each dataset and each feature set (none, Morgan bits, Morgan counts, RDKit 2D, Morgan
bits with RDKit 2D), ``structnets molprop train --num-replicates K`` runs K random
0.8/0.1/0.1 splits (seeds 0 .. K-1, so every feature set sees the same K splits) with the
default model and 50 epochs; the table gives each feature set's test RMSE as mean ± std over
the splits, the change from no features, and the wall time::

    python benchmarks/molprop_features.py --data-dir ../shared/data

Writes ``benchmarks/results/molprop_features.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DATASETS = {
    "esol": "measured log solubility in mols per litre",
    "freesolv": "expt",
}
VARIANTS = {
    "none": [],
    "morgan_binary": ["morgan_binary"],
    "morgan_count": ["morgan_count"],
    "rdkit_2d": ["rdkit_2d"],
    "morgan_binary+rdkit_2d": ["morgan_binary", "rdkit_2d"],
}


def run(dataset: str, featurizers: list[str], args: argparse.Namespace, out: Path) -> dict:
    command = [sys.executable, "-m", "structnets", "molprop", "train", "--dataset", dataset]
    command += ["--epochs", str(args.epochs), "--num-replicates", str(args.splits), "--no-progress", "--out", str(out)]
    if featurizers:
        command += ["--molecule-featurizers", *featurizers]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text())
    rmse = summary["test"][DATASETS[dataset]]["rmse"]
    return {
        "command": " ".join(command),
        "seconds": seconds,
        "rmse_mean": rmse["mean"],
        "rmse_std": rmse["std"],
        "rmse": rmse["values"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("STRUCTNETS_DATA_DIR"), help="the data directory")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS), help="datasets")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="feature sets")
    parser.add_argument("--splits", type=int, default=5, help="random splits per feature set (default: 5)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs per run (default: 50)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results" / "molprop_features.json",
        help="the JSON file to write",
    )
    args = parser.parse_args()
    results: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
        "splits": args.splits,
        "epochs": args.epochs,
        "datasets": {},
    }
    with tempfile.TemporaryDirectory() as work:
        for dataset in args.datasets:
            rows = results["datasets"][dataset] = {}
            for name in args.variants:
                rows[name] = run(dataset, VARIANTS[name], args, Path(work) / dataset / name)
                print(
                    f"{dataset} {name}: {rows[name]['rmse_mean']:.3f} ± {rows[name]['rmse_std']:.3f} "
                    f"({rows[name]['seconds']:.0f} s)",
                    flush=True,
                )
    for dataset, rows in results["datasets"].items():
        print(f"\n{dataset}: test RMSE over {args.splits} random splits, {args.epochs} epochs")
        print(f"{'features':<24} {'RMSE':>15} {'vs none':>8} {'wall':>7}")
        base = rows.get("none", {}).get("rmse_mean")
        for name, row in rows.items():
            change = f"{row['rmse_mean'] - base:+.3f}" if base is not None else ""
            print(f"{name:<24} {row['rmse_mean']:>7.3f} ± {row['rmse_std']:.3f} {change:>8} {row['seconds']:>6.0f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
