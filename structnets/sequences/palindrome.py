"""Palindrome recognition: a length-generalisation benchmark for recurrent networks.

The task, from a lecture on recurrent networks: read a sequence of digits and say whether
it is a palindrome, a binary classification with balanced labels; the negatives are near
misses with one mirrored pair broken (:mod:`structnets.sequences.palindrome_data`).

Models are trained on lengths ``1..max_train_length`` (uniform over lengths) and evaluated
on fresh sequences, drawn from a generator with a different seed, at every length
``1..max_eval_length``; lengths beyond the training range measure extrapolation. The model
is :class:`structnets.models.SequenceClassifier` (``embedding -> RNN -> final hidden state ->
MLP -> logit``), trained by the engine (:func:`structnets.train.engine.fit`).

Typical use::

    from structnets.core.cells import ChainCell
    from structnets.sequences.palindrome import PalindromeConfig, run

    outcome = run(PalindromeConfig(cell=ChainCell.GRU), "runs/palindrome-gru")
    print(outcome.metrics["accuracy_by_length"]["10"])

    structnets palindrome --cell gru --out runs/palindrome-gru
    structnets palindrome evaluate --model runs/palindrome-gru --max-eval-length 60
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from ..models.sequence_classifier import SequenceClassifier
from ..train import checkpoint
from ..train import config as configs
from ..train.checkpoint import RunDirectory, open_run
from ..train.data import check_finite
from ..train.engine import TrainResult, fit, seed_everything
from ..train.threads import torch_threads
from .palindrome_config import PalindromeConfig
from .palindrome_data import sample_fixed_length, sample_training_batch
from .plots import accuracy_figure
from .streams import stream_of, without_epoch

__all__ = [
    "TASK", "SUMMARY_LENGTHS", "PalindromeConfig", "Outcome", "build_model", "train", "evaluate", "run", "load_model",
    "format_summary", "register",
]  # fmt: skip

TASK = "palindrome"
#: Lengths shown in summary tables: inside, at the edge of and beyond training.
SUMMARY_LENGTHS: tuple[int, ...] = (1, 5, 10, 11, 15, 20, 30, 40)
# Offset between the training seed and the evaluation seeds, so that evaluation and
# validation sequences come from other random streams than anything seen in training.
_EVAL_SEED_OFFSET = 1_000_003
# Steps between resume states (train_state.pt) when validating only at the end.
_SAVE_EVERY = 500


class Outcome(NamedTuple):
    """What :func:`run` wrote: the results (``metrics.json``), the timings (``timing.json``), the model."""

    metrics: dict[str, Any]
    timing: dict[str, float]
    model: SequenceClassifier


Batch = tuple[Tensor, Tensor, Tensor]  # tokens [B, T], lengths [B] (CPU), labels [B] float


def build_model(config: PalindromeConfig) -> SequenceClassifier:
    return SequenceClassifier(config.model_config())


def _loss(model: SequenceClassifier, batch: Batch) -> Tensor:
    tokens, lengths, labels = batch
    return F.binary_cross_entropy_with_logits(model(tokens, lengths).squeeze(-1), labels)


def _on(batch: Batch, device: torch.device) -> Batch:
    tokens, lengths, labels = batch
    return tokens.to(device), lengths, labels.to(device)


def train(config: PalindromeConfig, *, run_dir: str | Path | None = None) -> TrainResult:
    """Trains a classifier on lengths ``1..max_train_length``; ``run_dir`` keeps the resume state.

    Every step's batch comes from one generator seeded with ``config.train.seed``, as does
    the initialisation (through the global seed); a fixed validation batch, from its own seed,
    is scored at the end and every ``eval_every`` steps, and the best weights by its loss
    are kept (the last ones when it is scored only at the end).
    """
    seed_everything(config.train.seed)
    device = torch.device(config.train.device)
    model = build_model(config).to(device)
    generator = torch.Generator().manual_seed(config.train.seed + 2 * _EVAL_SEED_OFFSET)
    held_out = _on(
        sample_training_batch(config.val_sequences, config.max_train_length, config.vocab_size, generator), device
    )

    def draw(generator: torch.Generator) -> Batch:
        batch = sample_training_batch(config.train.batch_size, config.max_train_length, config.vocab_size, generator)
        return _on(batch, device)

    def validate(model: SequenceClassifier) -> dict[str, float]:
        logits = model(held_out[0], held_out[1]).squeeze(-1)
        check_finite(logits, f"{TASK}: the model's outputs on the validation batch")
        accuracy = ((logits > 0).float() == held_out[2]).float().mean()
        return {
            "val_loss": float(F.binary_cross_entropy_with_logits(logits, held_out[2])),
            "val_accuracy": float(accuracy),
        }

    with torch_threads(config.num_threads):
        return fit(
            model,
            _loss,
            stream_of(draw, config.train),
            config.train,
            validate=validate,
            monitor="val_loss",
            run_dir=run_dir,
            save_every=_SAVE_EVERY,
            description=f"palindrome {config.cell.value}",
        )


@torch.no_grad()
def evaluate(
    model: SequenceClassifier, config: PalindromeConfig, *, max_length: int | None = None, per_length: int | None = None
) -> dict[str, dict[str, float]]:
    """Accuracy on fresh held-out sequences at every length ``1..max_length`` (default ``max_eval_length``).

    Each length gets ``per_length`` (default ``eval_per_length``) sequences from its own
    generator, seeded from the training seed plus an offset, so evaluation data never comes
    from the training stream and the set for a length does not depend on ``max_length``.
    Labels are exactly balanced at lengths >= 2; at length 1 all sequences are palindromes,
    so that accuracy is over positives only.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    eval_seed = config.train.seed + _EVAL_SEED_OFFSET
    accuracy: dict[str, float] = {}
    with torch_threads(config.num_threads):
        for length in range(1, (max_length or config.max_eval_length) + 1):
            generator = torch.Generator().manual_seed(eval_seed * 1000 + length)
            count = per_length or config.eval_per_length
            tokens, lengths, labels = sample_fixed_length(length, count, config.vocab_size, generator)
            logits = model(tokens.to(device), lengths).squeeze(-1)
            # NaN > 0 is False: a broken model would score as if it answered "no" everywhere.
            check_finite(logits, f"{TASK}: the model's outputs at length {length}")
            predictions = (logits > 0).float().cpu()
            accuracy[str(length)] = (predictions == labels).float().mean().item()
    model.train(was_training)
    return {"accuracy_by_length": accuracy}


