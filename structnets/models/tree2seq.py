"""Tree to sequence: a Tree-LSTM encoder over syntax trees under :class:`~structnets.models.Seq2Seq`'s decoder.

::

    tree's nodes ─► Embedding ─► Tree-LSTM up the tree (leaves first) ─┬─► h_v of every node: keys and values
                                                                      │   on the edges v -> b (v in tree b)
                                                                      └─► the root's state: every decoder
                                                                          layer's first state
    then Seq2Seq's decoder: attention, input feeding, greedy and beam decoding, unchanged

The encoder is the trees track's cell (:class:`~structnets.models.TreeCell`: N-ary or
child-sum) run over a whole :class:`~structnets.graphs.trees.TreeBatch` by the core's
:func:`~structnets.core.propagate.propagate` under :class:`~structnets.core.schedules.Topological`,
one batched cell step per level. Attention is the same message passing as Seq2Seq's, on
another bipartite graph: every node of tree ``b`` (the batch's ``batch`` vector) is an
encoder node sending to decoder node ``b``. The decoder's layers all start from the root's
state (``(h, c)`` for an LSTM decoder; ``h`` for a GRU or Elman one; a GRU tree cell's root
gives ``(h, 0)`` to an LSTM decoder).

Everything after :meth:`Tree2Seq.encode` is :class:`~structnets.models.Seq2Seq`'s: the
``source`` argument of ``forward``, ``greedy`` and ``beam_search`` is a ``TreeBatch`` (or
any ``Data``/``Batch`` with ``x``, ``edge_index``, ``edge_attr``, ``batch``, ``ptr``), and
``source_lengths`` is not read (pass ``None``). ``bidirectional`` has no meaning here and is
not read either.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.cells import ChainCell, ChildSumTreeGRUCell, ChildSumTreeLSTMCell, NaryTreeLSTMCell
from ..core.propagate import propagate
from ..core.schedules import Topological
from .seq2seq import DecoderState, EncoderOutput, Seq2Seq, Seq2SeqConfig
from .tree_lstm import TreeCell

__all__ = ["Tree2SeqConfig", "Tree2Seq", "tree_memory_edges"]


@dataclass(frozen=True)
class Tree2SeqConfig(Seq2SeqConfig):
    """A :class:`~structnets.models.seq2seq.Seq2SeqConfig` whose ``source_vocab`` counts tree tokens.

    Attributes:
        tree_cell: the cell run up the tree (nary, childsum, childsum-gru).
        num_children: child slots of the N-ary cell (the most children any node has).
    """

    tree_cell: TreeCell = TreeCell.NARY
    num_children: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_children < 1:
            raise ValueError(f"num_children must be positive, got {self.num_children}")


def tree_memory_edges(batch: Tensor, rows: int, repeat: int = 1) -> Tensor:
    """``[2, num_nodes * repeat]`` edges node -> decoder row: node ``v`` of tree ``b`` to rows ``b * repeat + k``.

    Args:
        batch: ``[num_nodes]`` each node's tree, in ``[0, rows)``.
        rows: the number of trees.
        repeat: decoder rows per tree (beam search's width).
    """
    nodes = torch.arange(batch.shape[0], device=batch.device)
    if repeat == 1:
        return torch.stack([nodes, batch])
    copies = torch.arange(repeat, device=batch.device)
    senders = nodes.repeat_interleave(repeat)
    receivers = (batch.unsqueeze(1) * repeat + copies).reshape(-1)
    return torch.stack([senders, receivers])


class Tree2Seq(Seq2Seq):
    """:class:`~structnets.models.Seq2Seq` with a Tree-LSTM encoder (see the module docstring).

    Shapes:
        source: a forest of ``B`` trees (``x`` ``[num_nodes]`` token ids, -1 for none;
        ``edge_index`` child -> parent; ``edge_attr`` child slots; ``batch``; ``ptr``,
        each tree's root at ``ptr[b]``); target_in ``[B, T]``; logits ``[B, T, target_vocab]``.
    """

    Config = Tree2SeqConfig

    def __init__(self, config: Tree2SeqConfig) -> None:
        super().__init__(config)
        hidden = config.hidden_size
        # Tree tokens have no padding: every id, <unk> (0) included, has a trained embedding.
        self.source_embedding = nn.Embedding(config.source_vocab, config.embedding_size)
        if config.tree_cell is TreeCell.NARY:
            self.encoder = NaryTreeLSTMCell(config.embedding_size, hidden, num_children=config.num_children)
        elif config.tree_cell is TreeCell.CHILDSUM:
            self.encoder = ChildSumTreeLSTMCell(config.embedding_size, hidden)
        else:
            self.encoder = ChildSumTreeGRUCell(config.embedding_size, hidden)

    def _bos(self, source, rows: int) -> Tensor:
        return torch.full((rows,), self.config.bos, dtype=torch.long, device=source.x.device)

    def encode(self, source, source_lengths: Tensor | None = None, *, repeat: int = 1) -> EncoderOutput:
        """The memory (every node's state, sent to its tree's decoder rows) and the decoder's first state (the root's).

        With ``repeat`` > 1 each tree is decoded ``repeat`` times (rows ``b * repeat + k``); the
        Tree-LSTM still runs once per tree.
        """
        tokens, edge_index = source.x, source.edge_index
        slots = source.edge_attr if self.config.tree_cell is TreeCell.NARY else None
        x = torch.where((tokens >= 0).unsqueeze(-1), self.source_embedding(tokens.clamp(min=0)), 0.0)
        state = propagate(self.encoder, self.dropout(x), edge_index, Topological(), edge_attr=slots)
        h, c = state if isinstance(state, tuple) else (state, None)
        roots = source.ptr[:-1].to(h.device)
        rows = roots.shape[0]
        root_h = h.index_select(0, roots)
        if self.config.cell is ChainCell.LSTM:
            root_c = c.index_select(0, roots) if c is not None else torch.zeros_like(root_h)
            first: tuple | Tensor = (root_h, root_c)
        else:
            first = root_h
        decoder = DecoderState(tuple(first for _ in range(self.config.num_layers)), h.new_zeros(rows, h.shape[1]))
        if repeat > 1:
            decoder = decoder.index_select(torch.arange(rows, device=h.device).repeat_interleave(repeat))
        if self.attention is None:
            return EncoderOutput(None, decoder)
        edges = tree_memory_edges(source.batch.to(h.device), rows, repeat)
        return EncoderOutput(self.attention.memory(h, h, edges, rows * repeat), decoder)
