"""Ensembles and uncertainty, structnets against chemprop on ESOL and FreeSolv.

Both tools run as their users would run them, from the command line, on the same CSV with
the same random 0.8/0.1/0.1 splits (``structnets.chem.random_split(n, (0.8, 0.1, 0.1),
seed=s)`` for s = 0 .. ``--splits`` - 1, each written once as a JSON file of 0-based data-row
indices and given to both tools) and the same number of epochs. Two variants:

* ``ensemble``: ``--ensemble-size`` members; the prediction is the members' mean and the
  uncertainty their spread;
* ``mve``: one mean-variance-estimation model (it predicts a mean and a variance).

For each, the test split is scored here with one piece of code for both tools: test RMSE,
and from :mod:`structnets.chem.uncertainty` the Gaussian NLL, the miscalibration area, ENCE
and Spearman's rank correlation between the absolute error and the predicted std. Wall
time is each tool's whole command (``time.perf_counter()`` around ``subprocess.run``),
start-up included; the table gives mean ± sample std over the splits, the wall-time sum
over the splits and the ratio structnets / chemprop.

Where the numbers come from:

* structnets: ``python -m structnets molprop train ... --split-indices SPLIT.json --seed s
  --ensemble-size K`` (ensemble) or ``--uncertainty-method mve`` (mve) writes
  ``predictions.csv`` (``split,row,smiles,<target>_true,<target>_pred,<target>_std``); its
  ``split == "test"`` rows are scored (the ensemble's std is the members' population std,
  as chemprop's). ``metrics.json``'s test RMSE is kept beside ours as a cross-check.
* chemprop 2.3.1, ensemble: ``chemprop train --task-type regression --ensemble-size K
  --splits-file SPLITS.json`` writes each member's test-set predictions to
  ``OUT/model_<i>/test_predictions.csv`` (the best-validation-loss checkpoint's, in the
  split's test order, full precision). The ensemble prediction is the mean of those and the
  uncertainty their population std (``ddof=0``), exactly what ``chemprop predict
  --uncertainty-method ensemble`` computes (``EnsembleEstimator``: member mean,
  ``torch.var(..., correction=0)``) but without a second process and without its 6-decimal
  rounding of the variance; chemprop's time is the training command alone.
* chemprop 2.3.1, mve: ``chemprop train --task-type regression-mve`` writes only the mean to
  ``test_predictions.csv``, so ``chemprop predict --test-path TEST.csv --model-paths
  OUT/model_0/best.pt --uncertainty-method mve`` is run on the test rows (in the split's
  order); its ``<target>_unc`` column is the predicted *variance* (std = its square root)
  and ``<target>`` the mean. chemprop's time is train plus predict (both are recorded).
  The predict call also asks for chemprop's own ``--evaluation-methods``; the values it
  logs are kept in the JSON (``chemprop_reported``) beside ours, for reference only.

chemprop's other settings are its defaults (2.3.1): message passing on directed bonds, hidden
size 300, depth 3, ``norm`` aggregation (divided by 100), no batch norm, dropout 0, one FFN
hidden layer of 300, batch size 64, Noam-like schedule (2 warm-up epochs, 1e-4 -> 1e-3 ->
1e-4), no early stopping (patience = epochs), the best validation loss checkpoint kept,
``--num-workers 0`` (sequential data loading), ``--pytorch-seed`` unset (random
initialisation: chemprop's runs are not repeatable), ``--accelerator auto``.

chemprop lives in its own virtual environment::

    python3 -m venv .venv-chemprop
    .venv-chemprop/bin/pip install torch==2.13.0 chemprop==2.3.1
    python benchmarks/molprop_uncertainty.py --chemprop .venv-chemprop/bin/chemprop \\
        --data-dir ../shared/data --threads 1 --work runs/molprop_uncertainty

On a machine whose cores are shared with other work use ``--threads 1``: with two OpenMP
threads on two busy cores both tools ran 3x (chemprop) to 100x (structnets) slower than with
one, and by how much varied from run to run. chemprop refuses ``--epochs`` at or below its
2 warm-up epochs, so the smallest test is ``--epochs 3``.

With ``--work`` the runs are kept there and a run whose recorded command is unchanged and
succeeded is not repeated, so an interrupted benchmark can be restarted; ``--score-only``
re-scores a kept work directory without training anything.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from structnets.chem import random_split
from structnets.chem.uncertainty import uncertainty_metrics
from structnets.train.data import data_dir

DATASETS = {
    "esol": ("esol/delaney-processed.csv", "smiles", "measured log solubility in mols per litre"),
    "freesolv": ("freesolv/SAMPL.csv", "smiles", "expt"),
}
SYSTEMS = ("structnets", "chemprop")
VARIANTS = ("ensemble", "mve")
UNCERTAINTY = ("nll", "miscalibration_area", "ence", "spearman")
# chemprop predict's --evaluation-methods and the names we store their logged values under.
CHEMPROP_EVALUATORS = {
    "nll-regression": "nll",
    "miscalibration_area": "miscalibration_area",
    "ence": "ence",
    "spearman": "spearman",
}

log = logging.getLogger("molprop_uncertainty")


# --------------------------------------------------------------------------- data


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_test_csv(rows: list[dict[str, str]], indices: list[int], smiles: str, target: str, path: Path) -> None:
    """The test rows, in the split's order, with their SMILES and target columns only."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([smiles, target])
        for i in indices:
            writer.writerow([rows[i][smiles], rows[i][target]])


