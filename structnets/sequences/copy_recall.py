"""The copy and associative recall tasks of Graves et al. (2014), for memory-augmented networks.

Copy is trained on lengths ``min_size..max_train_size`` and tested at twice that length: a
network that learned to store and replay (rather than memorise short patterns) keeps its
per-bit accuracy. Recall is trained on ``min_size..max_train_size`` items and tested at
twice as many. The data are in :mod:`structnets.sequences.copy_recall_data`, the network is
:class:`structnets.models.MemoryNetwork` (NTM or DNC), and training is the engine's
(:func:`structnets.train.engine.fit`): binary cross-entropy per scored bit, gradients
clipped, a fixed validation batch at the training sizes scored every ``eval_every`` steps
whose best loss picks the kept weights (optionally an EMA of them, ``--ema-decay``). A
non-finite loss stops training with an error naming the step (the engine's
``NonFiniteLossError``), before any checkpoint is written, and outputs that are NaN or
infinite are refused rather than scored.

Capacity: the memory has ``memory_size`` locations, and a write head writes at most one
location's worth per step, so the model is built for sequences of at most ``memory_size``
data steps (``L`` for copy, ``K * item_length`` for recall); longer ones are refused with an
error instead of silently failing.

    structnets memory train --task copy --out runs/copy
    structnets memory evaluate --model runs/copy --length 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from ..models.memory_network import MemoryNetwork
from ..train import checkpoint
from ..train import config as configs
from ..train.checkpoint import RunDirectory, open_run
from ..train.data import check_finite
from ..train.engine import TrainResult, fit, seed_everything
from ..train.threads import torch_threads
from .copy_recall_config import TASK_DEFAULTS, MemoryTaskConfig, check_capacity, make_batch, training_batch
from .copy_recall_data import Task, TaskBatch, bit_errors, masked_loss
from .plots import save_figure, training_figure, weightings_figure
from .streams import stream_of, without_epoch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "TASK", "MemoryTaskConfig", "Task", "Outcome", "build_model", "train", "evaluate", "accuracy_by_length",
    "weightings", "run", "load_model", "register",
]  # fmt: skip

TASK = "memory"
# Evaluation, plotting and validation data come from generators seeded away from the training stream.
_EVAL_SEED_OFFSET = 1_000_003


class Outcome(NamedTuple):
    """What :func:`run` wrote: the results (``metrics.json``), the timings (``timing.json``), the model."""

    metrics: dict[str, Any]
    timing: dict[str, float]
    model: MemoryNetwork


def build_model(config: MemoryTaskConfig) -> MemoryNetwork:
    return MemoryNetwork(config.model_config())


def _loss(model: MemoryNetwork, batch: TaskBatch) -> Tensor:
    # A NaN or infinite loss is the engine's to stop on (NonFiniteLossError, naming the step).
    return masked_loss(model(batch.inputs).outputs, batch)


def _outputs(model: MemoryNetwork, batch: TaskBatch, what: str) -> Tensor:
    """The model's logits; a ValueError if any is NaN or infinite (a threshold would score them all the same)."""
    logits = model(batch.inputs).outputs
    check_finite(logits, f"{TASK}: the model's outputs on {what}")
    return logits


def train(config: MemoryTaskConfig, *, run_dir: str | Path | None = None) -> TrainResult:
    """Trains on sizes ``min_size..max_train_size`` (one size per sequence, uniform); keeps the best validated weights."""
    seed_everything(config.train.seed)
    device = torch.device(config.train.device)
    model = build_model(config).to(device)
    generator = torch.Generator().manual_seed(config.train.seed + 3 * _EVAL_SEED_OFFSET)
    held_out = training_batch(config, generator, config.eval_sequences).to(device)

    def validate(model: MemoryNetwork) -> dict[str, float]:
        logits = _outputs(model, held_out, "the validation batch")
        wrong, scored = bit_errors(logits, held_out)
        return {
            "val_loss": float(masked_loss(logits, held_out)),
            "val_bit_accuracy": float(1 - wrong.sum() / scored.sum()),
        }

    def draw(generator: torch.Generator) -> TaskBatch:
        return training_batch(config, generator, config.train.batch_size).to(device)

    with torch_threads(config.num_threads):
        return fit(
            model,
            _loss,
            stream_of(draw, config.train),
            config.train,
            validate=validate,
            monitor="val_loss",
            run_dir=run_dir,
            description=f"{config.task.value} {config.addressing.value}",
        )


