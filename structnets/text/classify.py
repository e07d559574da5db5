"""Sentiment on SST with sequence models: the trees' sentences read as chains (Tai et al. 2015's LSTM baselines).

``structnets text classify train --data train.txt --dev dev.txt --out RUN`` reads the same
PTB-bracketed trees as ``structnets trees train`` (SST from the data directory by default,
the same splits, the same :class:`~structnets.graphs.trees.Vocabulary` built from the
training trees, the same ``--vectors`` reader), keeps of each tree only its leaves in order
(the sentence) and its root label, and trains a stacked, optionally bidirectional LSTM or
GRU (:class:`structnets.models.SequenceClassifier`) on them::

    (3 (2 It) (4 (2 is) (3 good)))  ─► "It is good", root 3
        tokens ─► Embedding ─► dropout ─► RNN (stacked, bidirectional) ─► final states ─► dropout ─► Linear ─► 5 logits

Training is the Tree-LSTM's: Adagrad with the same learning rate, weight decay, batch and
epochs, one call of the engine, the epoch with the best dev root fine accuracy kept. The
loss is at the root only, since a chain has no phrase nodes (Tai et al. train their
sequential LSTMs on sentence labels too). It writes ``RUN/model.pt``, ``RUN/metrics.json``
(dev ``fine_accuracy`` and ``binary_accuracy``, the curves), ``RUN/timing.json`` and
``RUN/curves.png``.

``structnets text classify evaluate --model RUN --data FILE.txt --out DIR`` writes
``DIR/metrics.json`` with the keys of ``structnets trees evaluate``: ``fine_accuracy`` (5
classes at the root), ``binary_accuracy`` (roots labelled 2 dropped; the prediction is the
side with more probability under the 5-class model), ``trees`` and ``binary_trees`` (the
sentences scored), and ``unknown_tokens`` of ``tokens`` (words never seen in training,
read as ``<unk>``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pad_sequence

from ..core.cells import ChainCell
from ..graphs.trees import Tree, Vocabulary
from ..models.sequence_classifier import SequenceClassifier, SequenceClassifierConfig
from ..train.checkpoint import RunDirectory
from ..train.config import add_arguments, from_args, shared_fields, to_dict
from ..train.distributed import distributed, shuffled
from ..train.engine import TrainConfig, fit, seed_everything
from .sentiment import SentimentConfig, adagrad, evaluate_run, load_vocabulary_run, report_evaluation, report_training
from .sst import NEUTRAL, NUM_CLASSES, load_vectors, read_labelled_trees

__all__ = [
    "TASK", "ClassifyConfig", "SentenceBatch", "read_sentences", "batch_sentences", "sentence_metrics", "train",
    "evaluate", "load_run", "register",
]  # fmt: skip

TASK = "text-classify"
#: Sentences scored at once in validation and evaluation; fixed, so that evaluating the dev
#: file again gives train's dev metrics to the bit.
EVAL_BATCH_SIZE = 512
_DIVERGED = "; training diverged (try a lower --lr, or --clip-grad-norm)"


@dataclasses.dataclass(frozen=True)
class ClassifyConfig:
    """One training run. Data, vocabulary, sizes and the engine's settings are ``structnets trees train``'s.

    Attributes:
        data: training trees, PTB-bracketed, one per line; none reads sst/train.txt in the data directory.
        dev: dev trees, whose root fine accuracy picks the epoch kept; none reads sst/dev.txt there.
        data_dir: the data directory; none for $STRUCTNETS_DATA_DIR.
        cell: the recurrent cell: lstm or gru (or elman).
        num_layers: stacked recurrent layers.
        bidirectional: also read each sentence right to left; the head reads both final states.
        embedding_size: size of the word embedding.
        hidden_size: state size per direction and layer.
        mlp_hidden_size: width of a hidden layer before the softmax; none for a linear softmax on
            the final states, as in Tai et al. and the Tree-LSTM.
        dropout: dropout of the embeddings, between stacked layers and of the states the softmax reads.
        embedding_lr_scale: the embeddings' learning rate relative to lr (they take no weight decay).
        vectors: word vectors in the text format (a word and its numbers per line) to start from.
        min_count: training occurrences a word needs to get its own embedding (else <unk>).
        limit: use the first N training and dev trees.
        train: the engine's settings (the Tree-LSTM's: Adagrad at lr with weight_decay, batch 25, 20 epochs).
    """

    data: Path | None = None
    dev: Path | None = None
    data_dir: Path | None = None
    cell: ChainCell = ChainCell.LSTM
    num_layers: int = 1
    bidirectional: bool = True
    embedding_size: int = 100
    hidden_size: int = 150
    mlp_hidden_size: int | None = None
    dropout: float = 0.5
    embedding_lr_scale: float = 1.0
    vectors: Path | None = None
    min_count: int = 1
    limit: int | None = None
    train: TrainConfig = dataclasses.field(default_factory=lambda: SentimentConfig().train)

    def __post_init__(self) -> None:
        if self.embedding_lr_scale <= 0 or self.min_count < 1 or (self.limit is not None and self.limit < 1):
            raise ValueError("embedding_lr_scale, min_count and limit must be positive")
        self.model_config(1)  # checks the sizes, the cell and the dropout

    def model_config(self, vocab_size: int) -> SequenceClassifierConfig:
        return shared_fields(SequenceClassifierConfig, self, vocab_size=vocab_size, num_classes=NUM_CLASSES)


class SentenceBatch(NamedTuple):
    """Sentences padded into one tensor, with their lengths and root labels.

    Shapes:
        tokens: ``[B, T]`` token ids, 0 past each length; lengths: ``[B]`` (on the CPU,
        where the RNN's packing reads them); labels: ``[B]``.
    """

    tokens: Tensor
    lengths: Tensor
    labels: Tensor

    def to(self, device: torch.device | str) -> SentenceBatch:
        return SentenceBatch(self.tokens.to(device), self.lengths, self.labels.to(device))

    @property
    def mask(self) -> Tensor:
        """``[B, T]``: True at the sentences' tokens, False in the padding."""
        return torch.arange(self.tokens.shape[1]) < self.lengths.unsqueeze(-1)

    @property
    def unknown_tokens(self) -> int:
        """Tokens that map to ``<unk>`` (id 0): words never seen in training."""
        return int(((self.tokens.cpu() == 0) & self.mask).sum())


def read_sentences(path: Path | None, split: str, data_dir: Path | None, limit: int | None) -> list[Tree]:
    """SST trees from ``path`` (else the data directory's ``split``), labels checked as ``trees train`` checks them
    (:func:`structnets.text.sst.read_labelled_trees`)."""
    return read_labelled_trees(path, split, data_dir, limit)


def batch_sentences(trees: Sequence[Tree], vocabulary: Vocabulary) -> SentenceBatch:
    """Each tree's leaves, left to right, as ``vocabulary`` ids (unseen words are ``<unk>``), and its root label."""
    sentences = [torch.tensor([vocabulary.id(token) for token in tree.leaves], dtype=torch.long) for tree in trees]
    lengths = torch.tensor([len(sentence) for sentence in sentences], dtype=torch.long)
    labels = torch.tensor([tree.labels[0] for tree in trees], dtype=torch.long)
    return SentenceBatch(pad_sequence(sentences, batch_first=True, padding_value=0), lengths, labels)


def _batches(trees: Sequence[Tree], vocabulary: Vocabulary, size: int) -> list[SentenceBatch]:
    return [batch_sentences(trees[k : k + size], vocabulary) for k in range(0, len(trees), size)]


def sentence_metrics(logits: Tensor, labels: Tensor) -> dict[str, float | int | None]:
    """Fine and binary accuracy of 5-class ``logits [B, 5]`` against root ``labels [B]``.

    The rule of :func:`structnets.text.sst.root_metrics` (the Tree-LSTM's, checked equal by
    the tests): binary drops the neutral roots and predicts whichever side holds more
    probability; with no polar root the binary accuracy is None.
    """
    fine = float((logits.argmax(-1) == labels).float().mean())
    probabilities = logits.softmax(-1)
    polar = labels != NEUTRAL
    positive = probabilities[:, NEUTRAL + 1 :].sum(-1) > probabilities[:, :NEUTRAL].sum(-1)
    binary = float((positive[polar] == (labels[polar] > NEUTRAL)).float().mean()) if bool(polar.any()) else None
    return {
        "fine_accuracy": fine,
        "binary_accuracy": binary,
        "trees": int(labels.numel()),
        "binary_trees": int(polar.sum()),
    }


def _loss(model: nn.Module, batch: SentenceBatch) -> Tensor:
    return F.cross_entropy(model(batch.tokens, batch.lengths), batch.labels)


def _logits(model: nn.Module, batches: list[SentenceBatch], trees: Sequence[Tree], hint: str = "") -> Tensor:
    """The logits of every sentence, ``[len(trees), 5]``; a ValueError naming the first tree where they are not finite."""
    logits = torch.cat([model(batch.tokens, batch.lengths) for batch in batches])
    bad = ~torch.isfinite(logits).all(-1)
    if bool(bad.any()):
        first = trees[int(bad.nonzero()[0, 0])]
        raise ValueError(
            f"{first.source}: the model's outputs are not finite on this sentence ({int(bad.sum())} of "
            f"{bad.numel()} sentences in all): its weights hold NaN or infinity{hint}"
        )
    return logits


def _evaluate(model: nn.Module, batches: list[SentenceBatch], trees: Sequence[Tree], hint: str = "") -> dict[str, Any]:
    labels = torch.cat([batch.labels for batch in batches])
    metrics: dict[str, Any] = sentence_metrics(_logits(model, batches, trees, hint), labels)
    metrics["unknown_tokens"] = sum(batch.unknown_tokens for batch in batches)
    metrics["tokens"] = sum(int(batch.lengths.sum()) for batch in batches)
    return metrics


def train(config: ClassifyConfig, out: Path) -> dict[str, Any]:
    """Trains, keeps the epoch with the best dev root fine accuracy; writes the run directory ``out``."""
    out = RunDirectory.check_target(out)
    seed_everything(config.train.seed)
    device = torch.device(config.train.device)
    train_trees = read_sentences(config.data, "train", config.data_dir, config.limit)
    dev_trees = read_sentences(config.dev, "dev", config.data_dir, config.limit)
    vocabulary = Vocabulary.build(train_trees, config.min_count)
    model = SequenceClassifier(config.model_config(len(vocabulary))).to(device)
    if config.vectors is not None:
        load_vectors(model.embedding, config.vectors, vocabulary)
    # Batches are built once, from one seeded order of the trees (as the Tree-LSTM's); each epoch visits them anew.
    order = torch.randperm(len(train_trees), generator=torch.Generator().manual_seed(config.train.seed)).tolist()
    batches = [b.to(device) for b in _batches([train_trees[i] for i in order], vocabulary, config.train.batch_size)]
    dev_batches = [b.to(device) for b in _batches(dev_trees, vocabulary, EVAL_BATCH_SIZE)]

    def validate(model: nn.Module) -> dict[str, float]:
        metrics = _evaluate(model, dev_batches, dev_trees, _DIVERGED)
        # binary_accuracy is None when no dev root is polar; the history then leaves it out
        return {f"dev_{k}": metrics[k] for k in ("fine_accuracy", "binary_accuracy") if metrics[k] is not None}

    with distributed(device) as here:
        run = RunDirectory.start(out, task=TASK) if here.main else None
        result = fit(
            model,
            _loss,
            shuffled(batches, config.train.seed),
            config.train,
            validate=validate,
            monitor="dev_fine_accuracy",
            maximize=True,
            optimizer=adagrad(model, config),
            run_dir=out if here.main else None,
            description=f"text classify {config.cell.value}",
        )
        with torch.no_grad():
            dev = _evaluate(result.model, dev_batches, dev_trees, _DIVERGED)
        metrics = {
            "dev": dev,
            "best_epoch": result.best["epoch"] if result.best else None,
            "epochs": result.epochs,
            "steps": result.steps,
            "stop": result.stop.value,
            "train_trees": len(train_trees),
            "train_tokens": sum(len(t.leaves) for t in train_trees),
            "vocabulary": len(vocabulary),
            "parameters": sum(p.numel() for p in result.model.parameters()),
            "history": result.history,
            "config": to_dict(config),
        }
        if run is not None:
            run.write_json("metrics.json", metrics)
            run.write_json("timing.json", result.timing())
            run.save_model(result.model, task_config=config, extra={"vocabulary": vocabulary.tokens})
            run.save_figure("curves.png", _curves(result.history, metrics["best_epoch"], _title(config)), dpi=110)
            run.finish()
    return metrics


def _title(config: ClassifyConfig) -> str:
    layers = f"{config.num_layers}-layer " if config.num_layers > 1 else ""
    direction = "bidirectional " if config.bidirectional else ""
    return f"SST sentences: {layers}{direction}{config.cell.value.upper()}, hidden {config.hidden_size}"


def _curves(history: list[dict[str, Any]], best_epoch: int | None, title: str):
    """Training loss by step, and dev root accuracies by epoch with the kept epoch marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    loss, accuracy = fig.subplots(1, 2)
    steps = [(h["step"], h["train_loss"]) for h in history if "train_loss" in h]
    if steps:
        loss.plot(*zip(*steps), marker=".")
    loss.set_xlabel("step")
    loss.set_ylabel("training cross-entropy (root)")
    for key, name in (("dev_fine_accuracy", "fine (5 classes)"), ("dev_binary_accuracy", "binary (neutral dropped)")):
        points = [(h["epoch"], h[key]) for h in history if key in h]
        if points:
            accuracy.plot(*zip(*points), marker="o", label=name)
    if best_epoch is not None:
        accuracy.axvline(best_epoch, color="grey", linestyle=":", label=f"kept: epoch {best_epoch}")
    accuracy.set_xlabel("epoch")
    accuracy.set_ylabel("dev root accuracy")
    accuracy.legend()
    for ax in (loss, accuracy):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def load_run(path: Path, map_location: str | torch.device = "cpu") -> tuple[SequenceClassifier, Vocabulary]:
    """The trained model of a finished ``text classify`` run and its vocabulary."""
    return load_vocabulary_run(path, TASK, map_location)


def evaluate(model_dir: Path, data: Path, out: Path) -> dict[str, Any]:
    """Root accuracies of a trained model on the sentences of a tree file; writes ``out/metrics.json``."""

    def metrics_of(model: nn.Module, vocabulary: Vocabulary) -> dict[str, Any]:
        trees = read_sentences(data, "dev", None, None)
        return _evaluate(model, _batches(trees, vocabulary, EVAL_BATCH_SIZE), trees)

    return evaluate_run(model_dir, data, out, TASK, metrics_of)


# ---------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``classify train|evaluate`` (under ``structnets text``)."""
    parser = subparsers.add_parser(
        "classify",
        help="LSTM/GRU sentiment on the sentences of SST's trees (Tai et al.'s sequence baselines)",
        description="Train a stacked, bidirectional LSTM or GRU on the leaves of SST's trees; root accuracies.",
    )
    actions = parser.add_subparsers(dest="classify_action", metavar="ACTION", required=True)
    tr = actions.add_parser("train", help="train on the sentences of PTB-bracketed trees; keeps the best dev epoch")
    add_arguments(tr, ClassifyConfig)
    tr.add_argument(
        "--out", required=True, type=Path, help="run directory for model.pt, metrics.json, timing.json, curves.png"
    )
    tr.set_defaults(func=_train_cli)
    ev = actions.add_parser("evaluate", help="root accuracies (fine and binary) on the sentences of a tree file")
    ev.add_argument("--model", required=True, type=Path, help="the run directory of `structnets text classify train`")
    ev.add_argument("--data", required=True, type=Path, help="PTB-bracketed trees, one per line")
    ev.add_argument("--out", required=True, type=Path, help="directory for metrics.json")
    ev.set_defaults(func=_evaluate_cli)
    return parser


def _train_cli(args: argparse.Namespace) -> int:
    metrics = train(from_args(ClassifyConfig, args), args.out)
    report_training(metrics, args.out, "model.pt, metrics.json, timing.json, curves.png")
    return 0


def _evaluate_cli(args: argparse.Namespace) -> int:
    report_evaluation(evaluate(args.model, args.data, args.out), args.out, "sentences")
    return 0
