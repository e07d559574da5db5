"""Learning to Execute (Zaremba & Sutskever, 2014): a sequence-to-sequence model that prints a program's output.

The programs are those of the paper's grammar (:mod:`structnets.sequences.programs`: integer
arithmetic, assignments, ``if`` expressions and ``for`` loops, with literals of up to
``length`` digits and ``nesting`` composed operations), generated on the fly from the run's
seed and each checked by running it with Python. A :class:`~structnets.models.Seq2Seq`
reads the program's characters and writes those of the printed integer, then a stop symbol;
it is trained by the engine (:func:`structnets.train.engine.fit`) on programs whose levels
the curriculum chooses (``baseline``, ``naive``, ``mix``, ``blend``), and the weights kept
are those with the best held-out per-character accuracy at the target level (L, N).

The measure is the paper's: per-character accuracy under teacher forcing (each output
character predicted from the program and the true characters before it; the stop symbol
counts, as in the authors' ``MaskedLoss``). ``metrics.json`` gives it on fresh test-split
programs for every length 1..L+1 and nesting 1..N+1 (one beyond the training range each
way), beside the exact-match accuracy of greedy and of beam decoding.

The paper's figures are not cited here: we could not read them. The stored copies of the
paper (arXiv:1410.4615: arxiv-vanity.com/papers/1410.4615, groundai.com/project/learning-to-execute,
deepai.org/publication/learning-to-execute, fdocuments.in/document/14104615v1.html) hold only
its opening sections, so no figure or table of accuracy by length, nesting and curriculum
could be checked. Notes on the paper (github.com/ghtwht/deeplearning-papernotes,
notes/learning-to-execute.md; commonlounge.com) give two layers of 400 LSTM cells, the
teacher-forced measure, and that the mixed or combined curriculum almost always did best.
The authors' code (``wojciechz/learning_to_execute``, ``main.lua``) trains towards length 6
and nesting 3 with the blend curriculum by default: this task's defaults. Its model, a
2-layer LSTM of 400 units trained by SGD at 0.5 from a uniform [-0.08, 0.08] start, is
``--attention none --no-input-feeding --no-bidirectional --embedding-size 400 --optimizer sgd
--lr 0.5 --init-range 0.08`` (an encoder-decoder where theirs is one LSTM reading the program
then writing; ``benchmarks/learning_to_execute.py`` runs it beside this task's defaults).

    structnets sequences execute --length 4 --nesting 2 --curriculum mix --out runs/execute
"""

from __future__ import annotations

import argparse
import itertools
import random
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from ..models.seq2seq import Seq2Seq, sequence_loss
from ..models.tree2seq import Tree2Seq, Tree2SeqConfig
from ..train import checkpoint
from ..train import config as configs
from ..train.checkpoint import RunDirectory, open_run
from ..train.data import check_finite
from ..train.engine import RESUME_FILE, TrainResult, fit, resumed_step, seed_everything
from ..train.threads import torch_threads
from .execute_config import ExecuteConfig, ExecuteEncoder, ExecuteOptimizer
from .programs import (
    MAX_NESTING,
    VOCABULARY,
    CurriculumSchedule,
    Level,
    ProgramBatch,
    Split,
    encode_batch,
    sample_program,
)
from .streams import without_epoch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "TASK", "ExecuteConfig", "ExecuteEncoder", "ExecuteOptimizer", "Outcome", "Scores", "build_model", "held_out", "training_batch", "score", "train",
    "evaluate", "accuracy_table", "run", "load_model", "format_table", "accuracy_figure", "register",
]  # fmt: skip

TASK = "execute"
# Each training step draws its programs from a generator seeded with (seed, step), so that a
# resumed run draws the batches an uninterrupted one would without replaying the stream.
_STEP_SEEDS = 1_000_003
_EVAL_SEED_OFFSET = 7_919
_CHUNK = 250  # programs per forward pass when scoring


class Outcome(NamedTuple):
    """What :func:`run` wrote: the results (``metrics.json``), the timings (``timing.json``), the model."""

    metrics: dict[str, Any]
    timing: dict[str, float]
    model: Seq2Seq


class Scores(NamedTuple):
    """Scores of a model on a set of programs (exact matches ``None`` where not decoded)."""

    char_accuracy: float
    loss: float
    greedy_exact: float | None = None
    beam_exact: float | None = None