@torch.no_grad()
def evaluate(model: MemoryNetwork, config: MemoryTaskConfig, size: int | None = None) -> dict[str, float]:
    """Per-bit accuracy, exact-sequence accuracy and loss on fresh sequences of one size (default: the test size)."""
    size = config.test_size if size is None else size
    check_capacity(config, size)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(config.train.seed + _EVAL_SEED_OFFSET + size)
    batch = make_batch(config, torch.full((config.eval_sequences,), size), generator).to(device)
    with torch_threads(config.num_threads):
        logits = _outputs(model, batch, f"sequences of size {size}")
    wrong, scored = bit_errors(logits, batch)
    return {
        "size": size,
        "bit_accuracy": float(1 - wrong.sum() / scored.sum()),
        "sequence_accuracy": float((wrong == 0).float().mean()),
        "loss": float(masked_loss(logits, batch)),
    }


def accuracy_by_length(model: MemoryNetwork, config: MemoryTaskConfig, largest: int | None = None) -> dict[str, float]:
    """Per-bit accuracy at every size from ``min_size`` to ``largest`` (default: the test size)."""
    largest = config.test_size if largest is None else largest
    return {str(s): evaluate(model, config, s)["bit_accuracy"] for s in range(config.min_size, largest + 1)}


@torch.no_grad()
def weightings(model: MemoryNetwork, config: MemoryTaskConfig, size: int | None = None) -> Figure:
    """Inputs, outputs, and the write and read weightings over time for one test sequence."""
    size = config.test_size if size is None else size
    check_capacity(config, size)
    generator = torch.Generator().manual_seed(config.train.seed + 2 * _EVAL_SEED_OFFSET + size)
    batch = make_batch(config, torch.tensor([size]), generator)
    with torch_threads(config.num_threads):
        result = model(batch.inputs.to(next(model.parameters()).device))
    panels = [
        ("inputs", batch.inputs[0].T),
        ("outputs (probability)", torch.sigmoid(result.outputs[0]).cpu().T * batch.mask[0]),
        ("write weighting", result.write_weights[0].T),
        ("read weighting (head 1)", result.read_weights[0, :, 0].T),
    ]
    trained = f"trained up to {config.max_train_size}"
    return weightings_figure(panels, title=f"{config.addressing.name} on {config.task.value}, size {size} ({trained})")


def run(config: MemoryTaskConfig, out_dir: str | Path) -> Outcome:
    """Trains, evaluates at every size up to the test size, and writes the run directory ``out_dir``.

    ``metrics.json``: the test and largest-training-size results, accuracy by size, the kept
    validation, clipped steps, loss and gradient-norm curves (the engine's history),
    ``finite``; ``timing.json``: seconds; ``model.pt``; ``training.png``; ``weightings.png``.
    """
    out = RunDirectory.start(out_dir, task=TASK)
    result = train(config, run_dir=out.path)
    model, started = result.model, time.perf_counter()
    accuracy = accuracy_by_length(model, config)
    losses = [entry["train_loss"] for entry in result.train_history]
    norms = [entry["grad_norm"] for entry in result.train_history]
    metrics: dict[str, Any] = {
        "test": evaluate(model, config),
        "train_max": evaluate(model, config, config.max_train_size),
        "accuracy_by_size": accuracy,
        "validation": without_epoch(result.best),
        "train_steps": result.steps,
        "stop": result.stop.value,
        "clipped_steps": result.clipped_steps,
        "train_loss_curve": losses,
        "grad_norm_curve": norms,
        "validation_curve": [without_epoch(entry) for entry in result.validation_history],
        "finite": all(math.isfinite(v) for v in losses + norms),
    }
    timing = {**result.timing(), "eval_seconds": time.perf_counter() - started}
    out.write_json("metrics.json", metrics)
    out.write_json("timing.json", timing)
    out.save_model(model, task_config=config)
    size_label = "sequence length" if config.task is Task.COPY else "items"
    trained = (config.min_size, config.max_train_size)
    figure = training_figure(
        result.history, accuracy, clip=config.train.clip_grad_norm, trained=trained, size_label=size_label
    )
    out.save_figure("training.png", figure, dpi=110)
    out.save_figure("weightings.png", weightings(model, config), dpi=110)
    out.finish()
    return Outcome(metrics, timing, model)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[MemoryNetwork, MemoryTaskConfig]:
    """The model of a finished memory run (its directory or ``model.pt``) and its task config.

    Raises:
        CheckpointError: an incomplete run, a run or checkpoint of another task, changed files.
        FileNotFoundError: no run there.
    """
    open_run(path, task=TASK)
    model, saved = checkpoint.load_model(path, task=TASK, map_location=map_location)
    return model, configs.from_dict(MemoryTaskConfig, saved.task_config)


