"""The Tree-LSTM classifier (Tai et al. 2015): token embeddings in, a softmax at every node.

::

    tokens ─► Embedding (zero where a node has none) ─► dropout
           ─► Tree-LSTM up the forest (leaves first)  ─┐
           ─► LSTM down from the roots (optional)  ─────┴► dropout ─► Linear ─► logits per node

One model for SST sentiment (words at the leaves, inner nodes read a zero input, the loss
at every labelled node) and for the program-structured tasks (a token at every node, the
prediction read at the root). The Tree-LSTM runs over a whole :class:`TreeBatch` under the
core's topological schedule, one batched cell step per level.

The model takes any torch_geometric ``Data`` or ``Batch`` with the trees' fields (a
``DataLoader`` over :meth:`structnets.graphs.Tree.to_data`), or the tensors themselves:
``model(tokens, edge_index, edge_attr)``. For ``torch.export`` and ONNX,
:meth:`TreeClassifier.exportable` gives the same function of tensors alone, the schedule
computed outside and passed in as index tensors
(:func:`structnets.core.propagate.propagate_level_lists`), so that one exported program
takes forests of any size and of any depth up to a bound.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import torch
from torch import Tensor, nn

from ..core.cells import ChildSumTreeGRUCell, ChildSumTreeLSTMCell, LSTMCell, NaryTreeLSTMCell, RecurrentCell
from ..core.chains import forest_edges
from ..core.propagate import is_graph_data, propagate, propagate_level_lists
from ..core.schedules import Topological, level_lists
from ..graphs.trees import TreeBatch

__all__ = ["TreeCell", "TreeClassifierConfig", "TreeClassifier", "ExportableTreeClassifier"]


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

    Call as ``model(batch)`` with a :class:`TreeBatch` or any ``Data``/``Batch`` with its
    fields (``x`` token ids, ``edge_index`` child -> parent, ``edge_attr`` child slots), or
    as ``model(x, edge_index, edge_attr)`` with those tensors (``edge_attr`` is read by the
    N-ary cell only).

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

    def forward(
        self, batch: TreeBatch | Tensor, edge_index: Tensor | None = None, edge_attr: Tensor | None = None
    ) -> Tensor:
        tokens, edge_index, edge_attr = self._fields(batch, edge_index, edge_attr)
        x = self._inputs(tokens)
        state = propagate(self.cell, x, edge_index, Topological(), edge_attr=edge_attr)
        h = state[0] if isinstance(state, tuple) else state  # (h, c) of the Tree-LSTMs
        if self.down is not None:
            # Reversed, every node receives from its one parent: the LSTM cell's sum of
            # incoming states is that parent's state, and the roots start from zero.
            down, _ = propagate(self.down, torch.cat([x, h], -1), edge_index, Topological(reverse=True))
            h = torch.cat([h, down], -1)
        return self.output(self.dropout(h))

    def _fields(
        self, batch: TreeBatch | Tensor, edge_index: Tensor | None, edge_attr: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(tokens, edge_index, edge_attr)`` of a call, the slots only for the N-ary cell."""
        if is_graph_data(batch):
            if edge_index is not None or edge_attr is not None:
                raise ValueError("with a batch of trees, call model(batch): the edges come from it")
            tokens, edge_index, edge_attr = batch.x, batch.edge_index, batch.edge_attr
        else:
            tokens = batch
            if edge_index is None:
                raise ValueError("model(tokens, edge_index, edge_attr) needs the edges (child -> parent)")
        if self.config.cell is not TreeCell.NARY:
            edge_attr = None
        elif edge_attr is None:
            raise ValueError("the N-ary Tree-LSTM needs each edge's child slot as edge_attr")
        return tokens, edge_index, edge_attr

    def _inputs(self, tokens: Tensor) -> Tensor:
        """Every node's cell input: its token's embedding, zero for a node without one (-1)."""
        if tokens.dim() != 1 or torch.is_floating_point(tokens):
            raise ValueError(
                f"tree nodes' x must be token ids [num_nodes] (-1 for none), got dtype {tokens.dtype} "
                f"and shape {tuple(tokens.shape)}"
            )
        # Nodes without a token (x = -1) read a zero input; where(), not indexing, keeps
        # the forward free of host synchronisation.
        x = torch.where((tokens >= 0).unsqueeze(-1), self.embedding(tokens.clamp(min=0)), 0.0)
        return self.dropout(x)

    def exportable(self, max_levels: int = 64) -> ExportableTreeClassifier:
        """This model (sharing its parameters) as a function of tensors for torch.export and
        ONNX, for forests whose trees have at most ``max_levels`` levels (see
        :class:`ExportableTreeClassifier`)."""
        return ExportableTreeClassifier(self, max_levels)