def check_smiles(found: list[str], rows: list[dict[str, str]], indices: list[int], smiles: str, source: Path) -> None:
    # Surrounding whitespace is not part of a SMILES (ESOL has a trailing space that structnets strips).
    found = [s.strip() for s in found]
    expected = [rows[i][smiles].strip() for i in indices]
    if found != expected:
        bad = next(k for k, (a, b) in enumerate(zip(found, expected)) if a != b) if len(found) == len(expected) else -1
        raise RuntimeError(
            f"{source}: test molecules differ from the split's ({len(found)} against {len(expected)}; "
            f"first mismatch at {bad})"
        )


# --------------------------------------------------------------------------- commands


def subprocess_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if threads is not None:
        # torch takes its intra-op thread count from OMP_NUM_THREADS at start-up.
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def with_cores(command: list[str], cores: str | None) -> list[str]:
    return (["taskset", "-c", cores] if cores else []) + command


def kept_record(run_dir: Path, name: str, command: list[str], threads: int | None) -> dict | None:
    """The record of an earlier successful run of the same command with the same threads, if any."""
    path = run_dir / f"{name}.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    same = record.get("command") == command and record.get("threads") == threads
    return record if same and record.get("returncode") == 0 else None


def run_command(command: list[str], run_dir: Path, name: str, threads: int | None, reuse: bool) -> dict:
    """Runs ``command`` in ``run_dir`` and records it in ``run_dir/<name>.json``.

    A record of the same command (and threads) that succeeded is reused when ``reuse`` is set.
    """
    record = kept_record(run_dir, name, command, threads) if reuse else None
    if record is not None:
        log.info("  %s: kept from an earlier run (%.1f s)", name, record["seconds"])
        return record
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("  %s: %s", name, shlex.join(command))
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=run_dir, env=subprocess_env(threads))
    seconds = time.perf_counter() - start
    (run_dir / f"{name}.stdout.log").write_text(result.stdout)
    (run_dir / f"{name}.stderr.log").write_text(result.stderr)
    record = {"command": command, "seconds": seconds, "returncode": result.returncode, "threads": threads}
    (run_dir / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    if result.returncode:
        raise RuntimeError(f"{name} failed ({result.returncode}); see {run_dir}:\n{result.stderr[-3000:]}")
    log.info("  %s: %.1f s", name, seconds)
    return record


def load_record(run_dir: Path, name: str) -> dict:
    path = run_dir / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: that run was never made in this work directory")
    record = json.loads(path.read_text())
    if record.get("returncode") != 0:
        raise RuntimeError(f"{path}: the run failed (return code {record.get('returncode')})")
    return record


def structnets_command(args, csv_path: Path, smiles: str, target: str, split_file: Path, seed: int, variant: str):
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
        str(args.epochs),
        "--seed",
        str(seed),
        "--no-progress",
    ]
    if variant == "ensemble":
        command += ["--ensemble-size", str(args.ensemble_size)]
    else:
        command += ["--uncertainty-method", "mve"]
    return command + shlex.split(args.structnets_args) + ["--out", "out"]


