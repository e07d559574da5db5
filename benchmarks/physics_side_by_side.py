"""structnets' learned simulator beside LagrangeBench's GNS and geoelements/gns, same data, same wall time.

Each system trains for ``--max-seconds`` of wall time on ``--data`` with ``--threads``
torch/XLA threads, then rolls out the test split; every rollout is then scored by one
program, LagrangeBench's own metric code (``benchmarks/lagrangebench/lb_metrics.py``: MSE
over the first 5 and 20 frames and the full rollout, Sinkhorn divergence and kinetic-energy
error, every ``--stride``-th frame for the last two), and constant velocity beside them.

* structnets: ``structnets simulate train`` with its defaults (chosen from the budget, see
  ``gns_budget.py``) and ``evaluate --save-rollouts``;
* LagrangeBench: its GNS-10-128 through its own training code
  (``benchmarks/lagrangebench/train_lb_gns.py``, in ``.venv-lb``: ``setup.sh`` there);
* geoelements/gns: its own ``train.py`` (``benchmarks/peers/run_gns_peer.py``; ``setup_gns.sh``).

    python benchmarks/physics_side_by_side.py --data /work/lbdata/tgv2d --max-seconds 900 --threads 1 \\
        --systems structnets lagrangebench --parallel 2

``--parallel 2`` trains two systems at once, each on ``--threads`` threads and pinned to its
own cores (``taskset``): with one thread each on 2 cores, both get one core for the same
wall time. Writes
``results/physics_side_by_side_<data>_<seconds>s.json`` and prints the table.
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
ROOT = HERE.parent
LB_PYTHON = ROOT / ".venv-lb" / "bin" / "python"
SYSTEMS = ("structnets", "lagrangebench", "geoelements")


def _env(threads: int) -> dict[str, str]:
    flags = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} intra_op_parallelism_threads={threads}"
    return {
        **os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads), "XLA_FLAGS": flags,
    }  # fmt: skip


def _execute(command: list[str], log: Path, threads: int, cores: str | None = None) -> float:
    log.parent.mkdir(parents=True, exist_ok=True)
    if cores is not None:  # pinned: two systems side by side each get their own core(s)
        command = ["taskset", "-c", cores, *command]
    started = time.perf_counter()
    with log.open("w") as out:
        subprocess.run(command, check=True, env=_env(threads), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    return time.perf_counter() - started


def train_and_roll_out(system: str, args: argparse.Namespace, work: Path) -> dict:
    """Trains one system and writes its rollouts; returns :func:`collect`'s record of it."""
    out = work / system
    seconds, threads = str(args.max_seconds), args.threads
    cores = None
    if args.parallel > 1:
        first = (args.systems.index(system) % args.parallel) * threads
        cores = ",".join(str(c) for c in range(first, first + threads))

    def _run(command: list[str], log: Path) -> float:
        return _execute(command, log, threads, cores)

    if system == "structnets":
        run, evaluation = out / "run", out / "eval"
        base = [sys.executable, "-m", "structnets", "simulate"]
        train = [*base, "train", "--data", str(args.data), "--out", str(run), "--max-seconds", seconds]
        _run([*train, "--steps", "10000000", "--no-progress", *args.structnets_flags], out / "train.log")
        ev = [*base, "evaluate", "--model", str(run), "--data", str(args.data), "--out", str(evaluation)]
        _run([*ev, "--save-rollouts", "--no-sinkhorn"], out / "evaluate.log")
    elif system == "lagrangebench":
        command = [str(LB_PYTHON), str(HERE / "lagrangebench" / "train_lb_gns.py"), "--data", str(args.data)]
        _run([*command, "--out", str(out), "--max-seconds", seconds, "--metrics-stride", str(args.stride)], out / "run.log")
    else:
        command = [sys.executable, str(HERE / "peers" / "run_gns_peer.py"), "--data", str(args.data), "--out", str(out)]
        command += ["--max-seconds", seconds, "--threads", str(threads), *args.geoelements_flags]
        _run(command, out / "run.log")
    return collect(system, work)


def collect(system: str, work: Path) -> dict:
    """What a finished run says of itself: its rollouts, training steps and speeds."""
    out = work / system
    if system == "structnets":
        run, evaluation = out / "run", out / "eval"
        trained, timing = json.loads((run / "timing.json").read_text()), json.loads((evaluation / "timing.json").read_text())
        return {
            "rollouts": str(evaluation / "rollouts.npz"), "train_steps": trained["steps"],
            "train_seconds": trained["seconds"], "train_steps_per_s": trained["steps_per_second"],
            "rollout_steps_per_s": timing["rollout_steps_per_second"],
            "model": json.loads((run / "metrics.json").read_text()).get("best"),
            "own_metrics": json.loads((evaluation / "metrics.json").read_text()),
        }  # fmt: skip
    own = json.loads((out / "metrics.json").read_text())
    if system == "lagrangebench":
        return {
            "rollouts": str(out / "rollouts.npz"), "train_steps": own["train"]["steps"],
            "train_seconds": own["train"]["wall_seconds"],
            "train_steps_per_s": own["train"].get("steps_per_second_after_warmup") or own["train"]["steps_per_second"],
            "rollout_steps_per_s": own["rollout"]["steps_per_second"], "own_metrics": own.get("metrics"),
        }  # fmt: skip
    return {
        "rollouts": str(out / "rollouts.npz"), "train_steps": own.get("train_steps"),
        "train_seconds": own.get("train_seconds"),
        "train_steps_per_s": own.get("train_steps_per_s_after_warmup") or own.get("train_steps_per_s"),
        "rollout_steps_per_s": own.get("rollout_steps_per_s"), "own_metrics": own,
    }  # fmt: skip