class ExportableTreeClassifier(nn.Module):
    """A :class:`TreeClassifier` as a traceable function of tensors: ``torch.export`` and the
    ONNX exporter take it with dynamic numbers of nodes, edges and nodes per level.

    ``forward(tokens, edge_index, edge_attr, up_nodes, up_edges, down_nodes, down_edges)``
    gives the model's logits. The schedule is computed outside the program and passed in
    as index tensors (:func:`structnets.schedules.level_lists`): per level of the upward
    pass its nodes and arriving edges, and the same for the downward pass of a
    bidirectional model (empty lists otherwise). :meth:`inputs` computes them for a batch,
    refusing forests of more than ``max_levels`` levels; the program runs the level loop
    (:func:`structnets.core.propagate.propagate_level_lists`), empty levels doing nothing.
    Nodes that no level lists (inputs made by hand, too shallow) make every logit NaN
    rather than silently wrong.

    Export with :meth:`example_inputs` (two chains of ``max_levels`` nodes, so that every
    level's size is seen as a dynamic one) and :meth:`dynamic_shapes`::

        program = model.exportable(max_levels=32)
        exported = torch.export.export(program, program.example_inputs(), dynamic_shapes=program.dynamic_shapes())
        logits = exported.module()(*program.inputs(batch))
    """

    def __init__(self, model: TreeClassifier, max_levels: int = 64) -> None:
        super().__init__()
        if max_levels < 2:
            raise ValueError(f"max_levels must be at least 2, got {max_levels}")
        self.model = model
        self.max_levels = max_levels
        self.train(model.training)  # the model's mode (an evaluated model's program evaluates)

    def forward(
        self,
        tokens: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        up_nodes: list[Tensor],
        up_edges: list[Tensor],
        down_nodes: list[Tensor],
        down_edges: list[Tensor],
    ) -> Tensor:
        model = self.model
        slots = edge_attr if model.config.cell is TreeCell.NARY else None
        x = model._inputs(tokens)
        state = propagate_level_lists(model.cell, x, edge_index, up_nodes, up_edges, edge_attr=slots)
        h = state[0] if isinstance(state, tuple) else state
        covered = _covered(tokens.shape[0], up_nodes, tokens.device)
        if model.down is not None:
            down, _ = propagate_level_lists(
                model.down, torch.cat([x, h], -1), edge_index, down_nodes, down_edges, reverse=True
            )
            h = torch.cat([h, down], -1)
            covered = covered & _covered(tokens.shape[0], down_nodes, tokens.device)
        logits = model.output(model.dropout(h))
        return torch.where(covered.all(), logits, torch.full_like(logits, float("nan")))

    def inputs(self, batch: TreeBatch) -> tuple[Tensor, Tensor, Tensor, list[Tensor], list[Tensor], list, list]:
        """The program's inputs for a batch of trees (any ``Data`` with their fields), the schedule computed here.

        Raises:
            ValueError: a tree has more than ``max_levels`` levels.
        """
        tokens, edge_index, edge_attr = batch.x, batch.edge_index, batch.edge_attr
        if edge_attr is None:
            edge_attr = torch.zeros(edge_index.shape[1], dtype=torch.long, device=edge_index.device)
        num_nodes = tokens.shape[0]
        up = level_lists(edge_index, num_nodes, self.max_levels)
        down = (
            level_lists(edge_index, num_nodes, self.max_levels, reverse=True)
            if self.model.down is not None
            else ([], [])
        )
        return tokens, edge_index, edge_attr.view(-1), up[0], up[1], down[0], down[1]

    def example_inputs(self) -> tuple[Tensor, Tensor, Tensor, list[Tensor], list[Tensor], list, list]:
        """Inputs to export with: two chains of ``max_levels`` nodes, two nodes and edges per level."""
        length = self.max_levels
        parents = [None, *range(length - 1), None, *range(length, 2 * length - 1)]
        edge_index = forest_edges(parents)
        device = self.model.embedding.weight.device
        tokens = torch.arange(2 * length) % self.model.config.vocabulary_size
        return self.inputs(
            _Forest(tokens.to(device), edge_index.to(device), torch.zeros_like(edge_index[0]).to(device))
        )

    def dynamic_shapes(self) -> tuple[Any, ...]:
        """``torch.export``'s ``dynamic_shapes`` for :meth:`inputs`: every count dynamic, each level possibly empty."""
        nodes, edges = torch.export.Dim("nodes"), torch.export.Dim("edges")
        levels = range(self.max_levels)

        def per_level(kind: str, first: int) -> list[dict[int, Any]]:
            return [{0: torch.export.Dim(f"{kind}{level}", min=0)} for level in levels[first:]]

        bidirectional = self.model.down is not None
        down = (per_level("down_nodes", 0), per_level("down_edges", 1)) if bidirectional else ([], [])
        return ({0: nodes}, {1: edges}, {0: edges}, per_level("up_nodes", 0), per_level("up_edges", 1), *down)


class _Forest:
    """The three fields :meth:`ExportableTreeClassifier.inputs` reads."""

    def __init__(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> None:
        self.x, self.edge_index, self.edge_attr = x, edge_index, edge_attr


def _covered(num_nodes: int, nodes: list[Tensor], device: torch.device) -> Tensor:
    """``[num_nodes]`` whether each node is in one of the levels."""
    return torch.zeros(num_nodes, dtype=torch.bool, device=device).index_fill(0, torch.cat(nodes), True)