def chemprop_train_command(args, csv_path: Path, smiles: str, target: str, splits_file: Path, variant: str):
    command = [
        args.chemprop,
        "train",
        "--data-path",
        str(csv_path),
        "--task-type",
        "regression" if variant == "ensemble" else "regression-mve",
        "--smiles-columns",
        smiles,
        "--target-columns",
        target,
        "--epochs",
        str(args.epochs),
        "--splits-file",
        str(splits_file),
        "--num-workers",
        "0",
    ]
    if variant == "ensemble":
        command += ["--ensemble-size", str(args.ensemble_size)]
    return command + shlex.split(args.chemprop_args) + ["--output-dir", "out"]


def chemprop_predict_command(args, test_csv: Path, smiles: str, model: Path, output: Path):
    return [
        args.chemprop,
        "predict",
        "--test-path",
        str(test_csv),
        "--smiles-columns",
        smiles,
        "--model-paths",
        str(model),
        "--uncertainty-method",
        "mve",
        "--evaluation-methods",
        *CHEMPROP_EVALUATORS,
        "--num-workers",
        "0",
        *shlex.split(args.chemprop_args_predict),
        "--output",
        str(output),
    ]


# --------------------------------------------------------------------------- scoring


def score(mean: np.ndarray, std: np.ndarray, true: np.ndarray, target: str) -> dict:
    errors = mean - true
    scores = {"rmse": float(np.sqrt(np.mean(errors**2))), "test_molecules": int(len(true))}
    scores["std_not_positive"] = int(np.sum(~(std > 0)))
    try:
        metrics = uncertainty_metrics(mean[:, None], std[:, None], true[:, None], [target])[target]
    except ValueError as error:  # e.g. a std of 0: kept as NaN, the run goes on (--score-only re-scores)
        log.warning("  cannot score the uncertainty: %s", error)
        scores["uncertainty_error"] = str(error)
        metrics = dict.fromkeys(UNCERTAINTY, math.nan)
    scores.update({name: float(metrics[name]) for name in UNCERTAINTY})
    return scores


def score_structnets(run_dir: Path, rows, split, smiles: str, target: str) -> dict:
    out = run_dir / "out"
    test = [r for r in read_rows(out / "predictions.csv") if r["split"] == "test"]
    check_smiles([r["smiles"] for r in test], rows, split["test"], smiles, out / "predictions.csv")
    if test and f"{target}_std" not in test[0]:
        raise RuntimeError(f"{out / 'predictions.csv'} has no {target}_std column")
    mean = np.array([float(r[f"{target}_pred"]) for r in test])
    std = np.array([float(r[f"{target}_std"]) for r in test])
    true = np.array([float(rows[i][target]) for i in split["test"]])
    scores = score(mean, std, true, target)
    metrics = json.loads((out / "metrics.json").read_text())
    scores["reported_rmse"] = float(metrics["test"][target]["rmse"])
    _cross_check("structnets' metrics.json", scores["reported_rmse"], scores["rmse"])
    return scores


def _cross_check(what: str, reported: float, ours: float) -> None:
    # predictions.csv keeps 6 significant digits, so the two agree to about 1e-5.
    if not math.isclose(reported, ours, rel_tol=1e-3, abs_tol=1e-4):
        log.warning("  %s gives test RMSE %.5f, the predictions %.5f", what, reported, ours)


