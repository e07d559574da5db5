"""structnets' MPNN against chemprop on ESOL and FreeSolv: same data, split and epochs.

Both tools run as their users would run them, from the command line, on the same CSV with
the same random 0.8/0.1/0.1 split (written once as a JSON file of row indices and given to
both) and the same number of epochs; wall time includes each tool's start-up. Test RMSE is
computed here from each tool's own test-set predictions.

chemprop lives in its own virtual environment, so that its dependencies do not mix with
ours::

    python3 -m venv .venv-chemprop
    .venv-chemprop/bin/pip install torch==2.13.0 chemprop==2.3.1
    python benchmarks/molprop_vs_chemprop.py --chemprop .venv-chemprop/bin/chemprop --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from structnets.chem import random_split
from structnets.train.data import data_dir

DATASETS = {
    "esol": ("esol/delaney-processed.csv", "smiles", "measured log solubility in mols per litre"),
    "freesolv": ("freesolv/SAMPL.csv", "smiles", "expt"),
}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _rmse(pairs: list[tuple[float, float]]) -> float:
    return math.sqrt(sum((p - t) ** 2 for p, t in pairs) / len(pairs))


def run_chemprop(
    executable: str, csv_path: Path, smiles: str, target: str, split: dict, epochs: int, work: Path
) -> dict:
    splits_file = work / "chemprop_split.json"
    splits_file.write_text(json.dumps([split]))
    out = work / "chemprop"
    command = [
        executable,
        "train",
        "--data-path",
        str(csv_path),
        "--task-type",
        "regression",
        "--smiles-columns",
        smiles,
        "--target-columns",
        target,
        "--epochs",
        str(epochs),
        "--splits-file",
        str(splits_file),
        "--num-workers",
        "0",
        "-o",
        str(out),
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"chemprop failed:\n{result.stderr[-3000:]}")
    predictions = sorted(out.rglob("test_predictions.csv"))
    if not predictions:
        raise RuntimeError(f"no test_predictions.csv under {out}")
    rows = _rows(csv_path)
    truth = {rows[i][smiles]: float(rows[i][target]) for i in split["test"]}
    pairs = [(float(r[target]), truth[r[smiles]]) for r in _rows(predictions[0])]
    return {"seconds": seconds, "test_rmse": _rmse(pairs), "test_molecules": len(pairs)}


def run_structnets(
    csv_path: Path, smiles: str, target: str, split_file: Path, epochs: int, work: Path, extra: list[str]
) -> dict:
    out = work / "structnets"
    command = [
        sys.executable,
        "-m",
        "structnets",
        "molprop",
        "train",
        "--data",
        str(csv_path),
        "--smiles-column",
        smiles,
        "--target-column",
        target,
        "--split-indices",
        str(split_file),
        "--epochs",
        str(epochs),
        "--seed",
        "0",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"structnets failed:\n{result.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "seconds": seconds,
        "test_rmse": metrics["test"][target]["rmse"],
        "test_molecules": metrics["num_molecules"]["test"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chemprop", default=shutil.which("chemprop") or "chemprop")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--structnets-args", default="", help="extra options for structnets molprop train")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "molprop_vs_chemprop.json")
    args = parser.parse_args()
    results = {}
    for name in args.datasets:
        relative, smiles, target = DATASETS[name]
        csv_path = data_dir(args.data_dir) / relative
        split = random_split(len(_rows(csv_path)), (0.8, 0.1, 0.1), seed=args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            split_file = work / "split.json"
            split_file.write_text(json.dumps(split))
            ours = run_structnets(csv_path, smiles, target, split_file, args.epochs, work, args.structnets_args.split())
            theirs = run_chemprop(args.chemprop, csv_path, smiles, target, split, args.epochs, work)
        results[name] = {"structnets": ours, "chemprop": theirs, "epochs": args.epochs}
        print(
            f"{name:9s} test RMSE: chemprop {theirs['test_rmse']:.3f}, structnets {ours['test_rmse']:.3f}; "
            f"wall: chemprop {theirs['seconds']:.1f} s, structnets {ours['seconds']:.1f} s "
            f"({ours['seconds'] / theirs['seconds']:.2f}x)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
