"""Arithmetic from syntax trees: accuracy against operator depth, trained shallow.

Runs ``structnets trees arithmetic`` with its defaults (20,000 expressions of depths 1-3,
N-ary Tree-LSTM, embeddings 32, hidden 128, Adam 2e-3 with cosine decay, 20 epochs, the
epoch with the best accuracy on 1,000 held-out expressions of depths 1-3 kept) and
reports the accuracy of the value modulo 10 at depths 1-8 (chance: 0.1). There is no peer
figure for this exact task; the reference is chance and the trained depths.

    python benchmarks/arithmetic_depth.py [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from structnets.text.arithmetic import ArithmeticConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=ArithmeticConfig().train.epochs)
    parser.add_argument("--train-examples", type=int, default=ArithmeticConfig().train_examples)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "arithmetic_depth.json")
    args = parser.parse_args()
    defaults = ArithmeticConfig()
    engine = dataclasses.replace(defaults.train, seed=args.seed, epochs=args.epochs, progress=False)
    config = dataclasses.replace(defaults, train_examples=args.train_examples, train=engine)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train(config, Path(tmp))
        metrics["train_seconds"] = json.loads((Path(tmp) / "timing.json").read_text())["train_seconds"]
    print(
        f"trained on depths 1-{config.train_depth} (best epoch {metrics['best_epoch']}, held-out accuracy "
        f"{metrics['val_accuracy']:.3f}); chance {metrics['chance']:.1f}; {metrics['train_seconds']:.0f} s"
    )
    for depth, accuracy in metrics["accuracy_by_depth"].items():
        print(f"  depth {depth}: {accuracy:.3f}")
    metrics.pop("history")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    main()
