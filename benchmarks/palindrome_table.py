"""Palindrome benchmark: all six cell/direction combinations with default settings.

Trains Elman, GRU and LSTM networks, each unidirectional and bidirectional, on lengths
1-10 and evaluates them on fresh sequences of every length up to 40. Writes one JSON
file with every run's metrics and timings and prints a markdown table of accuracy at
selected lengths plus training time.

    python benchmarks/palindrome_table.py
    python benchmarks/palindrome_table.py --out-dir runs/palindrome-table --json results.json
    python benchmarks/palindrome_table.py --steps 5 --eval-per-length 20 --json /tmp/p.json   # a smoke test

Each run's directory (metrics.json, timing.json, model.pt, accuracy_by_length.png) is
``OUT_DIR/<cell>-<uni|bi>``. Expect about 15 minutes on a 2-core CPU.
"""

import argparse
import dataclasses
import json
import logging
import platform
from pathlib import Path

import torch

from structnets.core.cells import ChainCell
from structnets.sequences.palindrome import SUMMARY_LENGTHS, PalindromeConfig, run

HERE = Path(__file__).resolve().parent
CONFIGS = [(cell, bidirectional) for cell in ChainCell for bidirectional in (False, True)]


def markdown_table(results: dict[str, dict]) -> str:
    """Rows: configurations; columns: accuracy at SUMMARY_LENGTHS and train seconds."""
    header = "| config | " + " | ".join(f"L={length}" for length in SUMMARY_LENGTHS) + " | train s |"
    lines = [header, "|---|" + "---:|" * (len(SUMMARY_LENGTHS) + 1)]
    for name, result in results.items():
        accuracy = result["metrics"]["accuracy_by_length"]
        cells = " | ".join(f"{accuracy[str(length)]:.3f}" for length in SUMMARY_LENGTHS)
        lines.append(f"| {name} | {cells} | {result['timing']['train_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    defaults = PalindromeConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path("runs/palindrome-table"), help="per-run directories")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "palindrome.json", help="combined results")
    parser.add_argument("--steps", type=int, default=defaults.train.steps, help="training steps (default: %(default)s)")
    parser.add_argument(
        "--eval-per-length", type=int, default=defaults.eval_per_length, help="held-out sequences per length"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    results: dict[str, dict] = {}
    for cell, bidirectional in CONFIGS:
        name = f"{cell.value}-{'bi' if bidirectional else 'uni'}"
        train = dataclasses.replace(defaults.train, steps=args.steps, progress=not args.no_progress)
        config = PalindromeConfig(
            cell=cell, bidirectional=bidirectional, eval_per_length=args.eval_per_length, train=train
        )
        outcome = run(config, args.out_dir / name)
        results[name] = {"metrics": outcome.metrics, "timing": outcome.timing}
        print(f"{name}: done in {outcome.timing['train_seconds']:.0f} s", flush=True)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    environment = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    args.json.write_text(json.dumps({"environment": environment, "runs": results}, indent=2) + "\n")
    print(markdown_table(results))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