def build_model(config: ExecuteConfig) -> Seq2Seq:
    """A :class:`Seq2Seq` over the program's characters, or with ``--encoder tree`` a :class:`Tree2Seq` over its tree."""
    model_config = config.model_config()
    model = Tree2Seq(model_config) if isinstance(model_config, Tree2SeqConfig) else Seq2Seq(model_config)
    if config.init_range is not None:  # the authors' initialisation: every parameter uniform in [-r, r]
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.uniform_(-config.init_range, config.init_range)
            for module in model.modules():  # padding stays the zero vector
                if isinstance(module, torch.nn.Embedding) and module.padding_idx is not None:
                    module.weight[module.padding_idx] = 0.0
    return model


def _inputs(batch: ProgramBatch) -> tuple[Any, Tensor | None]:
    """The model's ``(source, source_lengths)``: the syntax trees where the batch has them, else the characters."""
    return (batch.trees, None) if batch.trees is not None else (batch.source, batch.source_lengths)


def _loss(model: Seq2Seq, batch: ProgramBatch) -> Tensor:
    logits = model(*_inputs(batch), batch.target_in)
    return sequence_loss(logits, batch.target_out, VOCABULARY.pad)


def held_out(level: Level, split: Split, count: int, seed: int, *, trees: bool = False) -> list[ProgramBatch]:
    """``count`` programs of ``level`` from ``split``, the same for the same seed, in batches of at most 250
    (with ``trees``, their syntax trees too)."""
    rng = random.Random((seed + _EVAL_SEED_OFFSET) * _STEP_SEEDS + 1000 * level.length + level.nesting)
    programs = [sample_program(rng, *level, split) for _ in range(count)]
    return [encode_batch(programs[start : start + _CHUNK], trees=trees) for start in range(0, count, _CHUNK)]


def _exact(tokens: Tensor, batch: ProgramBatch) -> int:
    """Rows whose decoded tokens ``[B, T]`` (the target's width), up to the stop symbol and pad after, are the target's."""
    return int((tokens.cpu() == batch.target_out.cpu()).all(1).sum())


@torch.no_grad()
def score(
    model: Seq2Seq,
    batches: list[ProgramBatch],
    *,
    decode: bool = False,
    beam_width: int = 0,
    length_penalty: float = 1.0,
) -> Scores:
    """Teacher-forced per-character accuracy and loss; with ``decode``, greedy and beam exact-match accuracy too.

    Characters are pooled over all programs (the stop symbol included), as the authors count.
    """
    device = next(model.parameters()).device
    correct = total = exact_greedy = exact_beam = programs = 0
    loss_sum = 0.0
    for batch in batches:
        batch = batch.to(device)
        source, source_lengths = _inputs(batch)
        logits = model(source, source_lengths, batch.target_in)
        check_finite(logits, f"{TASK}: the model's outputs")
        scored = batch.target_out != VOCABULARY.pad
        characters = int(scored.sum())
        correct += int(((logits.argmax(-1) == batch.target_out) & scored).sum())
        total += characters
        loss_sum += float(sequence_loss(logits, batch.target_out, VOCABULARY.pad)) * characters
        programs += batch.target_out.shape[0]
        if decode:
            width = batch.target_out.shape[1]
            exact_greedy += _exact(model.greedy(source, source_lengths, width), batch)
            if beam_width:
                beams = model.beam_search(source, source_lengths, width, beam_width, length_penalty)
                exact_beam += _exact(beams, batch)
    return Scores(
        correct / total,
        loss_sum / total,
        exact_greedy / programs if decode else None,
        exact_beam / programs if decode and beam_width else None,
    )


def training_batch(
    schedule: CurriculumSchedule, seed: int, step: int, count: int, *, trees: bool = False
) -> ProgramBatch:
    """The training programs of optimiser step ``step``: levels from ``schedule``, drawn from a generator seeded by
    ``(seed, step)`` alone, from the training split (with ``trees``, their syntax trees too)."""
    rng = random.Random(seed * _STEP_SEEDS + step)
    programs = [sample_program(rng, *level, Split.TRAIN) for level in schedule.levels(rng, count)]
    return encode_batch(programs, trees=trees)


def _resumed_level(config: ExecuteConfig) -> Level | None:
    """The curriculum's level when the run that ``--resume`` continues stopped (None: start at (1, 1))."""
    if config.train.resume is None:
        return None
    path = Path(config.train.resume)
    path = path / RESUME_FILE if path.is_dir() else path
    if not path.is_file():
        return None  # the engine reports the missing state
    history = torch.load(path, map_location="cpu", weights_only=True)["history"]
    levels = [entry for entry in history if "level_length" in entry]
    return Level(int(levels[-1]["level_length"]), int(levels[-1]["level_nesting"])) if levels else None


