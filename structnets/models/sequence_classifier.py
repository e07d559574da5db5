"""A sequence classifier: token embeddings, a recurrent network along the chain, an MLP on its final state.

::

    tokens ─► Embedding ─► dropout ─► RNN (any ChainCell; stacked, optionally bidirectional) ─► h_n
        last layer's final state (forward, and backward when bidirectional) ─► dropout ─► MLP ─► logits

The summary of a sequence is the last layer's final forward hidden state ``h_T``,
concatenated with the final backward state when bidirectional (for an LSTM, ``h`` and not
``c``). Variable lengths are handled by the RNN, so padding never reaches the summary: a
sequence scored alone gives the same logits as in a padded batch. Used by the palindrome
benchmark (one logit, binary) and by SST sentiment on sentences (``structnets text classify``:
five classes, dropout, a linear head as in Tai et al. 2015), and fit for any task that labels
whole sequences. Dropout is off by default, and is the identity in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..core.cells import ChainCell
from ..core.rnn import RNN
from ..nn.mlp import MLP

__all__ = ["SequenceClassifier", "SequenceClassifierConfig"]


@dataclass(frozen=True)
class SequenceClassifierConfig:
    """Sizes and cell of a :class:`SequenceClassifier`.

    Attributes:
        vocab_size: number of distinct tokens.
        num_classes: output logits per sequence (one for a binary task, read as a logit).
        cell: the recurrent cell (elman, gru, lstm).
        bidirectional: also run a backward direction and read both final states.
        hidden_size: hidden units per direction and layer.
        embedding_size: size of the token embedding.
        mlp_hidden_size: width of the hidden layer of the classification head; none for a
            linear head (a softmax regression on the final states).
        num_layers: stacked recurrent layers.
        orthogonal: orthogonal initialisation of the recurrent weights.
        dropout: dropout, in training, of the embeddings the RNN reads, between its stacked
            layers, and of the final states the head reads; 0 for none.
    """

    vocab_size: int
    num_classes: int = 1
    cell: ChainCell = ChainCell.LSTM
    bidirectional: bool = False
    hidden_size: int = 128
    embedding_size: int = 32
    mlp_hidden_size: int | None = 64
    num_layers: int = 1
    orthogonal: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.cell, ChainCell):
            raise TypeError(f"cell must be a structnets.core.cells.ChainCell, got {self.cell!r}")
        for name in ("vocab_size", "num_classes", "hidden_size", "embedding_size", "mlp_hidden_size", "num_layers"):
            value = getattr(self, name)
            if name == "mlp_hidden_size" and value is None:
                continue
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")


class SequenceClassifier(nn.Module):
    """``Embedding -> structnets.RNN -> final state -> MLP -> logits``.

    ``logits = MLP(dropout([h_T^fwd, h_1^bwd]))`` with ``h`` the last layer's final hidden
    states of the RNN run on ``dropout(embedding(tokens))``.

    Args:
        config: sizes, cell and directions.

    Shapes:
        tokens: ``[B, T]`` (padded; any token in the padding); lengths: ``[B]``.
        returns: ``[B, num_classes]``.
    """

    def __init__(self, config: SequenceClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.num_directions = 2 if config.bidirectional else 1
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size)
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = RNN(
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_layers,
            cell=config.cell.cls,
            bidirectional=config.bidirectional,
            batch_first=True,
            # between stacked layers only: with one layer there is no such place (torch.nn warns)
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            orthogonal=config.orthogonal,
        )
        summary_size = self.num_directions * config.hidden_size
        hidden = [] if config.mlp_hidden_size is None else [config.mlp_hidden_size]
        self.head = MLP([summary_size, *hidden, config.num_classes])

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Scores a padded batch; ``lengths`` are the true lengths (moved to the CPU for the RNN)."""
        _, h_n = self.rnn(self.dropout(self.embedding(tokens)), lengths=lengths.cpu())
        if isinstance(h_n, tuple):  # LSTM: (h_n, c_n); classify from h_n
            h_n = h_n[0]
        batch, hidden = tokens.shape[0], self.config.hidden_size
        last = h_n.view(self.config.num_layers, self.num_directions, batch, hidden)[-1]  # (D, B, H)
        return self.head(self.dropout(last.transpose(0, 1).reshape(batch, self.num_directions * hidden)))