def _title(config: PalindromeConfig) -> str:
    direction = "bidirectional " if config.bidirectional else ""
    return f"Palindrome recognition: {direction}{config.cell.value}, hidden {config.hidden_size}"


def run(config: PalindromeConfig, out_dir: str | Path) -> Outcome:
    """Trains, evaluates and writes the run directory ``out_dir``.

    ``metrics.json`` holds the results (``accuracy_by_length``, the kept validation, steps,
    the training-loss curve), the same for the same seed; ``timing.json`` the seconds;
    ``model.pt`` the checkpoint (:func:`load_model`); ``accuracy_by_length.png`` the plot.
    """
    out = RunDirectory.start(out_dir, task=TASK)
    result = train(config, run_dir=out.path)
    started = time.perf_counter()
    metrics: dict[str, Any] = {
        **evaluate(result.model, config),
        "validation": without_epoch(result.best),
        "train_steps": result.steps,
        "stop": result.stop.value,
        "train_loss_curve": [entry["train_loss"] for entry in result.train_history],
    }
    timing = {**result.timing(), "eval_seconds": time.perf_counter() - started}
    out.write_json("metrics.json", metrics)
    out.write_json("timing.json", timing)
    out.save_model(result.model, task_config=config)
    figure = accuracy_figure(
        metrics["accuracy_by_length"], max_train_length=config.max_train_length, title=_title(config)
    )
    out.save_figure("accuracy_by_length.png", figure, dpi=120)
    out.finish()
    return Outcome(metrics, timing, result.model)


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[SequenceClassifier, PalindromeConfig]:
    """The model of a finished palindrome run (its directory or ``model.pt``) and its config.

    Raises:
        CheckpointError: an incomplete run, a run or checkpoint of another task, changed files.
        FileNotFoundError: no run there.
    """
    open_run(path, task=TASK)
    model, saved = checkpoint.load_model(path, task=TASK, map_location=map_location)
    return model, configs.from_dict(PalindromeConfig, saved.task_config)


def format_summary(
    metrics: Mapping[str, Any], timing: Mapping[str, float] | None = None, lengths: Sequence[int] = SUMMARY_LENGTHS
) -> str:
    """A one-row markdown table of accuracy at ``lengths`` (those evaluated), and training seconds if given."""
    accuracy = metrics["accuracy_by_length"]
    shown = [length for length in lengths if str(length) in accuracy]
    header = "| " + " | ".join(f"L={length}" for length in shown) + " |" + (" train s |" if timing else "")
    rule = "|" + "---:|" * (len(shown) + (1 if timing else 0))
    row = "| " + " | ".join(f"{accuracy[str(length)]:.3f}" for length in shown) + " |"
    row += f" {timing['train_seconds']:.0f} |" if timing else ""
    return "\n".join([header, rule, row])


def _main(args: argparse.Namespace) -> int:
    if args.palindrome_command == "evaluate":
        if args.model is None:
            raise ValueError("palindrome evaluate needs --model DIR (a finished palindrome run)")
        model, config = load_model(args.model, map_location=args.device)
        metrics = evaluate(model, config, max_length=args.max_eval_length, per_length=args.eval_per_length)
        print(format_summary(metrics))
        print(json.dumps(metrics))
        return 0
    if args.out is None:
        raise ValueError("palindrome training needs --out DIR")
    RunDirectory.check_target(args.out)
    outcome = run(configs.from_args(PalindromeConfig, args), args.out)
    print(format_summary(outcome.metrics, outcome.timing))
    print(f"\nwrote {args.out / 'metrics.json'}, {args.out / 'model.pt'}, {args.out / 'accuracy_by_length.png'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``structnets palindrome [train] --out DIR ...`` and ``structnets palindrome evaluate --model DIR``."""
    parser = subparsers.add_parser(
        TASK,
        help="train and evaluate an RNN on palindrome recognition",
        description="Train on digit sequences of length 1-10 and report held-out accuracy at every length up to 40.",
    )
    parser.add_argument(
        "palindrome_command",
        nargs="?",
        choices=("train", "evaluate"),
        default="train",
        metavar="{train,evaluate}",
        help="train (the default) into --out, or evaluate the run at --model (default: train)",
    )
    parser.add_argument("--out", type=Path, help="train: the run directory (metrics.json, timing.json, model.pt, plot)")
    parser.add_argument("--model", type=Path, help="evaluate: a finished run directory, scored up to --max-eval-length")
    configs.add_arguments(parser, PalindromeConfig, exclude=("epochs",))
    parser.set_defaults(func=_main)
    return parser
