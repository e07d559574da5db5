"""Learning to Execute: the authors' configuration against this library's default model, same programs and budget.

Zaremba & Sutskever's table (arXiv:1410.4615) could not be read here (the stored copies of the
paper hold its opening sections only), so, as the issue asks, the reference row is the
authors' configuration run by us. It is taken from their code, ``wojciechz/learning_to_execute``
``main.lua``:

* a 2-layer LSTM of 400 units, embeddings of 400, every parameter drawn uniformly from
  [-0.08, 0.08], no attention: ``--attention none --no-input-feeding --no-bidirectional``;
* plain SGD at learning rate 0.5, the gradient's norm clipped at 5, batches of 100 programs;
* target length 6 and nesting 3, the blend curriculum, moving up at a held-out accuracy of 0.95
  or after 5 validations without gain; a validation every 100 steps (theirs runs every 100
  updates, half an epoch of 200).

What differs, and cannot be helped without their Torch 7 code:

* their one LSTM reads the program and then writes the output; ours is an encoder-decoder
  whose decoder starts from the encoder's final states (two LSTMs, Sutskever et al. 2014's
  form), so it has twice the recurrent weights;
* they stream programs through truncated back-propagation of 50 characters; ours trains each
  program whole;
* at the target level they multiply the learning rate by 0.8 when the curriculum cannot move;
  ours keeps it.

Beside it runs ``structnets sequences execute`` at its defaults: a bidirectional 2-layer
encoder of 400 units with Luong's general attention and input feeding, Adam at 1e-3. Each
run trains for ``--max-seconds`` on one pinned core with one thread, on the same seed (so
the same held-out and test programs); then each fills the table of lengths 1..7 and nesting
1..4 (one beyond the target each way). The script prints the tables side by side and writes
``benchmarks/results/learning_to_execute.json``.

    python benchmarks/learning_to_execute.py --max-seconds 3600 --cores 0 1   # 70-80 minutes on 2 idle cores

``--models chars tree`` asks instead whether structure helps: the same ``Seq2Seq`` decoder
reading the program's characters or (``--encoder tree``) its Python syntax tree, on the same
programs; ``--seeds`` repeats every run and the table gives mean and spread, and ``--flags``
passes further flags to every run (a smaller model, for a CPU budget):

    python benchmarks/learning_to_execute.py --models chars tree --seeds 1 2 --length 2 --nesting 2 \
        --curriculum mix --max-seconds 480 --eval-every 250 \
        --flags="--hidden-size 128 --num-layers 1 --batch-size 64 --lr 3e-3" \
        --out benchmarks/results/execute_sequence_vs_tree.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from core_speed import _cpu_name  # noqa: E402  (benchmarks run as scripts from this folder)
from sst_sequence_vs_tree import _run_all  # noqa: E402

from structnets.sequences.execute import format_table

PAPER_NOTE = (
    "The paper's own table of per-character accuracy by length, nesting and curriculum could not be read: the "
    "stored copies of arXiv:1410.4615 (arxiv-vanity.com, groundai.com, deepai.org, fdocuments.in) hold only its "
    "opening sections. The reference row is therefore the authors' configuration from their code "
    "(wojciechz/learning_to_execute, main.lua), run here under the same budget as ours."
)
MODELS = {
    "authors": {
        "name": "authors' configuration (2 x 400 LSTM, no attention, SGD 0.5)",
        "flags": [
            "--attention", "none", "--no-input-feeding", "--no-bidirectional", "--embedding-size", "400",
            "--hidden-size", "400", "--num-layers", "2", "--optimizer", "sgd", "--lr", "0.5", "--init-range", "0.08",
        ],
    },
    "ours": {
        "name": "structnets default (2 x 400 biLSTM encoder, general attention, Adam 1e-3)",
        "flags": [],
    },
    "chars": {"name": "characters (Seq2Seq)", "flags": ["--encoder", "sequence"]},
    "tree": {"name": "syntax tree (Tree2Seq)", "flags": ["--encoder", "tree"]},
}  # fmt: skip
MEASURES = ("char_accuracy", "greedy_exact", "beam_exact")


def _command(model: str, seed: int, args: argparse.Namespace, out: Path) -> list[str]:
    command = ["sequences", "execute", "--length", str(args.length), "--nesting", str(args.nesting)]
    command += ["--curriculum", args.curriculum, "--batch-size", "100", "--clip-grad-norm", "5"]
    command += ["--threshold", "0.95", "--stall", "5", "--eval-every", str(args.eval_every)]
    command += ["--steps", "1000000", "--max-seconds", str(args.max_seconds), "--seed", str(seed)]
    command += ["--eval-programs", str(args.eval_programs), "--val-programs", str(args.val_programs)]
    command += ["--num-threads", "1", "--no-progress", *MODELS[model]["flags"], *shlex.split(args.flags)]
    return [*command, "--out", str(out)]


def _mean_table(tables: list[dict]) -> dict:
    """The cell-by-cell mean of ``{length: {nesting: value}}`` tables (None where a run has none)."""
    return {
        length: {
            nesting: None if any(t[length][nesting] is None for t in tables)
            else statistics.fmean(t[length][nesting] for t in tables)
            for nesting in row
        }
        for length, row in tables[0].items()
    }  # fmt: skip


def _spread(values: list[float | None]) -> dict:
    known = [v for v in values if v is not None]
    if not known:
        return {"mean": None, "std": None, "values": values}
    std = statistics.stdev(known) if len(known) > 1 else 0.0
    return {"mean": statistics.fmean(known), "std": std, "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=6, help="target length, the authors' (default: 6)")
    parser.add_argument("--nesting", type=int, default=3, help="target nesting, the authors' (default: 3)")
    parser.add_argument("--curriculum", default="blend", help="curriculum, the authors' (default: blend)")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="training budget per run (default: 3600)")
    parser.add_argument("--eval-every", type=int, default=100, help="steps between validations (default: 100)")
    parser.add_argument("--val-programs", type=int, default=500, help="held-out programs per level (default: 500)")
    parser.add_argument("--eval-programs", type=int, default=200, help="test programs per table cell (default: 200)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="seeds, a run of each model per seed (default: 0)"
    )
    parser.add_argument("--flags", default="", help="further flags for every run, one string (default: none)")
    available = sorted(os.sched_getaffinity(0))
    parser.add_argument(
        "--cores", type=int, nargs="+", default=available[:2],
        help=f"cores to pin the runs to, one run per core (default: {' '.join(map(str, available[:2]))})",
    )  # fmt: skip
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=["authors", "ours"],
        help="runs: authors ours (the default), or chars tree",
    )  # fmt: skip
    parser.add_argument("--runs", type=Path, default=None, help="keep the run directories here (default: temporary)")
    parser.add_argument(
        "--collect", action="store_true",
        help="train nothing: read the finished run directories <model>_seed<seed> under --runs",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "learning_to_execute.json",
        help="the results JSON (default: benchmarks/results/learning_to_execute.json)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.collect and args.runs is None:
        raise SystemExit("--collect reads the run directories under --runs: give --runs")
    bad = sorted(set(args.cores) - set(available))
    if bad:
        raise SystemExit(f"--cores {' '.join(map(str, bad))}: not among this process's cores {available}")

    with tempfile.TemporaryDirectory() as scratch:
        runs = (args.runs or Path(scratch)).resolve()
        runs.mkdir(parents=True, exist_ok=True)
        python = os.path.normpath(os.path.abspath(sys.executable))  # the venv's, not the interpreter it links to
        jobs = {
            f"{m}_seed{seed}": [python, "-m", "structnets", *_command(m, seed, args, runs / f"{m}_seed{seed}")]
            for m in args.models
            for seed in args.seeds
        }
        started = time.time()
        if args.collect:  # the runs are there already: read them (no core or wall time known)
            done = {name: {"command": shlex.join(job)} for name, job in jobs.items()}
        else:
            done = _run_all(jobs, args.cores, runs)
        results = {}
        for model in args.models:
            seeds = []
            for seed in args.seeds:
                name = f"{model}_seed{seed}"
                metrics = json.loads((runs / name / "metrics.json").read_text())
                timing = json.loads((runs / name / "timing.json").read_text())
                seeds.append({
                    **done[name],
                    "seed": seed,
                    **{key: metrics[key] for key in (*MEASURES, "at_target", "final_level", "train_steps", "stop")},
                    "validation_curve": metrics["validation_curve"],
                    "train_seconds": timing["train_seconds"],
                    "eval_seconds": timing["eval_seconds"],
                })  # fmt: skip
            results[model] = {
                "name": MODELS[model]["name"],
                **{measure: _mean_table([run[measure] for run in seeds]) for measure in MEASURES},
                "at_target": {measure: _spread([run["at_target"][measure] for run in seeds]) for measure in MEASURES},
                "train_steps": _spread([run["train_steps"] for run in seeds]),
                "runs": seeds,
            }

    machine = f"{_cpu_name()}, one pinned core and one thread per run, cores {' '.join(map(str, args.cores))}"
    print(f"\nLearning to execute, target L={args.length} N={args.nesting}, {args.curriculum}, "
          f"{args.max_seconds:g} s per run, on {machine}")  # fmt: skip
    for row in results.values():
        at = row["at_target"]
        levels = ", ".join(f"L={r['final_level']['length']} N={r['final_level']['nesting']}" for r in row["runs"]
                           if r["final_level"])  # fmt: skip
        print(f"\n{row['name']}, {len(row['runs'])} seed(s): {row['train_steps']['mean']:.0f} steps"
              + (f", curriculum ended at {levels}" if levels else "")
              + "; at target: " + ", ".join(f"{m} {at[m]['mean']:.3f} ± {at[m]['std']:.3f}" for m in MEASURES
                                             if at[m]["mean"] is not None))  # fmt: skip
        print("per-character accuracy, teacher forced (length x nesting" + (", mean over seeds" if
              len(row["runs"]) > 1 else "") + "):")  # fmt: skip
        print(format_table(row["char_accuracy"]))
    print(f"\n{PAPER_NOTE}")

    record = {
        "machine": machine,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "target": {"length": args.length, "nesting": args.nesting},
        "curriculum": args.curriculum,
        "max_seconds": args.max_seconds,
        "seeds": args.seeds,
        "flags": args.flags,
        "eval_programs": args.eval_programs,
        "wall_seconds": time.time() - started,
        "results": results,
        "note": PAPER_NOTE,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
