"""Test RMSE with and without extra molecule features, on the same random splits.

For each dataset and each feature set (none, Morgan bits, Morgan counts, RDKit 2D, Morgan
bits with RDKit 2D), ``structnets molprop train --num-replicates K`` runs K random
0.8/0.1/0.1 splits (seeds 0 .. K-1, so every feature set sees the same K splits) with the
default model and 50 epochs; the table gives each feature set's test RMSE as mean ± std over
the splits, the change from no features, and the wall time::

    python benchmarks/molprop_features.py --data-dir ../shared/data [--chemprop .venv-chemprop/bin/chemprop]

With ``--chemprop``, chemprop 2.3.1 trains one model per split and feature set on the same
splits (its ``--splits-file``, the same random 0.8/0.1/0.1 split of seed k as our replicate k,
``--molecule-featurizers`` as given, 50 epochs, its other defaults) as the peer column; its
test RMSE is computed here from its own ``test_predictions.csv``. ``--chemprop-work DIR``
keeps those runs and reuses a finished one.

Writes ``benchmarks/results/molprop_features.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from structnets.chem import random_split

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


CSV = {"esol": "esol/delaney-processed.csv", "freesolv": "freesolv/SAMPL.csv"}


def run_chemprop(dataset: str, featurizers: list[str], args: argparse.Namespace, work: Path) -> dict:
    """chemprop on the same K splits, one model each; test RMSE from its own test predictions."""
    from structnets.train.data import data_dir

    target = DATASETS[dataset]
    path = (data_dir(args.data_dir) / CSV[dataset]).resolve()
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    values, seconds = [], 0.0
    for seed in range(args.splits):
        split = random_split(len(rows), (0.8, 0.1, 0.1), seed=seed)
        out = work / dataset / f"split_{seed}" / ("+".join(featurizers) or "none")
        predictions = out / "model_0" / "test_predictions.csv"
        if not predictions.is_file():
            out.mkdir(parents=True, exist_ok=True)
            (out / "splits.json").write_text(json.dumps([split]))
            command = [args.chemprop, "train", "--data-path", str(path), "--task-type", "regression"]
            command += ["--smiles-columns", "smiles", "--target-columns", target, "--epochs", str(args.epochs)]
            command += ["--splits-file", str(out / "splits.json"), "--num-workers", "0", "--output-dir", str(out)]
            command += ["--molecule-featurizers", *featurizers] if featurizers else []
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, text=True)
            seconds += time.perf_counter() - started
        with predictions.open(newline="") as handle:
            predicted = list(csv.DictReader(handle))
        if [p["smiles"].strip() for p in predicted] != [rows[i]["smiles"].strip() for i in split["test"]]:
            raise ValueError(f"{predictions}: not the test molecules of split {seed}, in order")
        errors = [float(p[target]) - float(rows[i][target]) for p, i in zip(predicted, split["test"])]
        values.append(math.sqrt(sum(e * e for e in errors) / len(errors)))
    return {
        "rmse_mean": statistics.mean(values),
        "rmse_std": statistics.stdev(values),
        "rmse": values,
        "seconds_this_run": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("STRUCTNETS_DATA_DIR"), help="the data directory")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS), help="datasets")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="feature sets")
    parser.add_argument("--splits", type=int, default=5, help="random splits per feature set (default: 5)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs per run (default: 50)")
    parser.add_argument("--chemprop", default=None, help="chemprop's executable, for the peer column (default: none)")
    parser.add_argument(
        "--chemprop-work",
        type=Path,
        default=None,
        help="where chemprop's runs are kept and reused (default: a temp dir)",
    )
    parser.add_argument(
        "--chemprop-variants",
        nargs="+",
        default=None,
        choices=list(VARIANTS),
        help="the feature sets chemprop runs (default: all of --variants)",
    )
    parser.add_argument("--skip-ours", action="store_true", help="run only chemprop (default: both)")
    parser.add_argument(
        "--ours",
        type=Path,
        default=None,
        help="take our figures from an earlier JSON of this benchmark (default: train)",
    )
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
    earlier = json.loads(args.ours.read_text())["datasets"] if args.ours else {}
    with tempfile.TemporaryDirectory() as work:
        chemprop_work = args.chemprop_work or Path(work) / "chemprop"
        for dataset in args.datasets:
            rows = results["datasets"][dataset] = {}
            for name in args.variants:
                if dataset in earlier and name in earlier[dataset]:
                    rows[name] = earlier[dataset][name]
                elif not args.skip_ours:
                    rows[name] = run(dataset, VARIANTS[name], args, Path(work) / dataset / name)
                if args.chemprop and name in (args.chemprop_variants or args.variants):
                    rows.setdefault(name, {})["chemprop"] = run_chemprop(dataset, VARIANTS[name], args, chemprop_work)
                print(
                    f"{dataset} {name}: {json.dumps({k: v for k, v in rows[name].items() if 'mean' in k})}", flush=True
                )
    for dataset, rows in results["datasets"].items():
        print(f"\n{dataset}: test RMSE over {args.splits} random splits, {args.epochs} epochs")
        print(f"{'features':<24} {'structnets':>15} {'vs none':>8} {'chemprop':>15} {'vs none':>8}")
        for name, row in rows.items():
            cells = []
            for part in (row, row.get("chemprop", {})):
                base = rows.get("none", {}) if part is row else rows.get("none", {}).get("chemprop", {})
                if "rmse_mean" not in part:
                    cells += ["", ""]
                    continue
                change = f"{part['rmse_mean'] - base['rmse_mean']:+.3f}" if "rmse_mean" in base else ""
                cells += [f"{part['rmse_mean']:.3f} ± {part['rmse_std']:.3f}", change]
            print(f"{name:<24} {cells[0]:>15} {cells[1]:>8} {cells[2]:>15} {cells[3]:>8}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
