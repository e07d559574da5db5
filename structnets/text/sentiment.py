"""Sentiment on the Stanford Sentiment Treebank with Tree-LSTMs (Tai et al. 2015).

``structnets trees train --data train.txt --dev dev.txt --out RUN`` reads PTB-bracketed
trees (SST's format: every phrase labelled 0-4), embeds the leaves' words, runs a Tree-LSTM
over every batch of trees as one forest under the core's topological schedule (all
trees' leaves first, then level by level up to the roots), and trains a softmax on every
node's state with the loss at every labelled node, as in the paper. It keeps the epoch
with the best dev root accuracy and writes ``RUN/model.pt`` and ``RUN/metrics.json``.

``structnets trees evaluate --model RUN --data FILE.txt --out DIR`` writes
``DIR/metrics.json`` with ``fine_accuracy`` (5 classes at the root) and
``binary_accuracy`` (roots labelled 2 dropped, 0-1 negative and 3-4 positive, as in Tai et
al.; the prediction is whichever side has more probability under the 5-class model).

Words never seen in training map to ``<unk>`` (id 0, a learned vector); evaluation reports
how many there were. Pretrained vectors cannot be downloaded here, so embeddings are
learned from scratch by default; ``--vectors FILE`` reads the common text format (a word
and its numbers per line, as GloVe and word2vec write it) for the words it covers.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..core.cells import ChildSumTreeGRUCell, ChildSumTreeLSTMCell, NaryTreeLSTMCell
from ..core.propagate import propagate
from ..core.schedules import Topological
from ..graphs.trees import Tree, TreeBatch, Vocabulary, batch_trees, read_ptb
from ..train.checkpoint import clip_gradients, load_checkpoint
from ..train.data import dataset_path

logger = logging.getLogger(__name__)

__all__ = ["Cell", "SentimentConfig", "TreeSentiment", "load_sst", "train", "evaluate", "register", "SST_URL"]

SST_URL = "http://nlp.stanford.edu/sentiment/trainDevTestTrees_PTB.zip"
NUM_CLASSES = 5
NEUTRAL = 2


class Cell(enum.Enum):
    """``nary``: Tai et al.'s binary (N-ary) Tree-LSTM, which tells left from right;
    ``childsum``: the child-sum Tree-LSTM, blind to child order; ``childsum-gru``: the
    child-sum Tree-GRU (one reset gate per child), likewise order-blind."""

    NARY = "nary"
    CHILDSUM = "childsum"
    CHILDSUM_GRU = "childsum-gru"


def load_sst(split: str, data_dir: str | Path | None = None) -> list[Tree]:
    """SST trees of ``split`` (``train``, ``dev`` or ``test``) from ``sst/<split>.txt`` in the data directory.

    The canonical source is :data:`SST_URL` (``trees/<split>.txt`` in the zip).
    """
    if split not in ("train", "dev", "test"):
        raise ValueError(f"SST split must be train, dev or test, got {split!r}")
    return read_ptb(dataset_path("sst", f"{split}.txt", SST_URL, data_dir))


def read_vectors(path: str | Path, vocabulary: Vocabulary, size: int) -> tuple[Tensor, int]:
    """``(vectors [len(vocabulary), size], found)`` from a text vectors file; rows it lacks are zero."""
    path = Path(path)
    out = torch.zeros(len(vocabulary), size)
    found = 0
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.rstrip().split(" ")
            if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec's "count dimension" header
            if len(parts) != size + 1:
                raise ValueError(f"{path}:{number}: expected a word and {size} numbers, got {len(parts) - 1} numbers")
            if parts[0] in vocabulary:
                try:
                    out[vocabulary.id(parts[0])] = torch.tensor([float(v) for v in parts[1:]])
                except ValueError as error:
                    raise ValueError(f"{path}:{number}: {error}") from None
                found += 1
    return out, found


@dataclasses.dataclass(frozen=True)
class SentimentConfig:
    """One training run. Sizes follow Tai et al.'s constituency Tree-LSTM where the CPU allows."""

    data: str | None = None
    dev: str | None = None
    data_dir: str | None = None
    cell: Cell = Cell.NARY
    embedding_size: int = 100
    hidden_size: int = 150
    dropout: float = 0.5
    epochs: int = 20
    batch_size: int = 25
    lr: float = 0.05
    weight_decay: float = 1e-4
    embedding_lr_scale: float = 1.0
    vectors: str | None = None
    min_count: int = 1
    limit: int | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs} and {self.batch_size}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["cell"] = self.cell.value
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SentimentConfig:
        raw = dict(raw)
        raw["cell"] = Cell(raw["cell"])
        return cls(**raw)


