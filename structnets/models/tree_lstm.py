"""A Tree-LSTM classifier: token embeddings in, a softmax at the root (or at every node).

Used by the program-structured tasks, where every node carries a token (an AST node's
type, an operator, a literal). The Tree-LSTM runs bottom-up over a forest of trees under
the core's topological schedule.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.cells import ChildSumTreeLSTMCell, LSTMCell, NaryTreeLSTMCell
from ..core.propagate import propagate
from ..core.schedules import Topological
from ..graphs.trees import TreeBatch

__all__ = ["TreeClassifier"]


class TreeClassifier(nn.Module):
    """Embeds every node's token, runs a Tree-LSTM up the trees, classifies each node.

    Args:
        num_children: slots of the N-ary Tree-LSTM (the most children any node has);
            ``None`` picks the child-sum Tree-LSTM, blind to child order.
        bidirectional: after the upward pass, a downward pass (an LSTM cell under the
            reversed topological schedule, roots first) gives each node the context of
            its ancestors, and the outputs read both states. A leaf's prediction can then
            depend on the rest of the tree, not only on its own subtree.

    Shapes:
        forward(batch) returns ``[num_nodes, num_classes]``; index ``batch.roots`` for
        per-tree predictions.
    """

    def __init__(
        self,
        vocabulary_size: int,
        num_classes: int,
        embedding_size: int = 64,
        hidden_size: int = 128,
        num_children: int | None = 2,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary_size, embedding_size)
        self.num_children = num_children
        if num_children is None:
            self.cell = ChildSumTreeLSTMCell(embedding_size, hidden_size)
        else:
            self.cell = NaryTreeLSTMCell(embedding_size, hidden_size, num_children=num_children)
        self.down = LSTMCell(embedding_size + hidden_size, hidden_size) if bidirectional else None
        self.output = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, batch: TreeBatch) -> Tensor:
        if bool((batch.token_ids < 0).any()):
            raise ValueError("TreeClassifier needs a token at every node; this batch has nodes without one")
        edge_attr = None if self.num_children is None else batch.slots
        x = self.embedding(batch.token_ids)
        h, _ = propagate(self.cell, x, batch.edge_index, Topological(), edge_attr=edge_attr)
        if self.down is not None:
            # Reversed, every node receives from its one parent: the LSTM cell's sum of
            # incoming states is that parent's state, and the roots start from zero.
            down, _ = propagate(self.down, torch.cat([x, h], -1), batch.edge_index, Topological(reverse=True))
            h = torch.cat([h, down], -1)
        return self.output(h)