def score(rollouts: str, args: argparse.Namespace, out: Path) -> dict:
    """LagrangeBench's metrics of a rollouts.npz, by its own code (kept from an earlier
    scoring when ``out`` is newer than the rollouts)."""
    if out.is_file() and out.stat().st_mtime > Path(rollouts).stat().st_mtime:
        return json.loads(out.read_text())
    command = [str(LB_PYTHON), str(HERE / "lagrangebench" / "lb_metrics.py"), "--rollouts", rollouts]
    command += ["--metadata", str(args.data / "metadata.json"), "--out", str(out), "--stride", str(args.stride)]
    _execute(command, out.with_suffix(".log"), args.threads, args.score_cores)
    return json.loads(out.read_text())


def constant_velocity(rollouts: str, out: Path) -> str:
    """The constant-velocity extrapolation of the same rollouts' history, in the same layout."""
    import numpy as np

    from structnets.physics.formats import open_dataset
    from structnets.physics.metrics import periodic_displacement

    dataset = open_dataset(ARGS.data)
    metadata, test = dataset.metadata, dataset.read("test")
    displacement = periodic_displacement(metadata.bounds, metadata.periodic_boundary_conditions)
    import torch

    low = torch.tensor([b[0] for b in metadata.bounds], dtype=torch.float64)
    side = torch.tensor([b[1] - b[0] for b in metadata.bounds], dtype=torch.float64)
    mask = torch.tensor(metadata.periodic_boundary_conditions or [False] * metadata.dim)
    arrays = {}
    for k, trajectory in enumerate(test):
        position = torch.from_numpy(trajectory.position).double()
        velocity = displacement(position[5], position[4])
        steps = position.shape[0] - 6
        guess = position[5] + velocity * torch.arange(1, steps + 1, dtype=torch.float64).view(-1, 1, 1)
        guess = torch.where(mask, low + torch.remainder(guess - low, side), guess)
        arrays[f"predicted_{k}"] = guess.float().numpy()
        arrays[f"truth_{k}"] = trajectory.position[6:]
    path = out / "constant_velocity_rollouts.npz"
    np.savez_compressed(path, **arrays)
    return str(path)


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="a LagrangeBench dataset folder (required)")
    parser.add_argument("--max-seconds", type=float, default=900, help="training wall time per system (default: 900)")
    parser.add_argument("--threads", type=int, default=1, help="threads per system (default: 1)")
    parser.add_argument("--parallel", type=int, default=1, help="systems trained at once (default: 1)")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS), help="(default: all three)")
    parser.add_argument("--stride", type=int, default=10, help="frame stride of Sinkhorn and e_kin (default: 10)")
    parser.add_argument("--structnets-flags", nargs="*", default=[], help="extra flags of simulate train")
    parser.add_argument(
        "--geoelements-flags", nargs="*", default=["--noise-std", "3e-4"],
        help="extra flags of run_gns_peer.py (default: LagrangeBench's TGV GNS noise, --noise-std 3e-4)",
    )  # fmt: skip
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "side_by_side", help="where the runs go")
    parser.add_argument("--score-only", action="store_true", help="score the finished runs already in --work")
    parser.add_argument("--score-cores", help="taskset cores for the scoring, e.g. 1 (default: any)")
    ARGS = args = parser.parse_args()
    work = args.work / f"{args.data.name}-{int(args.max_seconds)}s"
    work.mkdir(parents=True, exist_ok=True)
    record_path = work / "runs.json"
    runs = {}
    if args.score_only:
        runs = {system: collect(system, work) for system in args.systems}
    else:
        with ThreadPoolExecutor(args.parallel) as pool:
            for system, result in zip(args.systems, pool.map(lambda s: train_and_roll_out(s, args, work), args.systems)):
                runs[system] = result
    record_path.write_text(json.dumps(runs, indent=2) + "\n")
    scored = {}
    jobs = {name: run["rollouts"] for name, run in runs.items()}
    jobs["constant velocity"] = constant_velocity(next(iter(jobs.values())), work)
    with ThreadPoolExecutor(1 if args.score_cores else 2) as pool:
        for name, result in zip(jobs, pool.map(lambda n: score(jobs[n], args, work / f"lb_metrics_{n.replace(' ', '_')}.json"), jobs)):
            scored[name] = result
    print(f"{args.data}: {args.max_seconds:.0f} s of training per system, {args.threads} thread(s) each")
    header = f"{'system':<20}{'steps':>8}{'train/s':>9}{'rollout/s':>10}{'MSE5':>11}{'MSE20':>11}{'MSE full':>11}{'Sinkhorn':>11}{'E_kin':>11}"
    print(header)
    for name, metrics in scored.items():
        run = runs.get(name, {})

        def f(key: str, metrics: dict = metrics) -> str:
            value = metrics.get(key)
            return f"{value:>11.3g}" if isinstance(value, (int, float)) else f"{'-':>11}"

        steps = run.get("train_steps", "-")
        train_rate = run.get("train_steps_per_s")
        rollout_rate = run.get("rollout_steps_per_s")
        print(
            f"{name:<20}{steps!s:>8}{(f'{train_rate:.2f}' if train_rate else '-'):>9}"
            f"{(f'{rollout_rate:.1f}' if rollout_rate else '-'):>10}"
            f"{f('mse5')}{f('mse20')}{f('mse')}{f('sinkhorn')}{f('e_kin')}"
        )
    out = HERE / "results" / f"physics_side_by_side_{args.data.name}_{int(args.max_seconds)}s.json"
    out.parent.mkdir(exist_ok=True)
    settings = {"data": str(args.data), "max_seconds": args.max_seconds, "threads": args.threads, "parallel": args.parallel, "stride": args.stride}
    out.write_text(json.dumps({"settings": settings, "runs": runs, "lagrangebench_metrics": scored}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
