"""Learning to evaluate arithmetic from the syntax tree: a program-structured task.

Expressions with ``+``, ``-``, ``*`` and the literals 0-9 are parsed by Python's ``ast``
module into trees (:func:`structnets.trees.tree_from_python`); an N-ary Tree-LSTM reads
each tree bottom-up and predicts the expression's value modulo 10 at the root. It trains
on shallow expressions (operator depth up to ``train_depth``) and is tested at every depth
up to ``test_depth``, so the table shows how far a network that composes the same cell at
every node generalises to deeper programs than it saw.

    structnets trees arithmetic --train-depth 3 --test-depth 8 --out runs/arithmetic

writes ``metrics.json`` (``accuracy_by_depth``), ``model.pt`` and ``accuracy_by_depth.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..graphs.trees import Tree, Vocabulary, batch_trees, tree_from_python
from ..models import TreeClassifier
from ..train.checkpoint import clip_gradients

__all__ = ["ArithmeticConfig", "random_expression", "expression_tree", "train", "register"]

OPERATORS = ("+", "-", "*")
MODULUS = 10


def random_expression(depth: int, rng: random.Random) -> str:
    """An expression whose operator nesting is exactly ``depth`` (0: a single digit).

    One operand of each operator carries the full remaining depth, on a random side; the
    other gets a random smaller depth. Sub-expressions are parenthesised, so the tree
    Python parses is the one generated.
    """
    if depth == 0:
        return str(rng.randrange(10))
    deep = random_expression(depth - 1, rng)
    other = random_expression(rng.randrange(depth), rng)
    left, right = (deep, other) if rng.random() < 0.5 else (other, deep)
    return f"({left} {rng.choice(OPERATORS)} {right})"


def expression_tree(expression: str) -> tuple[Tree, int]:
    """The expression's syntax tree and its value modulo 10 (Python's ``%``: 0-9)."""
    tree = tree_from_python(expression)
    # The value comes from the parsed tree, not eval: only + - * on integer literals.
    value = _evaluate(expression)
    return tree, value % MODULUS


def _evaluate(expression: str) -> int:
    import ast

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp):
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
        raise ValueError(f"{expression!r}: only + - * and integer literals are supported, found {ast.dump(node)[:60]}")

    return walk(ast.parse(expression, mode="eval").body)


@dataclasses.dataclass(frozen=True)
class ArithmeticConfig:
    train_depth: int = 3
    test_depth: int = 8
    train_examples: int = 20000
    test_examples_per_depth: int = 500
    embedding_size: int = 32
    hidden_size: int = 128
    epochs: int = 20
    batch_size: int = 100
    lr: float = 2e-3
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not 1 <= self.train_depth <= self.test_depth:
            raise ValueError(f"need 1 <= train_depth <= test_depth, got {self.train_depth} and {self.test_depth}")


def _dataset(depths: list[int], count: int, rng: random.Random) -> tuple[list[Tree], torch.Tensor, list[int]]:
    trees, values, depth_of = [], [], []
    for k in range(count):
        depth = depths[k % len(depths)]
        tree, value = expression_tree(random_expression(depth, rng))
        trees.append(tree)
        values.append(value)
        depth_of.append(depth)
    return trees, torch.tensor(values), depth_of


def train(config: ArithmeticConfig, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    device = torch.device(config.device)
    train_trees, train_values, _ = _dataset(list(range(1, config.train_depth + 1)), config.train_examples, rng)
    vocabulary = Vocabulary.build(train_trees)
    model = TreeClassifier(len(vocabulary), MODULUS, config.embedding_size, config.hidden_size, num_children=3).to(
        device
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    batches = [
        (
            batch_trees(train_trees[k : k + config.batch_size], vocabulary).to(device),
            train_values[k : k + config.batch_size].to(device),
        )
        for k in range(0, len(train_trees), config.batch_size)
    ]
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs * len(batches))
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    started = time.perf_counter()
    for epoch in tqdm(range(1, config.epochs + 1), desc="arithmetic", unit="epoch", disable=not progress):
        model.train()
        total = 0.0
        for k in torch.randperm(len(batches), generator=generator).tolist():
            batch, values = batches[k]
            loss = F.cross_entropy(model(batch)[batch.roots], values)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(model, 5.0)
            optimizer.step()
            scheduler.step()
            total += loss.item()
        history.append({"epoch": epoch, "train_loss": total / len(batches)})

    model.eval()
    accuracy = {}
    with torch.no_grad():
        for depth in range(1, config.test_depth + 1):
            trees, values, _ = _dataset([depth], config.test_examples_per_depth, rng)
            batch = batch_trees(trees, vocabulary).to(device)
            predicted = model(batch)[batch.roots].argmax(-1).cpu()
            accuracy[str(depth)] = float((predicted == values).float().mean())
    metrics = {
        "accuracy_by_depth": accuracy,
        "train_depths": list(range(1, config.train_depth + 1)),
        "chance": 1 / MODULUS,
        "train_seconds": time.perf_counter() - started,
        "history": history,
        "config": dataclasses.asdict(config),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    torch.save(
        {"state_dict": model.state_dict(), "config": dataclasses.asdict(config), "vocabulary": vocabulary.tokens},
        out_dir / "model.pt",
    )
    _plot(out_dir / "accuracy_by_depth.png", accuracy, config.train_depth)
    return metrics


def _plot(path: Path, accuracy: dict[str, float], train_depth: int) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    depths = [int(d) for d in accuracy]
    ax.plot(depths, list(accuracy.values()), "o-", label="Tree-LSTM")
    ax.axhline(1 / MODULUS, color="grey", ls=":", label="chance")
    ax.axvspan(0.5, train_depth + 0.5, color="#dddddd", label="trained on")
    ax.set_xlabel("operator depth")
    ax.set_ylabel("accuracy (value mod 10)")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def register(actions: argparse._SubParsersAction) -> None:
    """Adds ``arithmetic`` under ``structnets trees``."""
    parser = actions.add_parser("arithmetic", help="learn to evaluate + - * expressions mod 10 from their syntax trees")
    defaults = ArithmeticConfig()
    for field in dataclasses.fields(ArithmeticConfig):
        if field.name == "device":
            continue
        kind = type(getattr(defaults, field.name))
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=getattr(defaults, field.name))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ArithmeticConfig)}
    metrics = train(ArithmeticConfig(**values), args.out, progress=not args.no_progress)
    print(f"depth  accuracy  (trained on depths 1-{args.train_depth})")
    for depth, value in metrics["accuracy_by_depth"].items():
        print(f"{depth:>5}  {value:.3f}")
    print(f"wrote {args.out}/metrics.json, model.pt, accuracy_by_depth.png")
    return 0
