"""A character-level language model: ``Embedding -> the core's stacked RNN -> Linear`` (char-rnn's shape).

::

    chars ─► Embedding ─► structnets.RNN (stacked LSTM, GRU or Elman) ─► dropout ─► Linear ─► next-char logits
                               ▲                    │
                               └────── hx ──────────┘  passed back in by the caller to continue a text

The model keeps no state between calls: whoever reads a long text in chunks (truncated
backpropagation through time, sampling) passes the returned ``hx`` back in.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from ..core.cells import ChainCell, State
from ..core.rnn import RNN

__all__ = ["CharLMConfig", "CharLM"]


@dataclasses.dataclass(frozen=True)
class CharLMConfig:
    """Sizes of a :class:`CharLM`.

    Attributes:
        vocab_size: characters the model reads and predicts.
        cell: the recurrent cell (lstm, gru, elman).
        hidden_size: state size of every layer.
        num_layers: stacked recurrent layers.
        embedding_size: size of the character embedding.
        dropout: dropout between layers and before the output layer, in training.
    """

    vocab_size: int
    cell: ChainCell = ChainCell.LSTM
    hidden_size: int = 256
    num_layers: int = 2
    embedding_size: int = 64
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "embedding_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")


class CharLM(nn.Module):
    """``logits_t = W dropout(h_t) + b``, ``h_t = RNN(embedding(x_t), h_{t-1})``: next-character logits.

    Shapes:
        tokens: ``[B, T]``; logits: ``[B, T, vocab_size]``; hx: torch.nn.LSTM's / GRU's
        ``[num_layers, B, hidden_size]`` (a tuple ``(h, c)`` for LSTM).
    """

    def __init__(self, config: CharLMConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size)
        self.rnn = RNN(
            config.embedding_size,
            config.hidden_size,
            config.num_layers,
            cell=config.cell.cls,
            batch_first=True,
            # Between layers only: with one layer there is none (the head's dropout remains).
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, tokens: Tensor, hx: State | None = None) -> tuple[Tensor, State]:
        output, hx = self.rnn(self.embedding(tokens), hx)
        return self.head(self.dropout(output)), hx
