"""What the learned simulator learns in a fixed time budget, setting by setting.

Trains ``structnets simulate train`` once per variant for ``--max-seconds`` of wall time on
``--data`` (any layout ``simulate`` reads: a LagrangeBench folder, a DeepMind one, structnets'
own), evaluates each on the test split, and prints one row per variant: training steps,
rollout MSE, its ratio to constant-velocity extrapolation, MSE over the first 5 and 20
frames, one-step MSE. This is how issue 15's defaults were chosen (noise relative to the
data's velocity spread, normalisation, pushforward, model size and learning rate for a
budget): each candidate measured against the others at the same budget.

    python benchmarks/gns_budget.py --data DATA --max-seconds 300 --variants base small noise
    python benchmarks/gns_budget.py --data DATA --max-seconds 300 --parallel 2 --threads 1

``--parallel 2 --threads 1`` runs two variants at a time, each on one core: the variants
still compete on equal terms, in half the wall time, but each figure is then for one core.
Writes ``results/gns_budget_<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Each variant: the flags given to `simulate train` on top of the common ones.
VARIANTS: dict[str, list[str]] = {
    "paper": ["--latent-size", "128", "--message-passing-steps", "10", "--noise-std", "6.7e-4"],
    # "base" as run on 2026-12-01 for issue 15: noise 6.7e-4, the default then (0.105 of TGV's vel_std).
    "base": ["--latent-size", "64", "--message-passing-steps", "5", "--noise-std", "6.7e-4"],
    "small": ["--latent-size", "32", "--message-passing-steps", "5", "--noise-std", "6.7e-4"],
    "tiny-mp": ["--latent-size", "64", "--message-passing-steps", "3", "--noise-std", "6.7e-4"],
    "noise-rel0.1": ["--latent-size", "64", "--message-passing-steps", "5", "--relative-noise", "0.1"],
    "noise-rel0.3": ["--latent-size", "64", "--message-passing-steps", "5", "--relative-noise", "0.3"],
    "noise-rel0.03": ["--latent-size", "64", "--message-passing-steps", "5", "--relative-noise", "0.03"],
    "noise-rel0.015": ["--latent-size", "64", "--message-passing-steps", "5", "--relative-noise", "0.015"],
    "noise0": ["--latent-size", "64", "--message-passing-steps", "5", "--noise-std", "0"],
    "push2": ["--latent-size", "64", "--message-passing-steps", "5", "--pushforward-steps", "2", "--noise-std", "6.7e-4"],
    "push3-p0.5": [
        "--latent-size", "64", "--message-passing-steps", "5", "--pushforward-steps", "3",
        "--pushforward-probability", "0.5",
    ],
    "lr3e-3": ["--latent-size", "64", "--message-passing-steps", "5", "--lr", "3e-3", "--noise-std", "6.7e-4"],
    "lr3e-4": ["--latent-size", "64", "--message-passing-steps", "5", "--lr", "3e-4"],
    "batch1": ["--latent-size", "64", "--message-passing-steps", "5", "--batch-size", "1"],
    "batch4": ["--latent-size", "64", "--message-passing-steps", "5", "--batch-size", "4"],
    "defaults": [],
}  # fmt: skip


def run_variant(name: str, flags: list[str], args: argparse.Namespace, work: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    run, evaluation = work / name / "run", work / name / "eval"
    command = [sys.executable, "-m", "structnets", "simulate"]
    train = [*command, "train", "--data", str(args.data), "--out", str(run), "--max-seconds", str(args.max_seconds)]
    train += ["--steps", "1000000", "--no-progress", "--seed", str(args.seed), *flags]
    started = time.perf_counter()
    subprocess.run(train, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    ev = [*command, "evaluate", "--model", str(run), "--data", str(args.data), "--out", str(evaluation)]
    ev += ["--no-sinkhorn"] if not args.sinkhorn else []
    subprocess.run(ev, check=True, env=env, stdout=subprocess.DEVNULL)
    metrics = json.loads((evaluation / "metrics.json").read_text())
    trained = json.loads((run / "metrics.json").read_text())
    return {"variant": name, "flags": flags, "steps": trained["steps"], "train_wall_s": wall, **metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="dataset folder (required)")
    parser.add_argument("--max-seconds", type=float, default=300, help="training budget per variant (default: 300)")
    parser.add_argument(
        "--variants", nargs="+", default=["base", "noise-rel0.1", "push2"], choices=sorted(VARIANTS),
        help="which variants to run (default: base noise-rel0.1 push2)",
    )  # fmt: skip
    parser.add_argument("--parallel", type=int, default=1, help="variants run at once (default: 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per variant (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    parser.add_argument("--sinkhorn", action="store_true", help="also compute the Sinkhorn divergence (slow)")
    parser.add_argument("--work", type=Path, default=Path("runs/gns_budget"), help="where runs go (default: runs/gns_budget)")
    parser.add_argument("--name", default=None, help="JSON name suffix (default: the data folder's name)")
    args = parser.parse_args()
    work = args.work / f"{args.data.name}-{int(args.max_seconds)}s"
    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda v: run_variant(v, VARIANTS[v], args, work), args.variants))
    print(f"{args.data} ({args.max_seconds:.0f} s per variant, {args.threads} thread(s), {args.parallel} at a time)")
    print(f"{'variant':<16}{'steps':>8}{'rollout MSE':>13}{'x const.vel':>12}{'MSE5':>11}{'MSE20':>11}{'1-step':>11}")
    for r in rows:
        print(
            f"{r['variant']:<16}{r['steps']:>8}{r['rollout_mse']:>13.3g}{r['rollout_ratio_to_baseline']:>12.3f}"
            f"{r.get('rollout_mse5', float('nan')):>11.3g}{r.get('rollout_mse20', float('nan')):>11.3g}"
            f"{r['one_step_mse']:>11.3g}"
        )
    base = rows[0]
    print(f"constant velocity: rollout MSE {base['baseline_rollout_mse']:.3g}, MSE5 {base.get('baseline_rollout_mse5', float('nan')):.3g}, MSE20 {base.get('baseline_rollout_mse20', float('nan')):.3g}")
    out = HERE / "results" / f"gns_budget_{args.name or args.data.name}_{int(args.max_seconds)}s.json"
    out.parent.mkdir(exist_ok=True)
    record = {"data": str(args.data), "max_seconds": args.max_seconds, "threads": args.threads, "parallel": args.parallel, "rows": rows}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
