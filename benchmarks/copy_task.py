"""Copy task (Graves et al. 2014): train on lengths 1-10, test at length 20.

Trains ``structnets memory`` (a DNC by default, ``--addressing ntm`` for the NTM) with
gradient clipping and a finite check on every step, keeping the weights with the best loss
on a fixed validation batch (every 250 steps), then reports per-bit accuracy at twice the
longest training length and at every length in between. Writes
``benchmarks/results/copy_task.json`` and, beside it, the training curve and the read and
write weightings of one length-20 sequence.

    python benchmarks/copy_task.py                 # CPU, about 10 minutes
    python benchmarks/copy_task.py --device cuda   # the same on a GPU (small steps: expect no speed-up)

Reference: Graves et al. (2014, fig. 4) show NTMs trained on lengths up to 20 copying
length 30-50 sequences with a few wrong bits, and LSTMs without memory failing beyond 20;
per-bit accuracy 1.0 at the training lengths and close to it at twice the length is what a
model that learned to store and replay achieves.
"""

import argparse
import dataclasses
import json
import platform
import shutil
from pathlib import Path

import torch
from core_speed import _cpu_name  # noqa: E402  (benchmarks run as scripts from this folder)

from structnets.models.memory_network import Addressing
from structnets.sequences.copy_recall import MemoryTaskConfig, Task, run

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addressing", choices=[a.value for a in Addressing], default="dnc")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--max-train-seconds", type=float, default=540.0)
    parser.add_argument("--max-train-length", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-sequences", type=int, default=1000)
    parser.add_argument("--ema-decay", type=float, default=None, help="keep an EMA of the weights (default: none)")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/copy-benchmark"))
    parser.add_argument("--json", type=Path, default=HERE / "results" / "copy_task.json")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    train = dataclasses.replace(
        MemoryTaskConfig().train,
        steps=args.steps,
        max_seconds=args.max_train_seconds,
        seed=args.seed,
        device=args.device,
        ema_decay=args.ema_decay,
        progress=not args.no_progress,
    )
    config = MemoryTaskConfig(
        task=Task.COPY,
        addressing=Addressing(args.addressing),
        max_train_size=args.max_train_length,
        eval_sequences=args.eval_sequences,
        train=train,
    )
    outcome = run(config, args.out_dir)
    metrics, timing = outcome.metrics, outcome.timing
    test, trained = metrics["test"], metrics["train_max"]
    print(
        f"ours ({config.addressing.name}): per-bit accuracy {test['bit_accuracy']:.4f} at length {test['size']} "
        f"(whole sequences right: {test['sequence_accuracy']:.3f}); {trained['bit_accuracy']:.4f} at length "
        f"{trained['size']}; {metrics['train_steps']} steps in {timing['train_seconds']:.0f} s "
        f"(weights kept from step {metrics['validation']['step']}); "
        f"finite throughout: {metrics['finite']}; steps clipped: {metrics['clipped_steps']}"
    )
    print("reference: Graves et al. 2014: NTM copies beyond its training lengths with few bit errors")
    stem = args.json.with_suffix("")
    for picture in ("training.png", "weightings.png"):
        shutil.copyfile(args.out_dir / picture, f"{stem}_{picture}")
    environment = {
        "torch": torch.__version__,
        "threads": config.num_threads,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else _cpu_name(),
        "machine": platform.machine(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"environment": environment, "metrics": metrics, "timing": timing}, indent=2) + "\n"
    )
    print(f"wrote {args.json}, {stem}_training.png, {stem}_weightings.png")


if __name__ == "__main__":
    main()
