"""The Tree-LSTM classifier (Tai et al. 2015): token embeddings in, a softmax at every node.

::

    tokens ─► Embedding (zero where a node has none) ─► dropout
           ─► Tree-LSTM up the forest (leaves first)  ─┐
           ─► LSTM down from the roots (optional)  ─────┴► dropout ─► Linear ─► logits per node

One model for SST sentiment (words at the leaves, inner nodes read a zero input, the loss
at every labelled node) and for the program-structured tasks (a token at every node, the
prediction read at the root). The Tree-LSTM runs over a whole :class:`TreeBatch` under the
core's topological schedule, one batched cell step per level.
"""

from __future__ import annotations

import dataclasses
import enum

import torch
from torch import Tensor, nn

from ..core.cells import ChildSumTreeGRUCell, ChildSumTreeLSTMCell, LSTMCell, NaryTreeLSTMCell, RecurrentCell
from ..core.propagate import propagate
from ..core.schedules import Topological
from ..graphs.trees import TreeBatch

__all__ = ["TreeCell", "TreeClassifierConfig", "TreeClassifier"]


class TreeCell(enum.Enum):
    """The cell run up the tree.

    ``nary``: Tai et al.'s N-ary Tree-LSTM, one set of weights per child slot, which tells
    left from right; ``childsum``: the child-sum Tree-LSTM, blind to child order;
    ``childsum-gru``: the child-sum Tree-GRU (one reset gate per child), likewise order-blind.
    """

    NARY = "nary"
    CHILDSUM = "childsum"
    CHILDSUM_GRU = "childsum-gru"


@dataclasses.dataclass(frozen=True)
class TreeClassifierConfig:
    """Sizes of a :class:`TreeClassifier`.

    Attributes:
        vocabulary_size: token ids the embedding holds (id 0 is ``<unk>``).
        num_classes: outputs per node.
        embedding_size: size of the token embedding, the cell's input.
        hidden_size: state size of the tree cell.
        cell: the tree cell (nary, childsum, childsum-gru).
        num_children: child slots of the N-ary Tree-LSTM (the most children any node has).
        bidirectional: after the upward pass, a downward pass (an LSTM cell under the
            reversed topological schedule, roots first) gives each node the context of its
            ancestors, and the output reads both states.
        dropout: dropout of the cell's inputs and of the states the output reads, in training.
    """

    vocabulary_size: int
    num_classes: int
    embedding_size: int = 64
    hidden_size: int = 128
    cell: TreeCell = TreeCell.NARY
    num_children: int = 2
    bidirectional: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocabulary_size", "num_classes", "embedding_size", "hidden_size", "num_children"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def _tree_cell(config: TreeClassifierConfig) -> RecurrentCell:
    if config.cell is TreeCell.NARY:
        return NaryTreeLSTMCell(config.embedding_size, config.hidden_size, num_children=config.num_children)
    if config.cell is TreeCell.CHILDSUM:
        return ChildSumTreeLSTMCell(config.embedding_size, config.hidden_size)
    return ChildSumTreeGRUCell(config.embedding_size, config.hidden_size)


class TreeClassifier(nn.Module):
    """Embeds every node's token, runs a Tree-LSTM up the trees, classifies each node.

    ``logits_v = W dropout(h_v) + b`` with ``h_v = cell(dropout(e_v), {h_u : u child of v})``,
    ``e_v`` the embedding of node ``v``'s token, zero for a node without one (as for the
    inner nodes of Tai et al.'s constituency model). Bidirectional, ``h_v`` is joined by
    ``LSTM([e_v, h_v], state of v's parent)``, run from the roots down, so a leaf's
    prediction can depend on the rest of its tree, not only on its own subtree.

    Shapes:
        forward(batch) returns ``[num_nodes, num_classes]``; index ``batch.roots`` for
        per-tree predictions.
    """

    def __init__(self, config: TreeClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocabulary_size, config.embedding_size)
        self.cell = _tree_cell(config)
        inputs = config.embedding_size + config.hidden_size
        self.down = LSTMCell(inputs, config.hidden_size) if config.bidirectional else None
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden_size * (2 if config.bidirectional else 1), config.num_classes)

    def forward(self, batch: TreeBatch) -> Tensor:
        tokens = batch.x
        # Nodes without a token (x = -1) read a zero input; where(), not indexing, keeps
        # the forward free of host synchronisation.
        x = torch.where((tokens >= 0).unsqueeze(-1), self.embedding(tokens.clamp(min=0)), 0.0)
        x = self.dropout(x)
        edge_attr = batch.edge_attr if self.config.cell is TreeCell.NARY else None
        state = propagate(self.cell, x, batch.edge_index, Topological(), edge_attr=edge_attr)
        h = state[0] if isinstance(state, tuple) else state  # (h, c) of the Tree-LSTMs
        if self.down is not None:
            # Reversed, every node receives from its one parent: the LSTM cell's sum of
            # incoming states is that parent's state, and the roots start from zero.
            down, _ = propagate(self.down, torch.cat([x, h], -1), batch.edge_index, Topological(reverse=True))
            h = torch.cat([h, down], -1)
        return self.output(self.dropout(h))