def score_chemprop_ensemble(run_dir: Path, rows, split, smiles: str, target: str, size: int) -> dict:
    members = sorted((run_dir / "out").rglob("test_predictions.csv"))
    if len(members) != size:
        raise RuntimeError(f"{run_dir / 'out'}: {len(members)} test_predictions.csv, expected {size}")
    predictions = []
    for path in members:
        member = read_rows(path)
        check_smiles([r[smiles] for r in member], rows, split["test"], smiles, path)
        predictions.append([float(r[target]) for r in member])
    stacked = np.array(predictions)
    true = np.array([float(rows[i][target]) for i in split["test"]])
    scores = score(stacked.mean(axis=0), stacked.std(axis=0), true, target)
    scores["member_rmse"] = [float(np.sqrt(np.mean((p - true) ** 2))) for p in stacked]
    return scores


def score_chemprop_mve(run_dir: Path, rows, split, smiles: str, target: str) -> dict:
    path = run_dir / "test_mve.csv"
    predicted = read_rows(path)
    check_smiles([r[smiles] for r in predicted], rows, split["test"], smiles, path)
    mean = np.array([float(r[target]) for r in predicted])
    variance = np.array([float(r[f"{target}_unc"]) for r in predicted])
    true = np.array([float(rows[i][target]) for i in split["test"]])
    scores = score(mean, np.sqrt(np.maximum(variance, 0.0)), true, target)
    # The training run's own test predictions (the same checkpoint) as a cross-check of the mean.
    trained = sorted((run_dir / "out").rglob("test_predictions.csv"))
    if trained:
        train_mean = np.array([float(r[target]) for r in read_rows(trained[0])])
        scores["train_rmse_check"] = float(np.sqrt(np.mean((train_mean - true) ** 2)))
        _cross_check("chemprop train's test_predictions.csv", scores["train_rmse_check"], scores["rmse"])
    scores["chemprop_reported"] = chemprop_reported(run_dir / "predict.stderr.log", run_dir / "predict.stdout.log")
    return scores


def chemprop_reported(*logs: Path) -> dict:
    """chemprop predict's own logged uncertainty evaluation (``nll-regression: [0.93]``)."""
    text = "".join(p.read_text() for p in logs if p.is_file())
    found = {}
    for method, name in CHEMPROP_EVALUATORS.items():
        match = re.search(rf"{re.escape(method)}: \[([^\]]*)\]", text)
        if match:
            try:
                found[name] = float(match.group(1).split(",")[0])
            except ValueError:
                pass
    return found


# --------------------------------------------------------------------------- runs


