"""Character-level language model on Tiny Shakespeare (Karpathy's char-rnn task).

::

    chars ─► Embedding ─► structnets.RNN (stacked LSTM or GRU) ─► Linear ─► next-char logits
                               ▲                    │
                               └── (h, c) carried ──┘ across chunks, detached

Training is truncated backpropagation through time over parallel streams: the training
text is cut into ``batch_size`` contiguous streams, each read chunk by chunk (``bptt``
characters). The state at the end of a chunk starts the next chunk of the same stream,
detached from the graph, so the model sees arbitrarily long context while gradients flow
through ``bptt`` steps only. Validation reads the held-out text the same way and reports
bits per character, ``mean(-log2 p(next char))``.

Data: ``tinyshakespeare/input.txt`` in the data directory (:mod:`structnets.data`); the
first 90% of characters train, the last 10% validate (the usual split).

    structnets charlm train --out runs/charlm
    structnets charlm sample --model runs/charlm --prompt "ROMEO:" --temperature 0.8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..core.cells import GRUCell, LSTMCell, State
from ..core.rnn import RNN
from ..train import checkpoint as training
from ..train.data import dataset_path

logger = logging.getLogger(__name__)

__all__ = [
    "TINY_SHAKESPEARE_URL",
    "CELLS",
    "Vocabulary",
    "CharLMConfig",
    "CharLM",
    "TrainingLog",
    "load_tiny_shakespeare",
    "split_text",
    "stream_chunks",
    "bits_per_character",
    "train",
    "sample",
    "load_model",
    "run",
    "register",
]

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"

#: Cells accepted by :class:`CharLMConfig` and the command line.
CELLS: dict[str, type] = {"lstm": LSTMCell, "gru": GRUCell}


def load_tiny_shakespeare(data_dir: str | Path | None = None) -> str:
    """The text of Tiny Shakespeare from the data directory (``tinyshakespeare/input.txt``)."""
    return dataset_path("tinyshakespeare", "input.txt", TINY_SHAKESPEARE_URL, data_dir).read_text(encoding="utf-8")


def split_text(text: str, validation_fraction: float = 0.1) -> tuple[str, str]:
    """The first ``1 - validation_fraction`` of the characters and the rest."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {validation_fraction}")
    cut = int(len(text) * (1.0 - validation_fraction))
    return text[:cut], text[cut:]


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The characters a model knows, in index order."""

    characters: str

    @classmethod
    def build(cls, text: str) -> Vocabulary:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.characters)

    def encode(self, text: str) -> Tensor:
        """Indices ``[len(text)]``; a ValueError names any character the model has never seen."""
        index = {char: i for i, char in enumerate(self.characters)}
        unknown = sorted({char for char in text if char not in index})
        if unknown:
            shown = ", ".join(repr(char) for char in unknown)
            raise ValueError(
                f"text holds {len(unknown)} character(s) outside the model's vocabulary: {shown}; "
                f"the vocabulary is {self.characters!r}"
            )
        return torch.tensor([index[char] for char in text], dtype=torch.long)

    def decode(self, indices: Tensor) -> str:
        return "".join(self.characters[i] for i in indices.tolist())


@dataclasses.dataclass(frozen=True)
class CharLMConfig:
    """One character-level language-model experiment.

    Attributes:
        cell: ``"lstm"`` or ``"gru"``.
        hidden_size: state size of every layer.
        num_layers: stacked recurrent layers.
        embedding_size: size of the character embedding.
        dropout: dropout between layers and before the output layer, in training.
        batch_size: parallel streams.
        bptt: characters per chunk (steps of truncated backpropagation through time).
        lr: peak Adam learning rate; cosine decay to ``lr * min_lr_ratio`` over ``steps``.
        min_lr_ratio: final learning rate relative to ``lr``.
        warmup_steps: linear warm-up steps.
        steps: training chunks (optimiser steps).
        max_train_seconds: stop after this many seconds even if steps remain.
        grad_clip_norm: global gradient-norm clip.
        eval_every: steps between validation estimates on ``eval_chars`` characters.
        eval_chars: characters of the validation text used for the estimates during training
            (the final figure uses all of it).
        eval_batch_size: parallel streams when evaluating.
        sample_prompt, sample_length, sample_temperature: the sample stored in metrics.json.
        seed: seeds initialisation and sampling.
        device: torch device.
        data_dir: data directory override (else ``$STRUCTNETS_DATA_DIR``).
    """

    cell: str = "lstm"
    hidden_size: int = 256
    num_layers: int = 2
    embedding_size: int = 64
    dropout: float = 0.0
    batch_size: int = 64
    bptt: int = 100
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 30
    steps: int = 1250
    max_train_seconds: float | None = None
    grad_clip_norm: float = 1.0
    eval_every: int = 125
    eval_chars: int = 20_000
    eval_batch_size: int = 32
    sample_prompt: str = "ROMEO:"
    sample_length: int = 500
    sample_temperature: float = 0.8
    seed: int = 0
    device: str = "cpu"
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; expected one of {sorted(CELLS)}")
        for name in (
            "hidden_size",
            "num_layers",
            "embedding_size",
            "batch_size",
            "bptt",
            "steps",
            "eval_every",
            "eval_chars",
            "eval_batch_size",
            "sample_length",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.sample_temperature <= 0:
            raise ValueError(f"sample_temperature must be positive, got {self.sample_temperature}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CharLMConfig:
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


class CharLM(nn.Module):
    """``Embedding -> structnets.RNN -> Linear``: next-character logits at every position.

    Shapes:
        tokens: ``[B, T]``; logits: ``[B, T, vocab_size]``; hx: torch.nn.LSTM's / GRU's
        ``[num_layers, B, hidden_size]`` (a tuple ``(h, c)`` for LSTM).
    """

    def __init__(self, vocab_size: int, config: CharLMConfig) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, config.embedding_size)
        self.rnn = RNN(
            config.embedding_size,
            config.hidden_size,
            config.num_layers,
            cell=CELLS[config.cell],
            batch_first=True,
            dropout=config.dropout,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, vocab_size)

    def forward(self, tokens: Tensor, hx: State | None = None) -> tuple[Tensor, State]:
        output, hx = self.rnn(self.embedding(tokens), hx=hx)
        return self.head(self.dropout(output)), hx


def _detach(state: State) -> State:
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def stream_chunks(tokens: Tensor, batch_size: int, bptt: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive ``(inputs, targets)`` chunks of ``batch_size`` parallel streams.

    The text is cut into ``batch_size`` contiguous streams of ``S = (len - 1) // batch_size``
    predictions each (the last ``(len - 1) % batch_size`` characters are left out); row
    ``b`` of chunk ``k + 1`` continues row ``b`` of chunk ``k``, so a state carried from one
    chunk to the next is the state of the same stream. Targets are inputs shifted by one.

    Shapes:
        tokens: ``[len]``; each chunk: two ``[batch_size, <= bptt]`` tensors.
    """
    per_stream = (tokens.numel() - 1) // batch_size
    if per_stream < 1:
        raise ValueError(f"{tokens.numel()} characters are too few for {batch_size} streams")
    inputs = tokens[: batch_size * per_stream].view(batch_size, per_stream)
    targets = tokens[1 : batch_size * per_stream + 1].view(batch_size, per_stream)
    # Stream b is tokens[b * S : (b + 1) * S]; its targets are shifted by one within the text.
    for start in range(0, per_stream, bptt):
        yield inputs[:, start : start + bptt], targets[:, start : start + bptt]


