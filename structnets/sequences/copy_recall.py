"""The copy and associative recall tasks of Graves et al. (2014), for memory-augmented networks.

**Copy.** The network reads ``L`` random binary vectors of ``bits`` bits, then a step with
only the delimiter channel set, then must write the ``L`` vectors back during ``L`` blank
steps. Trained on ``L`` in ``min_length..max_train_length``, tested at twice that length:
a network that learned to store and replay (rather than memorise short patterns) keeps its
per-bit accuracy.

**Associative recall.** The network reads ``K`` items, each ``item_length`` binary
vectors preceded by a step on the item-delimiter channel; then a query-delimiter step, a
copy of one item (never the last), and a second query-delimiter step; then it must output
the item that followed the query. Trained on ``K`` in ``min_items..max_train_items``,
tested at ``2 * max_train_items`` items.

Every sequence in a batch has its own length; steps past a sequence's end are zero input
and carry no loss (``mask``). The loss is binary cross-entropy per target bit on the
output steps; gradients are clipped (``grad_clip_norm``) and a non-finite loss stops
training with an error instead of writing NaN into the weights.

Capacity: the memory has ``memory_size`` locations, and a write head writes at most one
location's worth per step, so the model is built for sequences of at most ``memory_size``
data steps (``L`` for copy, ``K * item_length`` for recall); longer ones are refused with an
error instead of silently failing.

    structnets memory train --task copy --out runs/copy
    structnets memory evaluate --model runs/copy --length 20
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import enum
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..models.memory_network import Addressing, MemoryConfig, MemoryNetwork
from ..train import checkpoint as training

logger = logging.getLogger(__name__)

__all__ = [
    "Task",
    "TaskBatch",
    "MemoryTaskConfig",
    "TrainingLog",
    "copy_batch",
    "recall_batch",
    "make_batch",
    "build_model",
    "train",
    "evaluate",
    "accuracy_by_length",
    "plot_weightings",
    "plot_training",
    "load_model",
    "run",
    "register",
]

# Evaluation data comes from a generator seeded away from the training stream.
_EVAL_SEED_OFFSET = 1_000_003


class Task(enum.Enum):
    """The two tasks of Graves et al. (2014) implemented here."""

    COPY = "copy"
    RECALL = "recall"


@dataclasses.dataclass(frozen=True)
class TaskBatch:
    """One batch of a task.

    Attributes:
        inputs: ``[B, T, input_size]`` float 0/1.
        targets: ``[B, T, bits]`` float 0/1 (zero where ``mask`` is 0).
        mask: ``[B, T]`` float, 1 on the steps whose output is scored.
        sizes: ``[B]`` the sequence length (copy) or number of items (recall) of each row.
    """

    inputs: Tensor
    targets: Tensor
    mask: Tensor
    sizes: Tensor


def copy_batch(lengths: Tensor, bits: int, generator: torch.Generator) -> TaskBatch:
    """Copy-task sequences, one per entry of ``lengths`` (each at least 1).

    Input channels: ``bits`` data bits and one delimiter. Row ``b`` with length ``L`` has
    data at steps ``0..L-1``, the delimiter at step ``L`` and its targets at ``L+1..2L``.
    """
    lengths = lengths.to(torch.long).cpu()
    if lengths.numel() == 0 or int(lengths.min()) < 1:
        raise ValueError("copy lengths must be at least 1")
    batch, longest = lengths.numel(), int(lengths.max())
    steps = 2 * longest + 1
    data = torch.randint(0, 2, (batch, longest, bits), generator=generator).float()
    time = torch.arange(longest)
    data = data * (time.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
    inputs = torch.zeros(batch, steps, bits + 1)
    targets = torch.zeros(batch, steps, bits)
    mask = torch.zeros(batch, steps)
    rows = torch.arange(batch)
    inputs[:, :longest, :bits] = data
    inputs[rows, lengths, bits] = 1.0
    for row, length in enumerate(lengths.tolist()):
        targets[row, length + 1 : 2 * length + 1] = data[row, :length]
        mask[row, length + 1 : 2 * length + 1] = 1.0
    return TaskBatch(inputs, targets, mask, lengths)


def recall_batch(num_items: Tensor, item_length: int, bits: int, generator: torch.Generator) -> TaskBatch:
    """Associative-recall sequences, one per entry of ``num_items`` (each at least 2).

    Input channels: ``bits`` data bits, the item delimiter, the query delimiter. Layout of a
    row with ``K`` items of ``n = item_length`` steps: ``K`` blocks ``[item delimiter, n data
    steps]``, then ``[query delimiter, n query steps, query delimiter]``, then ``n`` output
    steps whose targets are the item after the query.
    """
    num_items = num_items.to(torch.long).cpu()
    if num_items.numel() == 0 or int(num_items.min()) < 2:
        raise ValueError("associative recall needs at least 2 items per sequence")
    batch, most = num_items.numel(), int(num_items.max())
    block = item_length + 1
    steps = most * block + item_length + 2 + item_length
    inputs = torch.zeros(batch, steps, bits + 2)
    targets = torch.zeros(batch, steps, bits)
    mask = torch.zeros(batch, steps)
    items = torch.randint(0, 2, (batch, most, item_length, bits), generator=generator).float()
    # The query is any item but the last, so that a following item exists.
    queries = (torch.rand(batch, generator=generator) * (num_items - 1)).long()
    for row, count in enumerate(num_items.tolist()):
        for item in range(count):
            start = item * block
            inputs[row, start, bits] = 1.0
            inputs[row, start + 1 : start + block, :bits] = items[row, item]
        query_start = count * block
        inputs[row, query_start, bits + 1] = 1.0
        inputs[row, query_start + 1 : query_start + 1 + item_length, :bits] = items[row, queries[row]]
        inputs[row, query_start + 1 + item_length, bits + 1] = 1.0
        answer = query_start + 2 + item_length
        targets[row, answer : answer + item_length] = items[row, queries[row] + 1]
        mask[row, answer : answer + item_length] = 1.0
    return TaskBatch(inputs, targets, mask, num_items)


@dataclasses.dataclass(frozen=True)
class MemoryTaskConfig:
    """One copy or recall experiment.

    Attributes:
        task: copy or associative recall.
        addressing: NTM or DNC addressing.
        bits: data bits per step (Graves et al.: 8 for copy, 6 for recall).
        min_size: shortest training length (copy) or fewest items (recall).
        max_train_size: longest training length (copy) or most items (recall).
        eval_size: the test length or item count; by default twice ``max_train_size``.
        item_length: recall only: steps per item.
        hidden_size, memory_size, word_size, num_reads: the network's sizes.
        batch_size: sequences per step.
        lr: Adam learning rate.
        steps: training steps.
        max_train_seconds: stop training after this many seconds, steps left or not.
        grad_clip_norm: global gradient-norm clip.
        eval_sequences: test sequences per evaluated size.
        seed: seeds initialisation and data (evaluation uses a derived seed).
        loss_log_every: steps averaged into each loss-curve entry.
        num_threads: torch's intra-op threads while training (restored afterwards). One by
            default: a step is hundreds of small operations, too small to split, and on a
            busy 2-core machine two threads per operation ran 30x slower than one.
        device: torch device.
    """

    task: Task = Task.COPY
    addressing: Addressing = Addressing.DNC
    bits: int = 8
    min_size: int = 1
    max_train_size: int = 10
    eval_size: int | None = None
    item_length: int = 3
    hidden_size: int = 100
    memory_size: int = 32
    word_size: int = 16
    num_reads: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    steps: int = 5000
    max_train_seconds: float | None = None
    grad_clip_norm: float = 10.0
    eval_sequences: int = 256
    seed: int = 0
    loss_log_every: int = 50
    num_threads: int | None = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not isinstance(self.task, Task) or not isinstance(self.addressing, Addressing):
            raise TypeError("task must be a Task and addressing an Addressing")
        for name in ("bits", "item_length", "batch_size", "steps", "eval_sequences", "loss_log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        smallest = 2 if self.task is Task.RECALL else 1
        if not smallest <= self.min_size <= self.max_train_size:
            raise ValueError(
                f"need {smallest} <= min_size <= max_train_size, got {self.min_size} and {self.max_train_size}"
            )
        # Builds the model config, which checks the network sizes (memory_size 0 included).
        self.model_config()
        check_capacity(self, self.max_train_size)
        if self.eval_size is not None:
            check_capacity(self, self.eval_size)

    @property
    def test_size(self) -> int:
        """The size tested by :func:`evaluate`: ``eval_size``, else twice the training maximum."""
        return self.eval_size if self.eval_size is not None else 2 * self.max_train_size

    def model_config(self) -> MemoryConfig:
        channels = self.bits + (1 if self.task is Task.COPY else 2)
        return MemoryConfig(
            input_size=channels,
            output_size=self.bits,
            hidden_size=self.hidden_size,
            memory_size=self.memory_size,
            word_size=self.word_size,
            num_reads=self.num_reads,
            addressing=self.addressing,
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["task"], data["addressing"] = self.task.value, self.addressing.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemoryTaskConfig:
        names = {field.name for field in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in names}
        values["task"] = Task(values.get("task", Task.COPY.value))
        values["addressing"] = Addressing(values.get("addressing", Addressing.DNC.value))
        return cls(**values)


def check_capacity(config: MemoryTaskConfig, size: int) -> None:
    """Raises a ValueError if ``size`` (length or items) needs more memory than the model has."""
    if size < (2 if config.task is Task.RECALL else 1):
        raise ValueError(f"{config.task.value} size must be at least {2 if config.task is Task.RECALL else 1}")
    data_steps = size if config.task is Task.COPY else size * config.item_length
    if data_steps > config.memory_size:
        what = f"a copy of length {size}" if config.task is Task.COPY else f"recall of {size} items"
        raise ValueError(
            f"{what} has {data_steps} data steps, more than the {config.memory_size} memory locations "
            f"the model was built with (memory_size); use sizes up to "
            f"{config.memory_size if config.task is Task.COPY else config.memory_size // config.item_length}"
        )


def make_batch(config: MemoryTaskConfig, sizes: Tensor, generator: torch.Generator) -> TaskBatch:
    """A batch of ``config.task`` with the given lengths (copy) or item counts (recall)."""
    for size in {int(s) for s in sizes.tolist()}:
        check_capacity(config, size)
    if config.task is Task.COPY:
        return copy_batch(sizes, config.bits, generator)
    return recall_batch(sizes, config.item_length, config.bits, generator)


def build_model(config: MemoryTaskConfig) -> MemoryNetwork:
    return MemoryNetwork(config.model_config())


def _masked_loss(logits: Tensor, batch: TaskBatch) -> Tensor:
    """Mean binary cross-entropy per scored bit."""
    per_bit = F.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none")
    return (per_bit * batch.mask.unsqueeze(-1)).sum() / (batch.mask.sum() * logits.shape[-1])


def _bit_errors(logits: Tensor, batch: TaskBatch) -> tuple[Tensor, Tensor]:
    """Wrong bits per sequence and scored bits per sequence (threshold at probability 1/2)."""
    wrong = ((logits > 0).float() != batch.targets).float() * batch.mask.unsqueeze(-1)
    return wrong.sum((1, 2)), batch.mask.sum(1) * logits.shape[-1]


@dataclasses.dataclass
class TrainingLog:
    """Filled in by :func:`train`: loss (and gradient-norm) curves, steps, seconds."""

    loss_curve: list[float] = dataclasses.field(default_factory=list)
    bit_error_curve: list[float] = dataclasses.field(default_factory=list)
    grad_norm_curve: list[float] = dataclasses.field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    clipped_steps: int = 0


def train(config: MemoryTaskConfig, progress: bool = True, log: TrainingLog | None = None) -> MemoryNetwork:
    """Trains on sizes ``min_size..max_train_size`` (one size per sequence, uniform)."""
    with _torch_threads(config.num_threads):
        return _train(config, progress, log if log is not None else TrainingLog())


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """Runs the block with ``count`` intra-op threads, then restores torch's setting."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _train(config: MemoryTaskConfig, progress: bool, log: TrainingLog) -> MemoryNetwork:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = torch.device(config.device)
    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    start = time.perf_counter()
    losses, errors, norms = [], [], []
    bar = tqdm(total=config.steps, desc=f"{config.task.value} {config.addressing.value}", disable=not progress)
    with bar:
        for step in range(config.steps):
            if config.max_train_seconds is not None and time.perf_counter() - start > config.max_train_seconds:
                logger.info("time budget of %.0f s reached after %d steps", config.max_train_seconds, step)
                break
            sizes = torch.randint(config.min_size, config.max_train_size + 1, (config.batch_size,), generator=generator)
            batch = _to(make_batch(config, sizes, generator), device)
            logits = model(batch.inputs).outputs
            loss = _masked_loss(logits, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{config.task.value}: non-finite training loss {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = training.clip_gradients(model, config.grad_clip_norm)
            if not math.isfinite(norm):
                raise FloatingPointError(f"{config.task.value}: non-finite gradient norm at step {step}")
            log.clipped_steps += norm > config.grad_clip_norm
            optimizer.step()
            log.steps = step + 1
            with torch.no_grad():
                wrong, scored = _bit_errors(logits, batch)
            losses.append(loss.item())
            errors.append(float(wrong.sum() / scored.sum()))
            norms.append(norm)
            if len(losses) == config.loss_log_every:
                log.loss_curve.append(sum(losses) / len(losses))
                log.bit_error_curve.append(sum(errors) / len(errors))
                log.grad_norm_curve.append(max(norms))
                bar.set_postfix(loss=f"{log.loss_curve[-1]:.4f}", bit_error=f"{log.bit_error_curve[-1]:.4f}")
                losses, errors, norms = [], [], []
            bar.update()
    if losses:
        log.loss_curve.append(sum(losses) / len(losses))
        log.bit_error_curve.append(sum(errors) / len(errors))
        log.grad_norm_curve.append(max(norms))
    log.seconds = time.perf_counter() - start
    model.eval()
    return model


def _to(batch: TaskBatch, device: torch.device) -> TaskBatch:
    return TaskBatch(*(t.to(device) for t in (batch.inputs, batch.targets, batch.mask)), batch.sizes)


@torch.no_grad()
def evaluate(model: MemoryNetwork, config: MemoryTaskConfig, size: int | None = None) -> dict[str, float]:
    """Per-bit accuracy, exact-sequence accuracy and loss on fresh sequences of one size.

    ``size`` defaults to :attr:`MemoryTaskConfig.test_size` (twice the training maximum).
    """
    size = config.test_size if size is None else size
    check_capacity(config, size)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(config.seed + _EVAL_SEED_OFFSET + size)
    batch = _to(make_batch(config, torch.full((config.eval_sequences,), size), generator), device)
    with _torch_threads(config.num_threads):
        logits = model(batch.inputs).outputs
    wrong, scored = _bit_errors(logits, batch)
    return {
        "size": size,
        "bit_accuracy": float(1 - wrong.sum() / scored.sum()),
        "sequence_accuracy": float((wrong == 0).float().mean()),
        "loss": float(_masked_loss(logits, batch)),
    }


def accuracy_by_length(model: MemoryNetwork, config: MemoryTaskConfig, largest: int | None = None) -> dict[str, float]:
    """Per-bit accuracy at every size from ``min_size`` to ``largest`` (default: the test size)."""
    largest = config.test_size if largest is None else largest
    return {str(s): evaluate(model, config, s)["bit_accuracy"] for s in range(config.min_size, largest + 1)}


@torch.no_grad()
def plot_weightings(model: MemoryNetwork, config: MemoryTaskConfig, path: Path, size: int | None = None) -> None:
    """Inputs, outputs, and the write and read weightings over time for one test sequence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = config.test_size if size is None else size
    check_capacity(config, size)
    generator = torch.Generator().manual_seed(config.seed + 2 * _EVAL_SEED_OFFSET + size)
    batch = make_batch(config, torch.tensor([size]), generator)
    device = next(model.parameters()).device
    with _torch_threads(config.num_threads):
        result = model(batch.inputs.to(device))
    panels = [
        ("inputs", batch.inputs[0].T),
        ("outputs (probability)", torch.sigmoid(result.outputs[0]).cpu().T * batch.mask[0]),
        ("write weighting", result.write_weights[0].cpu().T),
        ("read weighting (head 1)", result.read_weights[0, :, 0].cpu().T),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 9), sharex=True)
    for ax, (title, values) in zip(axes, panels):
        ax.imshow(values.numpy(), aspect="auto", cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("location" if "weighting" in title else "channel")
    axes[-1].set_xlabel("time step")
    fig.suptitle(
        f"{config.addressing.name} on {config.task.value}, size {size} (trained up to {config.max_train_size})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(log: TrainingLog, accuracy: Mapping[str, float], config: MemoryTaskConfig, path: Path) -> None:
    """Training loss and gradient norm against steps, and per-bit accuracy against size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [config.loss_log_every * (k + 1) for k in range(len(log.loss_curve))]
    left.semilogy(steps, log.loss_curve, label="loss (BCE per bit)")
    left.semilogy(steps, log.grad_norm_curve, label="max gradient norm (before clipping)", alpha=0.6)
    left.axhline(config.grad_clip_norm, color="grey", linestyle=":", label=f"clip at {config.grad_clip_norm}")
    left.set_xlabel("training step")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    left.set_title("training (no NaN: every step's loss and gradient norm checked)", fontsize=9)
    sizes = sorted(int(s) for s in accuracy)
    right.plot(sizes, [accuracy[str(s)] for s in sizes], marker="o", markersize=3)
    right.axvspan(config.min_size - 0.5, config.max_train_size + 0.5, color="tab:green", alpha=0.15, label="trained")
    right.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    right.set_xlabel("sequence length" if config.task is Task.COPY else "items")
    right.set_ylabel("per-bit accuracy")
    right.set_ylim(0.4, 1.01)
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_model(path: Path, map_location: str | torch.device = "cpu") -> tuple[MemoryNetwork, MemoryTaskConfig]:
    """Rebuilds a model and its task config from a ``model.pt`` written by :func:`run`."""
    checkpoint = training.load_checkpoint(path, map_location=map_location)
    config = MemoryTaskConfig.from_dict(checkpoint["config"])
    model = build_model(config)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), config


def run(config: MemoryTaskConfig, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Trains, evaluates at the test size, and writes metrics.json, model.pt and two plots."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = TrainingLog()
    model = train(config, progress=progress, log=log)
    accuracy = accuracy_by_length(model, config)
    metrics: dict[str, Any] = {
        "test": evaluate(model, config),
        "train_max": evaluate(model, config, config.max_train_size),
        "accuracy_by_size": accuracy,
        "config": config.to_dict(),
        "train_seconds": log.seconds,
        "train_steps": log.steps,
        "clipped_steps": int(log.clipped_steps),
        "train_loss_curve": log.loss_curve,
        "train_bit_error_curve": log.bit_error_curve,
        "grad_norm_curve": log.grad_norm_curve,
        "finite": all(math.isfinite(v) for v in log.loss_curve + log.grad_norm_curve),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    training.save_checkpoint(out_dir / "model.pt", model, config.to_dict())
    plot_training(log, accuracy, config, out_dir / "training.png")
    plot_weightings(model, config, out_dir / "weightings.png")
    return metrics


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

_CLI_FIELDS = (
    "bits",
    "min_size",
    "max_train_size",
    "eval_size",
    "item_length",
    "hidden_size",
    "memory_size",
    "word_size",
    "num_reads",
    "batch_size",
    "lr",
    "steps",
    "max_train_seconds",
    "grad_clip_norm",
    "eval_sequences",
    "seed",
    "num_threads",
    "device",
)


def config_from_args(args: argparse.Namespace) -> MemoryTaskConfig:
    overrides = {name: getattr(args, name) for name in _CLI_FIELDS if getattr(args, name, None) is not None}
    task = Task(args.task)
    if task is Task.RECALL:  # Graves et al.'s recall sizes unless given
        overrides.setdefault("bits", 6)
        overrides.setdefault("min_size", 2)
        overrides.setdefault("max_train_size", 6)
        overrides.setdefault("memory_size", 48)
    return MemoryTaskConfig(task=task, addressing=Addressing(args.addressing), **overrides)


def _train_main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    metrics = run(config, args.out, progress=not args.no_progress)
    test = metrics["test"]
    print(
        f"{config.task.value} ({config.addressing.name}): per-bit accuracy {test['bit_accuracy']:.4f} at size "
        f"{test['size']} (trained on {config.min_size}-{config.max_train_size}); "
        f"{metrics['train_steps']} steps in {metrics['train_seconds']:.0f} s"
    )
    print(f"wrote {args.out / 'metrics.json'}, model.pt, training.png, weightings.png")
    return 0


def _evaluate_main(args: argparse.Namespace) -> int:
    model, config = load_model(args.model / "model.pt", map_location=args.device)
    if args.eval_sequences is not None:
        config = dataclasses.replace(config, eval_sequences=args.eval_sequences)
    result = evaluate(model, config, args.length)
    print(json.dumps(result))
    if args.plot is not None:
        plot_weightings(model, config, args.plot, args.length)
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``structnets memory train|evaluate``."""
    parser = subparsers.add_parser(
        "memory",
        help="NTM / DNC on the copy and associative recall tasks",
        description="Train a memory-augmented network on short sequences and test it on twice the length.",
    )
    commands = parser.add_subparsers(dest="memory_command", metavar="{train,evaluate}", required=True)
    defaults = MemoryTaskConfig()
    train_parser = commands.add_parser("train", help="train and evaluate; writes metrics.json, model.pt and plots")
    train_parser.add_argument("--task", choices=[t.value for t in Task], default="copy")
    train_parser.add_argument("--addressing", choices=[a.value for a in Addressing], default="dnc")
    train_parser.add_argument("--out", type=Path, required=True)
    options = {
        "--bits": (int, "data bits per step (copy 8, recall 6)"),
        "--min-size": (int, "shortest training length / fewest items"),
        "--max-train-size": (int, f"longest training length / most items (copy default {defaults.max_train_size})"),
        "--eval-size": (int, "test length / items (default: twice --max-train-size)"),
        "--item-length": (int, f"recall: steps per item (default {defaults.item_length})"),
        "--hidden-size": (int, f"controller size (default {defaults.hidden_size})"),
        "--memory-size": (int, f"memory locations (default {defaults.memory_size}, recall 48)"),
        "--word-size": (int, f"numbers per location (default {defaults.word_size})"),
        "--num-reads": (int, f"read heads (default {defaults.num_reads})"),
        "--batch-size": (int, f"default {defaults.batch_size}"),
        "--lr": (float, f"Adam learning rate (default {defaults.lr})"),
        "--steps": (int, f"training steps (default {defaults.steps})"),
        "--max-train-seconds": (float, "stop training after this many seconds"),
        "--grad-clip-norm": (float, f"default {defaults.grad_clip_norm}"),
        "--eval-sequences": (int, f"test sequences (default {defaults.eval_sequences})"),
        "--seed": (int, f"default {defaults.seed}"),
        "--num-threads": (int, f"torch threads while training (default {defaults.num_threads})"),
        "--device": (str, "torch device (default cpu)"),
    }
    for flag, (kind, text) in options.items():
        train_parser.add_argument(flag, type=kind, help=text)
    train_parser.add_argument("--no-progress", action="store_true")
    train_parser.set_defaults(func=_train_main)

    evaluate_parser = commands.add_parser("evaluate", help="per-bit accuracy of a trained model at one size")
    evaluate_parser.add_argument("--model", type=Path, required=True, help="directory holding model.pt")
    evaluate_parser.add_argument("--length", type=int, help="length (copy) or items (recall); default: 2x training")
    evaluate_parser.add_argument("--eval-sequences", type=int)
    evaluate_parser.add_argument("--plot", type=Path, help="also write the weightings plot here")
    evaluate_parser.add_argument("--device", default="cpu")
    evaluate_parser.set_defaults(func=_evaluate_main)
    return parser