def train(config: ExecuteConfig, *, run_dir: str | Path | None = None) -> tuple[TrainResult, CurriculumSchedule]:
    """Trains under the curriculum; returns the engine's result and the curriculum where it ended.

    At every validation the model is scored on held-out programs of the target level (the
    kept weights are the best by that per-character accuracy) and, for naive and blend, on
    those of the current level, which the schedule takes to move the level up. The level
    after each validation is in its history entry (``level_length``, ``level_nesting``).
    """
    seed_everything(config.train.seed)
    device = torch.device(config.train.device)
    model = build_model(config).to(device)
    schedule = config.schedule()
    if (level := _resumed_level(config)) is not None:
        schedule.level = level
    seed, trees = config.train.seed, config.trees
    target_set = held_out(config.target, Split.VALIDATION, config.val_programs, seed, trees=trees)
    level_sets: dict[Level, list[ProgramBatch]] = {}

    def validate(model: Seq2Seq) -> dict[str, float]:
        scores = score(model, target_set)
        metrics = {"val_loss": scores.loss, "val_char_accuracy": scores.char_accuracy}
        if schedule.uses_level:
            level = schedule.level
            if level not in level_sets:
                level_sets[level] = held_out(level, Split.VALIDATION, config.val_programs, seed, trees=trees)
            accuracy = score(model, level_sets[level]).char_accuracy
            schedule.update(accuracy)
            metrics.update(
                level_char_accuracy=accuracy, level_length=schedule.level.length, level_nesting=schedule.level.nesting
            )
        return metrics

    def batches(epoch: int) -> Iterator[ProgramBatch]:
        for step in itertools.count(resumed_step(config.train.resume)):
            yield training_batch(schedule, seed, step, config.train.batch_size, trees=trees).to(device)

    with torch_threads(config.num_threads):
        result = fit(
            model,
            _loss,
            batches,
            config.train,
            validate=validate,
            optimizer=lambda parameters: config.optimizer.build(parameters, config.train.lr, config.train.weight_decay),
            monitor="val_char_accuracy",
            maximize=True,
            run_dir=run_dir,
            description=f"execute {config.encoder.value} {config.curriculum.value} L={config.length} N={config.nesting}",
        )
    return result, schedule


def evaluate(model: Seq2Seq, config: ExecuteConfig, level: Level) -> Scores:
    """Teacher-forced accuracy, and greedy and beam exact match, on ``eval_programs`` test programs of ``level``."""
    batches = held_out(Level(*level), Split.TEST, config.eval_programs, config.train.seed, trees=config.trees)
    with torch_threads(config.num_threads):
        return score(model, batches, decode=True, beam_width=config.beam_width, length_penalty=config.length_penalty)