@torch.no_grad()
def bits_per_character(model: CharLM, tokens: Tensor, batch_size: int = 32, bptt: int = 256) -> float:
    """Mean ``-log2 p(next char)`` over ``tokens``, read as carried-state parallel streams."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count, hx = 0.0, 0, None
    for inputs, targets in stream_chunks(tokens, batch_size, bptt):
        logits, hx = model(inputs.to(device), hx)
        nats = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).to(device), reduction="sum")
        total += float(nats)
        count += targets.numel()
    model.train(was_training)
    return total / count / math.log(2)


@torch.no_grad()
def sample(
    model: CharLM,
    vocabulary: Vocabulary,
    prompt: str,
    length: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    lead_in: str = "\n\n",
) -> str:
    """The prompt followed by ``length`` characters drawn from ``softmax(logits / temperature)``.

    The model first reads ``lead_in`` (not returned), by default a paragraph break, the
    separator between speeches in Tiny Shakespeare. Training carries the state across
    chunks, so a model rarely meets the zero state; read straight from it, a prompt such as
    ``"JULIET:"`` sent an under-trained model into garbage, while after a paragraph break
    (a state it knows) it wrote verse. ``lead_in=""`` starts from the zero state.
    """
    if not prompt:
        raise ValueError("the prompt must hold at least one character")
    if length < 1:
        raise ValueError(f"length must be positive, got {length}")
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens = vocabulary.encode(lead_in + prompt).to(device).unsqueeze(0)
    logits, hx = model(tokens)
    drawn = []
    for _ in range(length):
        probabilities = torch.softmax(logits[0, -1].float() / temperature, dim=-1).cpu()
        token = torch.multinomial(probabilities, 1, generator=generator)
        drawn.append(int(token))
        logits, hx = model(token.view(1, 1).to(device), hx)
    model.train(was_training)
    return prompt + vocabulary.decode(torch.tensor(drawn))


@dataclasses.dataclass
class TrainingLog:
    """Filled in by :func:`train`."""

    train_bpc: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    val_bpc: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    steps: int = 0
    epochs: float = 0.0
    seconds: float = 0.0


def _lr_factor(step: int, config: CharLMConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def train(
    config: CharLMConfig, train_tokens: Tensor, val_tokens: Tensor, vocab_size: int, progress: bool = True,
    log: TrainingLog | None = None,
) -> CharLM:  # fmt: skip
    """Truncated BPTT over ``batch_size`` streams, state carried (detached) between chunks.

    At the end of the training text every stream starts again from a zero state.
    """
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    model = CharLM(vocab_size, config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    log = log if log is not None else TrainingLog()
    chunks_per_epoch = math.ceil(((train_tokens.numel() - 1) // config.batch_size) / config.bptt)
    val_estimate = val_tokens[: config.eval_chars + 1]
    model.train()
    start = time.perf_counter()
    block_nats, block_chars = 0.0, 0
    bar = tqdm(total=config.steps, desc=f"charlm {config.cell}", disable=not progress)
    step, hx = 0, None
    chunks = stream_chunks(train_tokens, config.batch_size, config.bptt)
    with bar:
        while step < config.steps:
            if config.max_train_seconds is not None and time.perf_counter() - start > config.max_train_seconds:
                logger.info("time budget of %.0f s reached after %d steps", config.max_train_seconds, step)
                break
            try:
                inputs, targets = next(chunks)
            except StopIteration:  # a new epoch: every stream starts again from a zero state
                chunks, hx = stream_chunks(train_tokens, config.batch_size, config.bptt), None
                continue
            inputs, targets = inputs.to(device), targets.to(device)
            logits, hx = model(inputs, hx)
            hx = _detach(hx)  # truncate backpropagation here, keep the state's value
            loss = F.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            training.clip_gradients(model, config.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            block_nats += loss.item() * targets.numel()
            block_chars += targets.numel()
            if step % config.eval_every == 0 or step == config.steps:
                log.train_bpc.append((step, block_nats / block_chars / math.log(2)))
                block_nats, block_chars = 0.0, 0
                log.val_bpc.append((step, bits_per_character(model, val_estimate, config.eval_batch_size)))
                bar.set_postfix(train_bpc=f"{log.train_bpc[-1][1]:.3f}", val_bpc=f"{log.val_bpc[-1][1]:.3f}")
            bar.update()
    log.steps = step
    log.epochs = step / chunks_per_epoch
    log.seconds = time.perf_counter() - start
    model.eval()
    return model


def plot_curves(log: TrainingLog, path: Path, final_val_bpc: float) -> None:
    """Training and validation bits per character against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if log.train_bpc:
        ax.plot(*zip(*log.train_bpc), marker=".", label="train (mean over the last chunks)")
    if log.val_bpc:
        ax.plot(*zip(*log.val_bpc), marker=".", label="validation (estimate)")
    ax.axhline(final_val_bpc, color="grey", linestyle=":", label=f"final validation {final_val_bpc:.3f}")
    ax.set_xlabel("step (chunk)")
    ax.set_ylabel("bits per character")
    ax.set_title("Tiny Shakespeare character LM")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_model(directory: Path, map_location: str | torch.device = "cpu") -> tuple[CharLM, Vocabulary, CharLMConfig]:
    """Rebuilds a trained model from ``directory/model.pt`` (loaded with ``weights_only=True``)."""
    checkpoint = training.load_checkpoint(Path(directory) / "model.pt", map_location=map_location)
    config = CharLMConfig.from_dict(checkpoint["config"])
    vocabulary = Vocabulary(checkpoint["vocabulary"])
    model = CharLM(len(vocabulary), config)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(map_location).eval(), vocabulary, config