def run_split(args, name: str, seed: int, work: Path, reuse: bool) -> dict:
    relative, smiles, target = DATASETS[name]
    csv_path = (data_dir(args.data_dir) / relative).resolve()
    rows = read_rows(csv_path)
    split_dir = work / name / f"split_{seed}"
    split_dir.mkdir(parents=True, exist_ok=True)
    split_file = split_dir / "split.json"
    splits_file = split_dir / "chemprop_splits.json"
    split = random_split(len(rows), (0.8, 0.1, 0.1), seed=seed)
    if args.score_only:
        split = json.loads(split_file.read_text())
    else:
        split_file.write_text(json.dumps(split))
        splits_file.write_text(json.dumps([split]))
        write_test_csv(rows, split["test"], smiles, target, split_dir / "test.csv")
    results: dict = {}
    for variant in args.variants:
        results[variant] = {}
        for system in args.systems:
            run_dir = split_dir / f"{system}_{variant}"
            log.info("%s split %d: %s %s", name, seed, system, variant)
            if system == "structnets":
                commands = {"train": structnets_command(args, csv_path, smiles, target, split_file, seed, variant)}
            else:
                commands = {"train": chemprop_train_command(args, csv_path, smiles, target, splits_file, variant)}
                if variant == "mve":
                    model = run_dir / "out" / "model_0" / "best.pt"
                    commands["predict"] = chemprop_predict_command(
                        args, split_dir / "test.csv", smiles, model, run_dir / "test_mve.csv"
                    )
            records = {}
            keep = reuse
            for step, command in commands.items():
                if args.score_only:
                    records[step] = load_record(run_dir, step)
                    continue
                # A step after one that ran again is run again too (predict after train).
                command = with_cores(command, args.cores)
                keep = keep and kept_record(run_dir, step, command, args.threads) is not None
                if step == "train" and not keep:
                    shutil.rmtree(run_dir / "out", ignore_errors=True)
                records[step] = run_command(command, run_dir, step, args.threads, keep)
            if system == "structnets":
                scores = score_structnets(run_dir, rows, split, smiles, target)
            elif variant == "ensemble":
                scores = score_chemprop_ensemble(run_dir, rows, split, smiles, target, args.ensemble_size)
            else:
                scores = score_chemprop_mve(run_dir, rows, split, smiles, target)
            scores["seconds"] = sum(r["seconds"] for r in records.values())
            scores["step_seconds"] = {step: r["seconds"] for step, r in records.items()}
            scores["commands"] = {step: shlex.join(r["command"]) for step, r in records.items()}
            log.info(
                "  %s %s: RMSE %.3f, NLL %.3f, miscalibration %.3f, ENCE %.3f, Spearman %.3f, %.1f s",
                system,
                variant,
                scores["rmse"],
                scores["nll"],
                scores["miscalibration_area"],
                scores["ence"],
                scores["spearman"],
                scores["seconds"],
            )
            results[variant][system] = scores
    return results


# --------------------------------------------------------------------------- summary


def mean_std(values: list[float]) -> dict:
    finite = [v for v in values if v is not None]
    if not finite:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(finite), "std": statistics.stdev(finite) if len(finite) > 1 else 0.0}


def summarise(per_split: list[dict], variants, systems) -> dict:
    summary: dict = {}
    for variant in variants:
        summary[variant] = {}
        for system in systems:
            runs = [s[variant][system] for s in per_split]
            entry = {m: mean_std([r[m] for r in runs]) for m in ("rmse",) + UNCERTAINTY}
            entry["seconds_sum"] = sum(r["seconds"] for r in runs)
            summary[variant][system] = entry
        if set(SYSTEMS) <= set(systems):
            ours, theirs = summary[variant]["structnets"], summary[variant]["chemprop"]
            differences = [s[variant]["structnets"]["rmse"] - s[variant]["chemprop"]["rmse"] for s in per_split]
            standard_error = statistics.stdev(differences) / math.sqrt(len(differences)) if len(differences) > 1 else 0
            ratio = ours["seconds_sum"] / theirs["seconds_sum"]
            difference = statistics.fmean(differences)
            summary[variant]["comparison"] = {
                "time_ratio": ratio,
                "rmse_difference_mean": difference,
                "rmse_difference_standard_error": standard_error,
                # The target: a lower RMSE, or an equal one (paired difference within one
                # standard error over the splits) in under half the time.
                "target_met": bool(difference < 0 or (difference <= standard_error and ratio < 0.5)),
            }
    return summary


def _cell(entry: dict | None, digits: int = 3) -> str:
    if entry is None or entry["mean"] is None:
        return "-"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def print_table(name: str, summary: dict, splits: int, args) -> None:
    systems = [s for s in SYSTEMS if s in args.systems]
    labels = {
        "rmse": "test RMSE",
        "nll": "Gaussian NLL",
        "miscalibration_area": "miscalibration area",
        "ence": "ENCE",
        "spearman": "Spearman(|err|, std)",
    }
    print(
        f"\n{name}: {splits} split(s), {args.epochs} epochs, ensemble of {args.ensemble_size}; mean ± std over splits"
    )
    header = f"{'':24s}" + "".join(f"{v + ' ' + s:>24s}" for v in args.variants for s in systems)
    print(header)
    print("-" * len(header))
    for metric, label in labels.items():
        cells = "".join(f"{_cell(summary[v][s][metric]):>24s}" for v in args.variants for s in systems)
        print(f"{label:24s}{cells}")
    cells = "".join(f"{summary[v][s]['seconds_sum']:>22.1f} s" for v in args.variants for s in systems)
    print(f"{'wall time, sum':24s}{cells}")
    for variant in args.variants:
        comparison = summary[variant].get("comparison")
        if comparison:
            print(
                f"{variant}: wall time structnets / chemprop {comparison['time_ratio']:.2f}x; RMSE difference "
                f"{comparison['rmse_difference_mean']:+.3f} (standard error {comparison['rmse_difference_standard_error']:.3f}); "
                f"target {'met' if comparison['target_met'] else 'not met'}"
            )