def accuracy_table(model: Seq2Seq, config: ExecuteConfig) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{measure: {length: {nesting: value}}}`` for lengths 1..L+1 and nesting 1..N+1 (at most 10)."""
    table: dict[str, dict[str, dict[str, float | None]]] = {"char_accuracy": {}, "greedy_exact": {}, "beam_exact": {}}
    for length in range(1, config.length + 2):
        for nesting in range(1, min(config.nesting + 1, MAX_NESTING) + 1):
            scores = evaluate(model, config, Level(length, nesting))
            for measure in table:
                table[measure].setdefault(str(length), {})[str(nesting)] = getattr(scores, measure)
    return table


def run(config: ExecuteConfig, out_dir: str | Path) -> Outcome:
    """Trains, fills the length x nesting table and writes the run directory ``out_dir``.

    ``metrics.json``: the encoder (sequence or tree), ``char_accuracy``, ``greedy_exact`` and ``beam_exact`` (each
    ``{length: {nesting: value}}``), ``at_target`` (the three at (L, N)), the curriculum and
    where its level ended, the kept validation, steps, the loss and validation curves;
    ``timing.json``; ``model.pt``; ``accuracy.png`` (the three tables as heat maps).
    """
    out = RunDirectory.start(out_dir, task=TASK)
    result, schedule = train(config, run_dir=out.path)
    model, started = result.model, time.perf_counter()
    table = accuracy_table(model, config)
    at = (str(config.length), str(config.nesting))
    metrics: dict[str, Any] = {
        "target": {"length": config.length, "nesting": config.nesting},
        "curriculum": config.curriculum.value,
        "encoder": config.encoder.value,
        **table,
        "at_target": {measure: values[at[0]][at[1]] for measure, values in table.items()},
        "beam_width": config.beam_width,
        "final_level": {"length": schedule.level.length, "nesting": schedule.level.nesting}
        if schedule.uses_level
        else None,
        "validation": without_epoch(result.best),
        "train_steps": result.steps,
        "stop": result.stop.value,
        "train_loss_curve": [entry["train_loss"] for entry in result.train_history],
        "validation_curve": [without_epoch(entry) for entry in result.validation_history],
    }
    timing = {**result.timing(), "eval_seconds": time.perf_counter() - started}
    out.write_json("metrics.json", metrics)
    out.write_json("timing.json", timing)
    out.save_model(model, task_config=config)
    out.save_figure("accuracy.png", accuracy_figure(metrics, config), dpi=110)
    out.finish()
    return Outcome(metrics, timing, model)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Seq2Seq, ExecuteConfig]:
    """The model of a finished execute run (its directory or ``model.pt``) and its config.

    Raises:
        CheckpointError: an incomplete run, a run or checkpoint of another task, changed files.
        FileNotFoundError: no run there.
    """
    open_run(path, task=TASK)
    model, saved = checkpoint.load_model(path, task=TASK, map_location=map_location)
    return model, configs.from_dict(ExecuteConfig, saved.task_config)


def format_table(values: Mapping[str, Mapping[str, float | None]]) -> str:
    """A markdown table of one measure: a row per length, a column per nesting."""
    nestings = list(next(iter(values.values())))
    lines = ["| length | " + " | ".join(f"N={n}" for n in nestings) + " |", "|---:|" + "---:|" * len(nestings)]
    for length, row in values.items():
        cells = ("-" if row[n] is None else f"{row[n]:.3f}" for n in nestings)
        lines.append(f"| {length} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def accuracy_figure(metrics: Mapping[str, Any], config: ExecuteConfig) -> Figure:
    """Heat maps of the three measures by length (rows) and nesting (columns), the trained region outlined."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    measures = [
        ("char_accuracy", "per-character, teacher forced"),
        ("greedy_exact", "exact match, greedy"),
        ("beam_exact", f"exact match, beam {config.beam_width}"),
    ]
    fig = Figure(figsize=(4.2 * len(measures), 4.2))
    axes = fig.subplots(1, len(measures), squeeze=False)[0]
    for ax, (key, title) in zip(axes, measures):
        lengths = list(metrics[key])
        nestings = list(metrics[key][lengths[0]])
        grid = [
            [float("nan") if metrics[key][length][n] is None else metrics[key][length][n] for n in nestings]
            for length in lengths
        ]
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                if value == value:  # not NaN
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="w" if value < 0.6 else "k")
        ax.add_patch(Rectangle((-0.5, -0.5), config.nesting, config.length, fill=False, ec="r", ls="--", lw=1.5))
        ax.set_xticks(range(len(nestings)), nestings)
        ax.set_yticks(range(len(lengths)), lengths)
        ax.set_xlabel("nesting")
        ax.set_ylabel("length (digits)")
        ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=list(axes), fraction=0.02)
    fig.suptitle(
        f"Learning to Execute: {config.curriculum.value} curriculum, trained to L={config.length}, "
        f"N={config.nesting} (dashed)",
        fontsize=11,
    )
    return fig


def _main(args: argparse.Namespace) -> int:
    config = configs.from_args(ExecuteConfig, args)
    RunDirectory.check_target(args.out)
    outcome = run(config, args.out)
    metrics, at = outcome.metrics, outcome.metrics["at_target"]
    print("per-character accuracy (teacher forced), length x nesting:")
    print(format_table(metrics["char_accuracy"]))
    beam = "-" if at["beam_exact"] is None else f"{at['beam_exact']:.3f}"
    print(
        f"\nat L={config.length}, N={config.nesting}: per-character {at['char_accuracy']:.3f}, exact greedy "
        f"{at['greedy_exact']:.3f}, exact beam {beam}; {metrics['train_steps']} steps in "
        f"{outcome.timing['train_seconds']:.0f} s"
    )
    print(f"wrote {args.out / 'metrics.json'}, timing.json, model.pt, accuracy.png")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds the ``structnets sequences`` group and its ``execute`` command."""
    parser = subparsers.add_parser(
        "sequences",
        help="sequence-to-sequence tasks (learning to execute programs)",
        description="Sequence-to-sequence tasks on the attentional Seq2Seq model.",
    )
    commands = parser.add_subparsers(dest="sequences_command", metavar="{execute}", required=True)
    execute = commands.add_parser(
        "execute",
        help="learn to print the output of generated Python programs (Zaremba & Sutskever 2014)",
        description="Train a Seq2Seq on generated programs under a curriculum and report accuracy by length and "
        "nesting, up to one beyond the training range.",
    )
    execute.add_argument("--out", type=Path, required=True, help="the run directory (metrics.json, model.pt, ...)")
    configs.add_arguments(execute, ExecuteConfig, exclude=("epochs",))
    execute.set_defaults(func=_main)
    return parser