class TreeSentiment(nn.Module):
    """Embeddings at the leaves, a Tree-LSTM up the tree, a softmax at every node.

    Inner nodes get a zero input, as in Tai et al.'s constituency model; each node's
    prediction reads its own state (``h`` of the phrase it spans).
    """

    def __init__(self, vocabulary_size: int, config: SentimentConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(vocabulary_size, config.embedding_size)
        if config.cell is Cell.NARY:
            self.cell = NaryTreeLSTMCell(config.embedding_size, config.hidden_size, num_children=2)
        elif config.cell is Cell.CHILDSUM:
            self.cell = ChildSumTreeLSTMCell(config.embedding_size, config.hidden_size)
        else:
            self.cell = ChildSumTreeGRUCell(config.embedding_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden_size, NUM_CLASSES)

    def forward(self, batch: TreeBatch) -> Tensor:
        """Logits ``[num_nodes, 5]``."""
        leaves = batch.token_ids >= 0
        inputs = torch.zeros(batch.num_nodes, self.config.embedding_size, device=batch.token_ids.device)
        inputs = inputs.index_put((leaves.nonzero().view(-1),), self.embedding(batch.token_ids[leaves]))
        edge_attr = batch.slots if self.config.cell is Cell.NARY else None
        state = propagate(self.cell, self.dropout(inputs), batch.edge_index, Topological(), edge_attr=edge_attr)
        h = state[0] if isinstance(state, tuple) else state  # (h, c) for the Tree-LSTMs
        return self.output(self.dropout(h))


def _root_metrics(logits: Tensor, batch: TreeBatch) -> dict[str, float]:
    roots = logits[batch.roots]
    labels = batch.labels[batch.roots]
    fine = float((roots.argmax(-1) == labels).float().mean())
    probabilities = roots.softmax(-1)
    polar = labels != NEUTRAL
    positive = probabilities[:, 3:].sum(-1) > probabilities[:, :2].sum(-1)
    binary = float((positive[polar] == (labels[polar] > NEUTRAL)).float().mean()) if bool(polar.any()) else math.nan
    return {
        "fine_accuracy": fine,
        "binary_accuracy": binary,
        "trees": int(labels.numel()),
        "binary_trees": int(polar.sum()),
    }


@torch.no_grad()
def _evaluate_trees(model: TreeSentiment, trees: list[Tree], vocabulary: Vocabulary, device: torch.device) -> dict:
    model.eval()
    batch = batch_trees(trees, vocabulary)
    logits = model(batch.to(device)).cpu()
    metrics = _root_metrics(logits, batch)
    labelled = batch.labels >= 0
    metrics["node_fine_accuracy"] = float((logits[labelled].argmax(-1) == batch.labels[labelled]).float().mean())
    metrics["unknown_tokens"] = batch.unknown_tokens
    metrics["tokens"] = int((batch.token_ids >= 0).sum())
    return metrics


def _read(path: str | None, split: str, config: SentimentConfig, *, limit: bool = True) -> list[Tree]:
    trees = read_ptb(path) if path is not None else load_sst(split, config.data_dir)
    for tree in trees:
        if any(label is None or not 0 <= label < NUM_CLASSES for label in tree.labels):
            raise ValueError(f"{tree.source}: SST labels must be integers 0-4 at every node")
        if tree.max_children > 2 and config.cell is Cell.NARY:
            raise ValueError(f"{tree.source}: a node has {tree.max_children} children; the binary Tree-LSTM takes 2")
    return trees[: config.limit] if limit and config.limit is not None else trees


def train(config: SentimentConfig, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Trains, keeps the epoch with the best dev root accuracy, writes ``model.pt`` and ``metrics.json``."""
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    train_trees = _read(config.data, "train", config)
    dev_trees = _read(config.dev, "dev", config)
    vocabulary = Vocabulary.build(train_trees, config.min_count)
    model = TreeSentiment(len(vocabulary), config).to(device)
    if config.vectors is not None:
        vectors, found = read_vectors(config.vectors, vocabulary, config.embedding_size)
        with torch.no_grad():
            known = vectors.abs().sum(-1) > 0
            model.embedding.weight[known] = vectors[known].to(device)
        logger.info("%s: vectors for %d of %d words", config.vectors, found, len(vocabulary))
    # Adagrad, as Tai et al.; the embeddings may learn at their own rate.
    embedding = list(model.embedding.parameters())
    others = [p for n, p in model.named_parameters() if not n.startswith("embedding.")]
    optimizer = torch.optim.Adagrad(
        [
            {"params": others, "weight_decay": config.weight_decay},
            {"params": embedding, "lr": config.lr * config.embedding_lr_scale, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    # Batches are built once; each epoch visits them in a new order.
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(train_trees), generator=generator).tolist()
    batches = [
        batch_trees([train_trees[i] for i in order[k : k + config.batch_size]], vocabulary).to(device)
        for k in range(0, len(order), config.batch_size)
    ]
    history, best, best_state = [], -1.0, None
    started = time.perf_counter()
    bar = tqdm(range(1, config.epochs + 1), desc="trees", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        epoch_start = time.perf_counter()
        total, nodes = 0.0, 0
        for k in torch.randperm(len(batches), generator=generator).tolist():
            batch = batches[k]
            logits = model(batch)
            labelled = batch.labels >= 0
            loss = F.cross_entropy(logits[labelled], batch.labels[labelled])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(model, 5.0)
            optimizer.step()
            total += loss.item() * int(labelled.sum())
            nodes += int(labelled.sum())
        seconds = time.perf_counter() - epoch_start
        dev = _evaluate_trees(model, dev_trees, vocabulary, device)
        history.append({"epoch": epoch, "train_loss": total / nodes, "seconds": seconds, **dev})
        bar.set_postfix(loss=f"{total / nodes:.3f}", dev_fine=f"{dev['fine_accuracy']:.3f}")
        if dev["fine_accuracy"] > best:
            best = dev["fine_accuracy"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    best_epoch = max(history, key=lambda h: (h["fine_accuracy"], -h["epoch"]))
    metrics = {
        "dev": _evaluate_trees(model, dev_trees, vocabulary, device),
        "best_epoch": best_epoch["epoch"],
        "seconds_per_epoch": sum(h["seconds"] for h in history) / len(history),
        "train_seconds": time.perf_counter() - started,
        "train_trees": len(train_trees),
        "train_nodes": sum(len(t) for t in train_trees),
        "vocabulary": len(vocabulary),
        "history": history,
        "config": config.to_dict(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": model.state_dict(), "config": config.to_dict(), "vocabulary": vocabulary.tokens},
        out_dir / "model.pt",
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def load_model(model_dir: Path, device: str = "cpu") -> tuple[TreeSentiment, Vocabulary]:
    checkpoint = load_checkpoint(Path(model_dir) / "model.pt", map_location=device)
    config = SentimentConfig.from_dict(checkpoint["config"])
    vocabulary = Vocabulary(list(checkpoint["vocabulary"]))
    model = TreeSentiment(len(vocabulary), config)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), vocabulary


def evaluate(model_dir: Path, data: Path, out_dir: Path) -> dict[str, Any]:
    """Root accuracies of a trained model on a tree file; writes ``out_dir/metrics.json``."""
    model, vocabulary = load_model(model_dir)
    trees = _read(str(data), "dev", model.config, limit=False)
    metrics = _evaluate_trees(model, trees, vocabulary, torch.device("cpu"))
    metrics["data"] = str(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


# ---------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("trees", help="Tree-LSTM sentiment on the Stanford Sentiment Treebank")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    tr = actions.add_parser("train", help="train on PTB-bracketed trees; keeps the best dev epoch")
    tr.add_argument("--data", help="training trees (default: sst/train.txt in the data directory)")
    tr.add_argument("--dev", help="dev trees (default: sst/dev.txt in the data directory)")
    tr.add_argument("--data-dir", help="data directory (default: $STRUCTNETS_DATA_DIR)")
    tr.add_argument("--cell", choices=[c.value for c in Cell], default=Cell.NARY.value)
    defaults = SentimentConfig()
    for name in ("embedding_size", "hidden_size", "epochs", "batch_size", "min_count", "seed"):
        tr.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("dropout", "lr", "weight_decay", "embedding_lr_scale"):
        tr.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    tr.add_argument("--limit", type=int, help="use the first N training and dev trees")
    tr.add_argument("--vectors", help="word vectors in the text format (word and numbers per line)")
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--out", required=True, type=Path)
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_train_cli)
    ev = actions.add_parser("evaluate", help="root accuracies (fine and binary) on a tree file")
    ev.add_argument("--model", required=True, type=Path)
    ev.add_argument("--data", required=True, type=Path)
    ev.add_argument("--out", required=True, type=Path)
    ev.set_defaults(func=_evaluate_cli)
    from . import arithmetic  # the program-structured task shares the subcommand

    arithmetic.register(actions)
    return parser


def _train_cli(args: argparse.Namespace) -> int:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(SentimentConfig)}
    config = SentimentConfig(**{**values, "cell": Cell(args.cell)})
    metrics = train(config, args.out, progress=not args.no_progress)
    dev = metrics["dev"]
    print(
        f"dev: fine {dev['fine_accuracy']:.3f}, binary {dev['binary_accuracy']:.3f} "
        f"(best epoch {metrics['best_epoch']}, {metrics['seconds_per_epoch']:.1f} s per epoch)"
    )
    print(f"wrote {args.out}/model.pt, metrics.json")
    return 0


def _evaluate_cli(args: argparse.Namespace) -> int:
    metrics = evaluate(args.model, args.data, args.out)
    print(
        f"fine {metrics['fine_accuracy']:.3f} ({metrics['trees']} trees), binary {metrics['binary_accuracy']:.3f} "
        f"({metrics['binary_trees']} trees); {metrics['unknown_tokens']} of {metrics['tokens']} tokens unseen in training"
    )
    print(f"wrote {args.out}/metrics.json")
    return 0
