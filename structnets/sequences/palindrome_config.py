"""The settings of one palindrome experiment: the model, the data's lengths, the engine's defaults.

:class:`PalindromeConfig` is the task's command line (``structnets palindrome --help``).
"""

from __future__ import annotations

import dataclasses

from ..core.cells import ChainCell
from ..models.sequence_classifier import SequenceClassifierConfig
from ..train.config import shared_fields
from ..train.engine import LRSchedule, TrainConfig

__all__ = ["PalindromeConfig", "train_defaults"]


def train_defaults() -> TrainConfig:
    """The engine's settings of the tuned palindrome runs: 4500 Adam steps, warm-up 300 then cosine, clip 1."""
    return TrainConfig(
        steps=4500,
        batch_size=512,
        lr=4e-3,
        schedule=LRSchedule.COSINE,
        warmup_steps=300,
        clip_grad_norm=1.0,
        log_every=25,
    )


@dataclasses.dataclass(frozen=True)
class PalindromeConfig:
    """Hyperparameters of one palindrome experiment.

    The defaults are tuned so that unidirectional LSTM and GRU models reach at least 99%
    held-out accuracy at every training length (1-10) in about two to three minutes on a
    2-core CPU. What mattered in tuning: the task is sample-hungry (errors concentrate on
    the innermost pair of the longest odd lengths), so large batches, which cost less per
    sequence, beat more small steps; orthogonal recurrent initialisation and a 300-step
    warm-up each cut the final error noticeably; a wider MLP head, a second layer or a
    larger embedding did not help. Training is step-counted (4500 Adam steps at 4e-3,
    batch 512, warm-up then cosine, gradient norm clipped at 1); a run cut short by
    max_seconds is not reproducible, since its step count depends on the machine.

    Attributes:
        cell: recurrent cell (elman, gru, lstm).
        bidirectional: also read the sequence right-to-left and concatenate its final state.
        hidden_size: hidden units per direction and layer.
        embedding_size: size of the digit embedding.
        mlp_hidden_size: width of the hidden layer of the classification head.
        num_layers: stacked recurrent layers.
        orthogonal: orthogonal initialisation of the recurrent weights.
        vocab_size: distinct digits (at least 2, so that near misses exist).
        max_train_length: training lengths are drawn uniformly from 1..max_train_length.
        max_eval_length: evaluation covers every length 1..max_eval_length.
        eval_per_length: held-out sequences per evaluation length.
        val_sequences: sequences of the fixed validation batch (training lengths, its own
            seed) that picks the kept weights when eval_every is set; by default it is
            scored once, at the end.
        num_threads: torch's intra-op threads while training and evaluating (restored
            afterwards); none keeps torch's choice of one per core, about 1.5x faster than
            one thread on a 2-core CPU at the default batch size.
        train: the engine's settings.
    """

    cell: ChainCell = ChainCell.LSTM
    bidirectional: bool = False
    hidden_size: int = 128
    embedding_size: int = 32
    mlp_hidden_size: int = 64
    num_layers: int = 1
    orthogonal: bool = True
    vocab_size: int = 10
    max_train_length: int = 10
    max_eval_length: int = 40
    eval_per_length: int = 1000
    val_sequences: int = 2048
    num_threads: int | None = None
    train: TrainConfig = dataclasses.field(default_factory=train_defaults)

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ValueError("vocab_size must be at least 2 so that near-miss negatives exist")
        for name in ("max_train_length", "max_eval_length", "eval_per_length", "val_sequences"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.train.steps is None:
            raise ValueError("the palindrome task counts steps (its data never ends): give train.steps")
        self.model_config()  # checks the model's sizes and cell

    def model_config(self) -> SequenceClassifierConfig:
        return shared_fields(SequenceClassifierConfig, self, num_classes=1)