def machine(args) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "threads": args.threads,
        "cores": args.cores,
    }
    python = Path(args.chemprop).parent / "python"
    if "chemprop" in args.systems and python.exists():
        probe = subprocess.run(
            [str(python), "-c", "import torch, chemprop; print(torch.__version__, chemprop.__version__)"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0:
            info["chemprop_torch"], info["chemprop"] = probe.stdout.split()
    return info


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--chemprop", default=shutil.which("chemprop") or "chemprop", help="chemprop executable")
    parser.add_argument("--data-dir", default=None, help="data directory (else $STRUCTNETS_DATA_DIR)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS), help="datasets")
    parser.add_argument("--splits", type=int, default=5, help="random splits, seeds 0 .. splits - 1")
    parser.add_argument("--epochs", type=int, default=50, help="training epochs for both tools")
    parser.add_argument("--ensemble-size", type=int, default=5, help="members of the ensemble variant")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS, help="tools to run")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="uncertainty variants")
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP/MKL threads (torch's intra-op threads) of both tools"
    )
    parser.add_argument("--cores", default=None, help="run both tools under taskset -c CORES (e.g. 0,1)")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="keep the runs here, and reuse the finished ones (none: a temporary directory)",
    )
    parser.add_argument(
        "--score-only", action="store_true", help="re-score the runs kept in --work without training anything"
    )
    parser.add_argument("--structnets-args", default="", help="extra options for structnets molprop train")
    parser.add_argument("--chemprop-args", default="", help="extra options for chemprop train")
    parser.add_argument("--chemprop-args-predict", default="", help="extra options for chemprop predict (mve)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results" / "molprop_uncertainty.json",
        help="JSON with per-split numbers, commands and the machine",
    )
    args = parser.parse_args()
    if args.score_only and args.work is None:
        parser.error("--score-only needs --work")
    # The tools run inside their run directories: a relative executable is made absolute (not resolved:
    # a venv's entry point may be a link).
    args.chemprop = os.path.abspath(args.chemprop) if os.sep in args.chemprop else args.chemprop
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    temporary = None
    if args.work is None:
        temporary = tempfile.TemporaryDirectory(prefix="molprop_uncertainty_")
        work = Path(temporary.name)
    else:
        work = args.work.resolve()
        work.mkdir(parents=True, exist_ok=True)
    reuse = args.work is not None
    started = time.perf_counter()
    results = {
        "settings": {
            "splits": args.splits,
            "epochs": args.epochs,
            "ensemble_size": args.ensemble_size,
            "systems": args.systems,
            "variants": args.variants,
            "fractions": [0.8, 0.1, 0.1],
            "structnets_args": args.structnets_args,
            "chemprop_args": args.chemprop_args,
        },
        "machine": machine(args),
        "datasets": {},
    }
    try:
        for name in args.datasets:
            per_split = []
            for seed in range(args.splits):
                per_split.append({"seed": seed, **run_split(args, name, seed, work, reuse)})
            summary = summarise(per_split, args.variants, args.systems)
            results["datasets"][name] = {"summary": summary, "splits": per_split}
            print_table(name, summary, args.splits, args)
    finally:
        if temporary is not None:
            temporary.cleanup()
    results["total_seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    log.info("wrote %s (%.0f s in all)", args.out, results["total_seconds"])


if __name__ == "__main__":
    main()