def _train_main(args: argparse.Namespace) -> int:
    config = configs.from_args(MemoryTaskConfig, args)
    RunDirectory.check_target(args.out)
    outcome = run(config, args.out)
    test = outcome.metrics["test"]
    print(
        f"{config.task.value} ({config.addressing.name}): per-bit accuracy {test['bit_accuracy']:.4f} at size "
        f"{test['size']} (trained on {config.min_size}-{config.max_train_size}); "
        f"{outcome.metrics['train_steps']} steps in {outcome.timing['train_seconds']:.0f} s"
    )
    print(f"wrote {args.out / 'metrics.json'}, timing.json, model.pt, training.png, weightings.png")
    return 0


def _evaluate_main(args: argparse.Namespace) -> int:
    model, config = load_model(args.model, map_location=args.device)
    if args.eval_sequences is not None:
        config = dataclasses.replace(config, eval_sequences=args.eval_sequences)
    print(json.dumps(evaluate(model, config, args.length)))
    if args.plot is not None:
        save_figure(weightings(model, config, args.length), args.plot)
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``structnets memory train|evaluate``."""
    parser = subparsers.add_parser(
        TASK,
        help="NTM / DNC on the copy and associative recall tasks",
        description="Train a memory-augmented network on short sequences and test it on twice the length.",
    )
    commands = parser.add_subparsers(dest="memory_command", metavar="{train,evaluate}", required=True)
    train_parser = commands.add_parser("train", help="train and evaluate; writes a run directory")
    train_parser.add_argument("--out", type=Path, required=True, help="the run directory (metrics.json, model.pt, ...)")
    # The task-dependent sizes default to none on the command line, so that --task recall gets its own.
    defaults = MemoryTaskConfig()
    flag_defaults = {field.name: getattr(defaults, field.name) for field in dataclasses.fields(MemoryTaskConfig)}
    flag_defaults.update(dict.fromkeys(TASK_DEFAULTS[Task.COPY]))
    configs.add_arguments(
        train_parser, MemoryTaskConfig, defaults=SimpleNamespace(**flag_defaults), exclude=("epochs",)
    )
    train_parser.add_argument(
        "--grad-clip-norm",
        dest="clip_grad_norm",
        type=float,
        default=argparse.SUPPRESS,
        help="old name of --clip-grad-norm",
    )
    train_parser.set_defaults(func=_train_main)

    evaluate_parser = commands.add_parser("evaluate", help="per-bit accuracy of a trained model at one size")
    evaluate_parser.add_argument("--model", type=Path, required=True, help="a finished run directory (or its model.pt)")
    evaluate_parser.add_argument(
        "--length", type=int, help="length (copy) or items (recall) (default: the run's test size, 2x training)"
    )
    evaluate_parser.add_argument("--eval-sequences", type=int, help="test sequences (default: the run's)")
    evaluate_parser.add_argument("--plot", type=Path, help="also write the weightings plot here (default: none)")
    evaluate_parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    evaluate_parser.set_defaults(func=_evaluate_main)
    return parser
