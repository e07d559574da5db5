"""Sentiment on the Stanford Sentiment Treebank with Tree-LSTMs (Tai et al. 2015).

``structnets trees train --data train.txt --dev dev.txt --out RUN`` reads PTB-bracketed
trees (SST's format: every phrase labelled 0-4), embeds the leaves' words, runs a Tree-LSTM
over every batch of trees as one forest under the core's topological schedule (all
trees' leaves first, then level by level up to the roots), and trains a softmax on every
node's state with the loss at every labelled node, as in the paper: Adagrad, one call of
the engine, the epoch with the best dev root accuracy kept. It writes ``RUN/model.pt``,
``RUN/metrics.json`` and ``RUN/timing.json``.

``structnets trees evaluate --model RUN --data FILE.txt --out DIR`` writes
``DIR/metrics.json`` with ``fine_accuracy`` (5 classes at the root) and
``binary_accuracy`` (roots labelled 2 dropped, 0-1 negative and 3-4 positive, as in Tai et
al.; the prediction is whichever side has more probability under the 5-class model).

Words never seen in training map to ``<unk>`` (id 0, a learned vector); evaluation reports
how many there were. Pretrained vectors cannot be downloaded here, so embeddings are
learned from scratch by default; ``--vectors FILE`` reads the common text format (a word
and its numbers per line, as GloVe and word2vec write it) for the words it covers. A vectors
file with a malformed line, a NaN or infinite value or a word given twice is refused with
its file and line (:func:`structnets.text.sst.read_vectors`), as is one that covers no word.
A training loss that turns NaN or infinite stops the run with the step named (the engine),
and a model whose outputs are not finite is never scored: the error names the tree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..graphs.trees import Tree, TreeBatch, Vocabulary, batch_trees
from ..models import TreeClassifier
from ..models.tree_lstm import TreeCell, TreeClassifierConfig
from ..train.checkpoint import RunDirectory, atomic_write, load_model, open_run
from ..train.config import add_arguments, from_args, shared_fields, to_dict
from ..train.distributed import distributed, shuffled
from ..train.engine import TrainConfig, fit, seed_everything
from .sst import NUM_CLASSES, load_vectors, read_labelled_trees, root_metrics

__all__ = ["SentimentConfig", "train", "evaluate", "load_run", "register"]

TASK = "trees"


@dataclasses.dataclass(frozen=True)
class SentimentConfig:
    """One training run. Sizes follow Tai et al.'s constituency Tree-LSTM where the CPU allows.

    Attributes:
        data: training trees, PTB-bracketed, one per line; none reads sst/train.txt in the data directory.
        dev: dev trees, whose root accuracy picks the epoch kept; none reads sst/dev.txt there.
        data_dir: the data directory; none for $STRUCTNETS_DATA_DIR.
        cell: the tree cell: nary (binary Tree-LSTM), childsum (Tree-LSTM) or childsum-gru.
        embedding_size: size of the word embedding.
        hidden_size: state size of the tree cell.
        dropout: dropout of the cell's inputs and of the states the softmax reads.
        embedding_lr_scale: the embeddings' learning rate relative to lr (they take no weight decay).
        vectors: word vectors in the text format (a word and its numbers per line) to start from.
        min_count: training occurrences a word needs to get its own embedding (else <unk>).
        limit: use the first N training and dev trees.
        train: the engine's settings (Adagrad at lr with weight_decay, batch 25, 20 epochs).
    """

    data: Path | None = None
    dev: Path | None = None
    data_dir: Path | None = None
    cell: TreeCell = TreeCell.NARY
    embedding_size: int = 100
    hidden_size: int = 150
    dropout: float = 0.5
    embedding_lr_scale: float = 1.0
    vectors: Path | None = None
    min_count: int = 1
    limit: int | None = None
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(epochs=20, batch_size=25, lr=0.05, weight_decay=1e-4, clip_grad_norm=5.0)
    )

    def __post_init__(self) -> None:
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.embedding_lr_scale <= 0 or self.min_count < 1 or (self.limit is not None and self.limit < 1):
            raise ValueError("embedding_lr_scale, min_count and limit must be positive")

    def model_config(self, vocabulary_size: int) -> TreeClassifierConfig:
        return shared_fields(TreeClassifierConfig, self, vocabulary_size=vocabulary_size, num_classes=NUM_CLASSES)


def _read(path: Path | None, split: str, data_dir: Path | None, cell: TreeCell, limit: int | None) -> list[Tree]:
    trees = read_labelled_trees(path, split, data_dir, limit)
    for tree in trees:
        if tree.max_children > 2 and cell is TreeCell.NARY:
            raise ValueError(f"{tree.source}: a node has {tree.max_children} children; the binary Tree-LSTM takes 2")
    return trees


def _node_loss(model: nn.Module, batch: TreeBatch) -> torch.Tensor:
    """Cross-entropy averaged over every labelled node (unlabelled nodes carry y = -1)."""
    return F.cross_entropy(model(batch), batch.y, ignore_index=-1)


def adagrad(model: nn.Module, config: Any) -> Callable[[Any], torch.optim.Optimizer]:
    """Adagrad, as Tai et al., for ``structnets trees`` and ``text classify``: ``config.train``'s lr and weight
    decay, except for ``model.embedding``, which learns at ``config.embedding_lr_scale`` times the rate, without
    weight decay."""
    embedding = list(model.embedding.parameters())
    others = [p for name, p in model.named_parameters() if not name.startswith("embedding.")]
    lr = config.train.lr

    def make(_parameters) -> torch.optim.Optimizer:
        groups = [
            {"params": others, "weight_decay": config.train.weight_decay},
            {"params": embedding, "lr": lr * config.embedding_lr_scale, "weight_decay": 0.0},
        ]
        return torch.optim.Adagrad(groups, lr=lr)

    return make


_DIVERGED = "; training diverged (try a lower --lr, or --clip-grad-norm)"


def _outputs(model: nn.Module, batch: TreeBatch, trees: list[Tree], hint: str = "") -> torch.Tensor:
    """The model's logits on a batch; a ValueError naming the first tree where any is NaN or infinite.

    A model whose weights hold NaN or infinity scores an accuracy all the same (argmax picks
    something), so the metrics of such a model are refused here rather than reported. The
    engine stops on a non-finite loss, but the last step's update can still break the
    weights after a finite loss; validation then finds it here.
    """
    logits = model(batch)
    bad = ~torch.isfinite(logits).all(-1)
    if bool(bad.any()):
        first = trees[int(batch.batch[bad.nonzero()[0, 0]])]
        raise ValueError(
            f"{first.source}: the model's outputs are not finite on this tree ({int(bad.sum())} of "
            f"{bad.numel()} nodes in all): its weights hold NaN or infinity{hint}"
        )
    return logits


def _evaluate(model: nn.Module, batch: TreeBatch, trees: list[Tree], hint: str = "") -> dict[str, Any]:
    metrics: dict[str, Any] = root_metrics(_outputs(model, batch, trees, hint), batch)
    metrics["unknown_tokens"] = batch.unknown_tokens
    metrics["tokens"] = int((batch.x >= 0).sum())
    return metrics


def train(config: SentimentConfig, out: Path) -> dict[str, Any]:
    """Trains, keeps the epoch with the best dev root accuracy; writes ``model.pt``, ``metrics.json``, ``timing.json``."""
    out = RunDirectory.check_target(out)
    seed_everything(config.train.seed)
    device = torch.device(config.train.device)
    train_trees = _read(config.data, "train", config.data_dir, config.cell, config.limit)
    dev_trees = _read(config.dev, "dev", config.data_dir, config.cell, config.limit)
    vocabulary = Vocabulary.build(train_trees, config.min_count)
    model = TreeClassifier(config.model_config(len(vocabulary))).to(device)
    if config.vectors is not None:
        load_vectors(model.embedding, config.vectors, vocabulary)
    # Batches are built once (their levels are then cached); each epoch visits them in a new order.
    order = torch.randperm(len(train_trees), generator=torch.Generator().manual_seed(config.train.seed)).tolist()
    size = config.train.batch_size
    batches = [
        batch_trees([train_trees[i] for i in order[k : k + size]], vocabulary).to(device)
        for k in range(0, len(order), size)
    ]
    dev_batch = batch_trees(dev_trees, vocabulary).to(device)

    def validate(model: nn.Module) -> dict[str, float]:
        metrics = root_metrics(_outputs(model, dev_batch, dev_trees, _DIVERGED), dev_batch)
        # binary_accuracy is None when no dev root is polar; the history then leaves it out
        keys = ("fine_accuracy", "binary_accuracy", "node_fine_accuracy")
        return {f"dev_{k}": metrics[k] for k in keys if metrics[k] is not None}

    with distributed(device) as here:
        run = RunDirectory.start(out, task=TASK) if here.main else None
        result = fit(
            model,
            _node_loss,
            shuffled(batches, config.train.seed),
            config.train,
            validate=validate,
            monitor="dev_fine_accuracy",
            maximize=True,
            optimizer=adagrad(model, config),
            run_dir=out if here.main else None,
            description=TASK,
        )
        with torch.no_grad():
            dev = _evaluate(result.model, dev_batch, dev_trees, _DIVERGED)
        metrics = {
            "dev": dev,
            "best_epoch": result.best["epoch"] if result.best else None,
            "epochs": result.epochs,
            "stop": result.stop.value,
            "train_trees": len(train_trees),
            "train_nodes": sum(len(t) for t in train_trees),
            "vocabulary": len(vocabulary),
            "history": result.history,
            "config": to_dict(config),
        }
        if run is not None:
            run.write_json("metrics.json", metrics)
            run.write_json("timing.json", result.timing())
            run.save_model(result.model, task_config=config, extra={"vocabulary": vocabulary.tokens})
            run.finish()
    return metrics


def load_run(path: Path, map_location: str | torch.device = "cpu") -> tuple[TreeClassifier, Vocabulary]:
    """The trained model of a finished ``trees`` run and its vocabulary."""
    return load_vocabulary_run(path, TASK, map_location)


def load_vocabulary_run(
    path: Path, task: str, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, Vocabulary]:
    """The model of a finished run of ``task`` saved with its ``vocabulary`` (``trees``, ``text classify``)."""
    model, checkpoint = load_model(open_run(path, task=task), task=task, map_location=map_location)
    return model, Vocabulary(list(checkpoint.extra["vocabulary"]))


def evaluate_run(
    model_dir: Path, data: Path, out: Path, task: str, metrics_of: Callable[[nn.Module, Vocabulary], dict[str, Any]]
) -> dict[str, Any]:
    """Loads the run of ``task`` in ``model_dir``, scores it with ``metrics_of(model, vocabulary)`` (gradients off)
    and writes the metrics, with ``data`` named, to ``out/metrics.json``; ``out`` may not be the run itself."""
    out = RunDirectory.check_target(out)
    if out.resolve() == open_run(model_dir, task=task).resolve():
        raise ValueError(f"--out {out} is the run directory itself; write the evaluation elsewhere")
    model, vocabulary = load_vocabulary_run(model_dir, task)
    with torch.no_grad():
        metrics = metrics_of(model, vocabulary)
    metrics["data"] = str(data)
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def evaluate(model_dir: Path, data: Path, out: Path) -> dict[str, Any]:
    """Root accuracies of a trained model on a tree file; writes ``out/metrics.json``."""

    def metrics_of(model: nn.Module, vocabulary: Vocabulary) -> dict[str, Any]:
        trees = _read(data, "dev", None, model.config.cell, None)
        return _evaluate(model, batch_trees(trees, vocabulary), trees)

    return evaluate_run(model_dir, data, out, TASK, metrics_of)


# ---------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("trees", help="Tree-LSTM sentiment on the Stanford Sentiment Treebank")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    tr = actions.add_parser("train", help="train on PTB-bracketed trees; keeps the best dev epoch")
    add_arguments(tr, SentimentConfig)
    tr.add_argument("--out", required=True, type=Path, help="run directory for model.pt, metrics.json, timing.json")
    tr.set_defaults(func=_train_cli)
    ev = actions.add_parser("evaluate", help="root accuracies (fine and binary) on a tree file")
    ev.add_argument("--model", required=True, type=Path, help="the run directory of `structnets trees train`")
    ev.add_argument("--data", required=True, type=Path, help="PTB-bracketed trees, one per line")
    ev.add_argument("--out", required=True, type=Path, help="directory for metrics.json")
    ev.set_defaults(func=_evaluate_cli)
    from . import arithmetic  # the program-structured task shares the subcommand

    arithmetic.register(actions)
    return parser


def _binary(value: float | None) -> str:
    return "n/a (no polar root)" if value is None else f"{value:.3f}"


def report_training(metrics: dict[str, Any], out: Path, files: str) -> None:
    """Prints a sentiment run's dev accuracies and what it wrote (``trees`` and ``text classify``)."""
    dev = metrics["dev"]
    print(
        f"dev: fine {dev['fine_accuracy']:.3f}, binary {_binary(dev['binary_accuracy'])} "
        f"(best epoch {metrics['best_epoch']} of {metrics['epochs']})"
    )
    print(f"wrote {out}/{files}")


def report_evaluation(metrics: dict[str, Any], out: Path, unit: str) -> None:
    """Prints root accuracies over ``metrics['trees']`` items called ``unit`` (trees, sentences)."""
    print(
        f"fine {metrics['fine_accuracy']:.3f} ({metrics['trees']} {unit}), binary "
        f"{_binary(metrics['binary_accuracy'])} ({metrics['binary_trees']} {unit}); "
        f"{metrics['unknown_tokens']} of {metrics['tokens']} tokens unseen in training"
    )
    print(f"wrote {out}/metrics.json")


def _train_cli(args: argparse.Namespace) -> int:
    report_training(train(from_args(SentimentConfig, args), args.out), args.out, "model.pt, metrics.json, timing.json")
    return 0


def _evaluate_cli(args: argparse.Namespace) -> int:
    report_evaluation(evaluate(args.model, args.data, args.out), args.out, "trees")
    return 0
