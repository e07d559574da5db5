"""Teach a Tree-LSTM to evaluate arithmetic from Python syntax trees, then test it deeper.

Random expressions over the digits with + - * (``((3 - 7) * 4) + 9``) are parsed by Python's
``ast`` module; one N-ary Tree-LSTM cell, applied at every node from the leaves up, learns
to put each sub-expression's value modulo 10 into its state. Trained on operator depths
1-3 and tested on depths 1-8, it shows how far composing one learned cell generalises to
deeper programs. About a minute and a half on 2 CPU cores.

    python examples/arithmetic_trees.py --out runs/arithmetic
"""

import argparse
import dataclasses
from pathlib import Path

from structnets.text.arithmetic import ArithmeticConfig, expression_tree, random_expression, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-depth", type=int, default=3)
    parser.add_argument("--test-depth", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train-examples", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=Path("runs/arithmetic"))
    args = parser.parse_args()

    import random

    expression = random_expression(3, random.Random(1))
    tree, value = expression_tree(expression)
    print(f"an example: {expression} = {eval(expression)}, mod 10 = {value}")  # noqa: S307 (our own digits and + - *)
    print(f"its tree: {len(tree)} nodes, tokens {tree.tokens}")

    config = ArithmeticConfig(
        train_depth=args.train_depth, test_depth=args.test_depth, train_examples=args.train_examples
    )
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=args.epochs))
    metrics = train(config, args.out)
    for depth, accuracy in metrics["accuracy_by_depth"].items():
        marker = "  (trained)" if int(depth) <= args.train_depth else ""
        print(f"depth {depth}: {accuracy:.3f}{marker}")
    print(f"plot: {args.out / 'accuracy_by_depth.png'}")


if __name__ == "__main__":
    main()
