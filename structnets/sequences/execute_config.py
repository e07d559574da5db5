"""The settings of one Learning-to-Execute experiment: the target level, the curriculum, the model, the engine.

:class:`ExecuteConfig` is the task's command line (``structnets sequences execute --help``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

import torch
from torch import nn

from ..core.cells import ChainCell
from ..models.seq2seq import Seq2SeqConfig
from ..models.tree2seq import Tree2SeqConfig
from ..nn.attention import AttentionScore
from ..train.config import shared_fields
from ..train.engine import TrainConfig
from .programs import MAX_NESTING, TREE_CHILDREN, TREE_VOCABULARY, VOCABULARY, Curriculum, CurriculumSchedule, Level

__all__ = ["ExecuteConfig", "ExecuteEncoder", "ExecuteOptimizer", "train_defaults"]


class ExecuteEncoder(enum.Enum):
    """What the model reads: ``sequence`` the program's characters (a :class:`~structnets.models.Seq2Seq`),
    ``tree`` its Python syntax tree (a :class:`~structnets.models.Tree2Seq`: an N-ary Tree-LSTM,
    :func:`~structnets.sequences.programs.program_tree`), the decoder the same."""

    SEQUENCE = "sequence"
    TREE = "tree"


class ExecuteOptimizer(enum.Enum):
    """The optimiser: ``adam`` (this task's default), or ``sgd``, plain stochastic gradient descent as in the
    authors' code (``optim.sgd`` at learning rate 0.5, no momentum)."""

    ADAM = "adam"
    SGD = "sgd"

    def build(self, parameters: Iterable[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
        if self is ExecuteOptimizer.SGD:
            return torch.optim.SGD(parameters, lr=lr, weight_decay=weight_decay)
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)


def train_defaults() -> TrainConfig:
    """The authors' batch of 100 programs and gradient norm clipped at 5; Adam at 1e-3, validated every 250 steps."""
    return TrainConfig(steps=20000, batch_size=100, lr=1e-3, clip_grad_norm=5.0, log_every=50, eval_every=250)


@dataclasses.dataclass(frozen=True)
class ExecuteConfig:
    """One Learning-to-Execute experiment (the authors' target length 6 and nesting 3, blend curriculum).

    The model is a :class:`~structnets.models.Seq2Seq` reading the program's characters and
    writing the printed integer's, then the stop symbol: two layers of 400 LSTM units as in
    the paper, whose single LSTM read the program and then the output; here an attentional
    encoder-decoder (bidirectional by default, 200 units each way).

    Attributes:
        encoder: what the model reads: the program's characters (sequence) or its syntax tree
            (tree, a Tree-LSTM up the tree; ``bidirectional`` is then not read).
        length: the target length L: literals of up to L digits (uniform in [1, 10^L]).
        nesting: the target nesting N: operations composed per program.
        curriculum: how training programs' levels are chosen (baseline, naive, mix, blend).
        threshold: naive and blend: the held-out per-character accuracy at the current level
            above which the level moves up (the authors' 0.95).
        stall: naive and blend: validations after which an accuracy lower than it was then
            also moves the level up; 0 never (the authors' 5).
        mix_fraction: blend: the share of each batch drawn as mix draws (the authors' 1/5).
        embedding_size: size of the character embeddings.
        hidden_size: units of the decoder's layers, and of the encoder's (both directions together).
        num_layers: stacked layers of encoder and decoder.
        bidirectional: read the program in both directions.
        cell: the recurrent cell (lstm, gru, elman).
        attention: the attention score (additive, dot, general); none for a plain encoder-decoder
            (the authors' configuration).
        input_feeding: join the previous attentional vector to the next input (needs attention).
        dropout: dropout in training.
        optimizer: adam, or sgd (the authors', at ``--lr 0.5``).
        init_range: draw every parameter uniformly from [-r, r] at the start (the authors' 0.08);
            none keeps each layer's own initialisation.
        beam_width: hypotheses kept by the beam search scored by exact match; 0 for none.
        length_penalty: the beam search ranks by log-probability / length ** length_penalty.
        val_programs: held-out programs of the validation split at the target level (which
            picks the kept weights), and at each curriculum level.
        eval_programs: programs of the test split per cell of the length x nesting table.
        num_threads: torch's intra-op threads while training and evaluating (restored
            afterwards); none keeps torch's choice.
        train: the engine's settings.
    """

    encoder: ExecuteEncoder = ExecuteEncoder.SEQUENCE
    length: int = 6
    nesting: int = 3
    curriculum: Curriculum = Curriculum.BLEND
    threshold: float = 0.95
    stall: int = 5
    mix_fraction: float = 0.2
    embedding_size: int = 64
    hidden_size: int = 400
    num_layers: int = 2
    bidirectional: bool = True
    cell: ChainCell = ChainCell.LSTM
    attention: AttentionScore | None = AttentionScore.GENERAL
    input_feeding: bool = True
    dropout: float = 0.0
    optimizer: ExecuteOptimizer = ExecuteOptimizer.ADAM
    init_range: float | None = None
    beam_width: int = 5
    length_penalty: float = 1.0
    val_programs: int = 500
    eval_programs: int = 200
    num_threads: int | None = None
    train: TrainConfig = dataclasses.field(default_factory=train_defaults)

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, ExecuteEncoder):
            raise TypeError(f"encoder must be an ExecuteEncoder, got {self.encoder!r}")
        if not isinstance(self.curriculum, Curriculum):
            raise TypeError(f"curriculum must be a Curriculum, got {self.curriculum!r}")
        if self.length < 1 or not 1 <= self.nesting <= MAX_NESTING:
            raise ValueError(f"need length >= 1 and nesting in 1..{MAX_NESTING}, got {self.length} and {self.nesting}")
        if not isinstance(self.optimizer, ExecuteOptimizer):
            raise TypeError(f"optimizer must be an ExecuteOptimizer, got {self.optimizer!r}")
        if self.init_range is not None and not self.init_range > 0:
            raise ValueError(f"init_range must be positive (or none), got {self.init_range}")
        if self.beam_width < 0 or self.val_programs < 1 or self.eval_programs < 1:
            raise ValueError("beam_width must be >= 0, and val_programs and eval_programs positive")
        if self.train.steps is None:
            raise ValueError("the execute task counts steps (its programs never run out): give train.steps")
        self.schedule()  # checks the curriculum's settings
        self.model_config()  # and the model's sizes

    @property
    def target(self) -> Level:
        return Level(self.length, self.nesting)

    def schedule(self) -> CurriculumSchedule:
        """A fresh curriculum schedule at its starting level (1, 1)."""
        return CurriculumSchedule(
            self.curriculum, self.target, threshold=self.threshold, stall=self.stall, mix_fraction=self.mix_fraction
        )

    @property
    def trees(self) -> bool:
        """Whether the model reads syntax trees."""
        return self.encoder is ExecuteEncoder.TREE

    def model_config(self) -> Seq2SeqConfig:
        """The model's config: a :class:`Seq2SeqConfig`, or for the tree encoder a :class:`Tree2SeqConfig`."""
        size = len(VOCABULARY)
        if self.trees:
            return shared_fields(
                Tree2SeqConfig,
                self,
                source_vocab=len(TREE_VOCABULARY),
                target_vocab=size,
                pad=VOCABULARY.pad,
                bos=VOCABULARY.bos,
                eos=VOCABULARY.eos,
                num_children=TREE_CHILDREN,
            )
        return shared_fields(
            Seq2SeqConfig,
            self,
            source_vocab=size,
            target_vocab=size,
            pad=VOCABULARY.pad,
            bos=VOCABULARY.bos,
            eos=VOCABULARY.eos,
        )
