"""Character-level language model on Tiny Shakespeare (Karpathy's char-rnn task).

::

    chars ─► Embedding ─► structnets.RNN (stacked LSTM or GRU) ─► Linear ─► next-char logits
                               ▲                    │
                               └── (h, c) carried ──┘ across chunks, detached

Training is truncated backpropagation through time over parallel streams: the training
text is cut into ``batch_size`` contiguous streams, each read chunk by chunk (``bptt``
characters). The state at the end of a chunk starts the next chunk of the same stream,
detached from the graph, so the model sees arbitrarily long context while gradients flow
through ``bptt`` steps only. The engine counts steps (chunks); one pass over the text is
its epoch, and the task's loss function (:class:`CarriedState`) holds the state from one
chunk to the next and drops it when a pass begins. Every ``eval_every`` steps the bits per
character, ``mean(-log2 p(next char))``, of the first ``eval_chars`` validation characters
are estimated, and the weights of the best estimate are kept: a large model overfits after
its best step. The final figure reads the whole held-out text the same way.

Data: ``tinyshakespeare/input.txt`` in the data directory; the first 90% of characters
train, the last 10% validate (the usual split).

    structnets charlm train --out runs/charlm
    structnets charlm sample --model runs/charlm --prompt "ROMEO:" --temperature 0.8
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..core.cells import ChainCell, State
from ..models import CharLM, CharLMConfig
from ..train.checkpoint import RunDirectory, load_model, open_run
from ..train.config import add_arguments, from_args, shared_fields, to_dict
from ..train.distributed import distributed
from ..train.engine import LRSchedule, TrainConfig, fit, seed_everything
from .characters import Vocabulary, bits_per_character, sample, stream_chunks
from .shakespeare import load_tiny_shakespeare, split_text

__all__ = ["CharLMTaskConfig", "CarriedState", "train", "load_run", "register"]

TASK = "charlm"


@dataclasses.dataclass(frozen=True)
class CharLMTaskConfig:
    """One character-level language-model experiment.

    Attributes:
        cell: the recurrent cell (lstm, gru; elman too).
        hidden_size: state size of every layer.
        num_layers: stacked recurrent layers.
        embedding_size: size of the character embedding.
        dropout: dropout between layers and before the output layer, in training.
        bptt: characters per chunk (steps of truncated backpropagation through time).
        eval_chars: characters of the validation text in the estimates that pick the weights
            kept (the final figure reads all of it).
        eval_batch_size: parallel streams when evaluating.
        sample_prompt: prompt of the sample stored in metrics.json.
        sample_length: characters of that sample.
        sample_temperature: softmax temperature of that sample.
        num_threads: torch threads (a process-wide setting); none keeps torch's choice.
        data_dir: directory holding tinyshakespeare/input.txt; none for $STRUCTNETS_DATA_DIR.
        train: the engine's settings: batch_size parallel streams, steps chunks, Adam with a
            linear warm-up, then cosine decay to min_lr_ratio * lr.
    """

    cell: ChainCell = ChainCell.LSTM
    hidden_size: int = 256
    num_layers: int = 2
    embedding_size: int = 64
    dropout: float = 0.0
    bptt: int = 100
    eval_chars: int = 20_000
    eval_batch_size: int = 32
    sample_prompt: str = "ROMEO:"
    sample_length: int = 500
    sample_temperature: float = 0.8
    num_threads: int | None = None
    data_dir: Path | None = None
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            steps=1250,
            batch_size=64,
            lr=3e-3,
            schedule=LRSchedule.COSINE,
            warmup_steps=30,
            min_lr_ratio=0.05,
            clip_grad_norm=1.0,
            eval_every=125,
        )
    )

    def __post_init__(self) -> None:
        for name in ("bptt", "eval_chars", "eval_batch_size", "sample_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.sample_temperature > 0:
            raise ValueError(f"sample_temperature must be positive, got {self.sample_temperature}")
        self.model_config(1)  # the model's sizes are checked there

    def model_config(self, vocab_size: int) -> CharLMConfig:
        return shared_fields(CharLMConfig, self, vocab_size=vocab_size)


def _detach(state: State) -> State:
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


class CarriedState:
    """The engine's loss function: one chunk's cross-entropy, each stream's state carried to the next.

    The state a chunk ends with is kept, detached (backpropagation is truncated there, the
    state's value goes on), and starts the next chunk; :meth:`reset` drops it when a pass
    over the text begins. It belongs to the task, not the model: the model keeps no state.
    """

    def __init__(self) -> None:
        self.state: State | None = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, model: nn.Module, chunk: tuple[Tensor, Tensor]) -> Tensor:
        inputs, targets = chunk
        logits, state = model(inputs, self.state)
        self.state = _detach(state)
        # A NaN or infinite loss is the engine's to stop on (NonFiniteLossError, naming the step).
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def train(config: CharLMTaskConfig, out: Path, *, text: str | None = None) -> dict[str, Any]:
    """Trains, measures validation bits per character on the whole held-out text, samples.

    Writes ``metrics.json`` (``val_bpc``, ``sample``, curves, config), ``timing.json``,
    ``model.pt`` and ``curves.png`` into the run directory ``out``. ``text`` replaces Tiny
    Shakespeare (for tests).
    """
    out = RunDirectory.check_target(out)
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    seed_everything(config.train.seed)
    device = torch.device(config.train.device)
    text = load_tiny_shakespeare(config.data_dir) if text is None else text
    train_text, val_text = split_text(text)
    vocabulary = Vocabulary.build(text)
    train_tokens, val_tokens = vocabulary.encode(train_text), vocabulary.encode(val_text)
    vocabulary.encode(config.sample_prompt)  # a prompt the text cannot spell fails now, not after training
    model = CharLM(config.model_config(len(vocabulary))).to(device)
    streams, bptt = config.train.batch_size, config.bptt
    carried = CarriedState()
    with distributed(device) as here:
        # Under torchrun each process reads its own contiguous part of the text.
        part = (train_tokens.numel() - 1) // here.world_size
        mine = train_tokens[here.rank * part : (here.rank + 1) * part + 1].to(device)
        chunks_per_epoch = math.ceil(((mine.numel() - 1) // streams) / bptt)

        def batches(epoch: int):
            carried.reset()  # a new pass: every stream starts again from a zero state
            yield from stream_chunks(mine, streams, bptt)

        val_estimate = val_tokens[: config.eval_chars + 1]
        run = RunDirectory.start(out, task=TASK) if here.main else None
        result = fit(
            model,
            carried,
            batches,
            config.train,
            validate=lambda model: {"val_bpc": bits_per_character(model, val_estimate, config.eval_batch_size)},
            monitor="val_bpc",
            steps_per_epoch=chunks_per_epoch,
            run_dir=out if here.main else None,
            description=f"charlm {config.cell.value}",
        )
        model = result.model
        val_bpc = bits_per_character(model, val_tokens, config.eval_batch_size)
        generator = torch.Generator().manual_seed(config.train.seed)
        text_sample = sample(
            model, vocabulary, config.sample_prompt, config.sample_length, config.sample_temperature, generator
        )
        train_curve = [(h["step"], h["train_loss"] / math.log(2)) for h in result.train_history]
        val_curve = [(h["step"], h["val_bpc"]) for h in result.validation_history]
        metrics: dict[str, Any] = {
            "val_bpc": val_bpc,
            "val_nats_per_char": val_bpc * math.log(2),
            "val_chars": val_tokens.numel(),
            "train_chars": train_tokens.numel(),
            "vocab_size": len(vocabulary),
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_steps": result.steps,
            "train_epochs": result.steps / chunks_per_epoch,
            "best_step": result.best["step"] if result.best else None,
            "best_val_bpc_estimate": result.best["val_bpc"] if result.best else None,
            "train_bpc_curve": train_curve,
            "val_bpc_curve": val_curve,
            "sample": text_sample,
            "sample_temperature": config.sample_temperature,
            "config": to_dict(config),
        }
        if run is not None:
            run.write_json("metrics.json", metrics)
            run.write_json("timing.json", {**result.timing(), "torch": torch.__version__})
            run.save_model(model, task_config=config, extra={"vocabulary": vocabulary.characters})
            run.save_figure("curves.png", _curves(train_curve, val_curve, val_bpc), dpi=110)
            run.finish()
    return metrics


def _curves(train_curve: list, val_curve: list, final_val_bpc: float):
    """Training and validation bits per character against steps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if train_curve:
        ax.plot(*zip(*train_curve), marker=".", label="train (mean over the last chunks)")
    if val_curve:
        ax.plot(*zip(*val_curve), marker=".", label="validation (estimate)")
    ax.axhline(final_val_bpc, color="grey", linestyle=":", label=f"kept weights, whole validation {final_val_bpc:.3f}")
    ax.set_xlabel("step (chunk)")
    ax.set_ylabel("bits per character")
    ax.set_title("Tiny Shakespeare character LM")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def load_run(path: Path, map_location: str | torch.device = "cpu") -> tuple[CharLM, Vocabulary]:
    """The trained model of a finished ``charlm`` run and its vocabulary."""
    model, checkpoint = load_model(open_run(path, task=TASK), task=TASK, map_location=map_location)
    return model, Vocabulary(checkpoint.extra["vocabulary"])


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _train_main(args: argparse.Namespace) -> int:
    metrics = train(from_args(CharLMTaskConfig, args), args.out)
    print(
        f"validation: {metrics['val_bpc']:.4f} bits per character ({metrics['val_nats_per_char']:.4f} nats) with "
        f"the weights of step {metrics['best_step']} of {metrics['train_steps']} ({metrics['train_epochs']:.2f} epochs)"
    )
    print(metrics["sample"])
    print(f"\nwrote {args.out / 'metrics.json'}, timing.json, model.pt, curves.png")
    return 0


def _sample_main(args: argparse.Namespace) -> int:
    model, vocabulary = load_run(args.model, map_location=args.device)
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
    train_parser = commands.add_parser("train", help="train; writes metrics.json (val_bpc, sample), model.pt, curves")
    train_parser.add_argument("--out", type=Path, required=True, help="run directory for the outputs")
    add_arguments(train_parser, CharLMTaskConfig)
    train_parser.set_defaults(func=_train_main)

    sample_parser = commands.add_parser("sample", help="continue a prompt with a trained model")
    sample_parser.add_argument("--model", type=Path, required=True, help="run directory of `structnets charlm train`")
    sample_parser.add_argument("--prompt", required=True, help="text to continue (characters of the training text)")
    sample_parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature > 0 (default: 1)")
    sample_parser.add_argument("--length", type=int, default=500, help="characters to generate (default: 500)")
    sample_parser.add_argument("--seed", type=int, default=0, help="seed of the sampling (default: 0)")
    sample_parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    sample_parser.set_defaults(func=_sample_main)
    return parser