def run(config: CharLMConfig, out_dir: Path, progress: bool = True, text: str | None = None) -> dict[str, Any]:
    """Trains, measures validation bits per character on the whole held-out text, samples.

    Writes ``metrics.json`` (``val_bpc``, ``sample``, curves, config), ``model.pt`` and
    ``curves.png``. ``text`` replaces Tiny Shakespeare (for tests).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = load_tiny_shakespeare(config.data_dir) if text is None else text
    train_text, val_text = split_text(text)
    vocabulary = Vocabulary.build(text)
    train_tokens, val_tokens = vocabulary.encode(train_text), vocabulary.encode(val_text)
    log = TrainingLog()
    model = train(config, train_tokens, val_tokens, len(vocabulary), progress=progress, log=log)
    val_bpc = bits_per_character(model, val_tokens, config.eval_batch_size)
    generator = torch.Generator().manual_seed(config.seed)
    text_sample = sample(
        model, vocabulary, config.sample_prompt, config.sample_length, config.sample_temperature, generator
    )
    metrics: dict[str, Any] = {
        "val_bpc": val_bpc,
        "val_nats_per_char": val_bpc * math.log(2),
        "val_chars": val_tokens.numel(),
        "train_chars": train_tokens.numel(),
        "vocab_size": len(vocabulary),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_steps": log.steps,
        "train_epochs": log.epochs,
        "train_seconds": log.seconds,
        "train_bpc_curve": log.train_bpc,
        "val_bpc_curve": log.val_bpc,
        "sample": text_sample,
        "sample_temperature": config.sample_temperature,
        "config": config.to_dict(),
        "torch": torch.__version__,
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    training.save_checkpoint(out_dir / "model.pt", model, config.to_dict(), vocabulary=vocabulary.characters)
    plot_curves(log, out_dir / "curves.png", val_bpc)
    return metrics


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

_CLI_FIELDS = (
    "cell",
    "hidden_size",
    "num_layers",
    "embedding_size",
    "dropout",
    "batch_size",
    "bptt",
    "lr",
    "steps",
    "max_train_seconds",
    "eval_every",
    "seed",
    "device",
    "data_dir",
)


def config_from_args(args: argparse.Namespace) -> CharLMConfig:
    overrides = {name: getattr(args, name) for name in _CLI_FIELDS if getattr(args, name, None) is not None}
    if "data_dir" in overrides:
        overrides["data_dir"] = str(overrides["data_dir"])
    return CharLMConfig(**overrides)


def _train_main(args: argparse.Namespace) -> int:
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    metrics = run(config_from_args(args), args.out, progress=not args.no_progress)
    print(
        f"validation: {metrics['val_bpc']:.4f} bits per character ({metrics['val_nats_per_char']:.4f} nats) after "
        f"{metrics['train_steps']} steps ({metrics['train_epochs']:.2f} epochs, {metrics['train_seconds']:.0f} s)"
    )
    print(metrics["sample"])
    print(f"\nwrote {args.out / 'metrics.json'}, model.pt, curves.png")
    return 0


def _sample_main(args: argparse.Namespace) -> int:
    model, vocabulary, _ = load_model(args.model, map_location=args.device)
    generator = torch.Generator().manual_seed(args.seed)
    print(sample(model, vocabulary, args.prompt, args.length, args.temperature, generator))
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``structnets charlm train|sample``."""
    parser = subparsers.add_parser(
        "charlm",
        help="character-level language model (stacked LSTM/GRU) on Tiny Shakespeare",
        description="Train a character-level RNN language model with truncated BPTT, or sample from one.",
    )
    commands = parser.add_subparsers(dest="charlm_command", metavar="{train,sample}", required=True)
    defaults = CharLMConfig()
    train_parser = commands.add_parser("train", help="train; writes metrics.json (val_bpc, sample), model.pt, curves")
    train_parser.add_argument("--out", type=Path, required=True)
    train_parser.add_argument("--cell", choices=sorted(CELLS), help=f"default {defaults.cell}")
    options = {
        "--hidden-size": (int, f"default {defaults.hidden_size}"),
        "--num-layers": (int, f"default {defaults.num_layers}"),
        "--embedding-size": (int, f"default {defaults.embedding_size}"),
        "--dropout": (float, f"default {defaults.dropout}"),
        "--batch-size": (int, f"parallel streams (default {defaults.batch_size})"),
        "--bptt": (int, f"characters per truncated-BPTT chunk (default {defaults.bptt})"),
        "--lr": (float, f"peak Adam learning rate (default {defaults.lr})"),
        "--steps": (int, f"training chunks (default {defaults.steps})"),
        "--max-train-seconds": (float, "stop training after this many seconds"),
        "--eval-every": (int, f"steps between validation estimates (default {defaults.eval_every})"),
        "--seed": (int, f"default {defaults.seed}"),
        "--device": (str, "torch device (default cpu)"),
        "--data-dir": (Path, "data directory holding tinyshakespeare/input.txt (default $STRUCTNETS_DATA_DIR)"),
        "--num-threads": (int, "torch threads (default: torch's choice)"),
    }
    for flag, (kind, text) in options.items():
        train_parser.add_argument(flag, type=kind, help=text)
    train_parser.add_argument("--no-progress", action="store_true")
    train_parser.set_defaults(func=_train_main)

    sample_parser = commands.add_parser("sample", help="continue a prompt with a trained model")
    sample_parser.add_argument("--model", type=Path, required=True, help="directory holding model.pt")
    sample_parser.add_argument("--prompt", required=True, help="text to continue (characters of the training text)")
    sample_parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature > 0 (default 1)")
    sample_parser.add_argument("--length", type=int, default=500, help="characters to generate (default 500)")
    sample_parser.add_argument("--seed", type=int, default=0)
    sample_parser.add_argument("--device", default="cpu")
    sample_parser.set_defaults(func=_sample_main)
    return parser
