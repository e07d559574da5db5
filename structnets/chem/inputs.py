"""What a molecule property model reads: rows of one or more molecules, per-row features, targets.

:class:`MoleculeInputs` packs each molecule column once (:class:`structnets.graphs.PackedGraphs`),
so that any batch of rows is a few gathers; :class:`MoleculeBatch` is one such batch, which
:func:`forward` runs through an :class:`~structnets.models.MPNN` (one molecule a row) or a
:class:`~structnets.models.MultiMPNN` (several).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from ..graphs.batch import PackedGraphs
from ..models import MPNN, MultiMPNN

__all__ = ["MoleculeBatch", "MoleculeInputs", "forward", "fingerprint"]


@dataclasses.dataclass(frozen=True)
class MoleculeBatch:
    """Rows of molecules: one ``Batch`` per molecule column, and the rows' features and targets.

    Shapes:
        graphs[k]: a ``Batch`` of ``num_rows`` molecules; features: ``[num_rows, num_features]``
        or None; y: ``[num_rows, num_targets]`` or None.
    """

    graphs: tuple[Batch, ...]
    features: Tensor | None = None
    y: Tensor | None = None

    @property
    def num_rows(self) -> int:
        return int(self.graphs[0].num_graphs)

    def to(self, device: torch.device | str) -> MoleculeBatch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return MoleculeBatch(tuple(g.to(device) for g in self.graphs), move(self.features), move(self.y))


class MoleculeInputs:
    """Rows of one or more molecules with optional features and targets, packed once.

    Args:
        columns: per molecule column, one graph per row (``x``, ``edge_index``, ``edge_attr``).
        features: ``[num_rows, num_features]`` per-row features, or None.
        targets: ``[num_rows, num_targets]``, or None (prediction).
    """

    def __init__(
        self, columns: Sequence[Sequence[Data]], features: Tensor | None = None, targets: Tensor | None = None
    ) -> None:
        if not columns or len({len(c) for c in columns}) != 1:
            raise ValueError(f"every molecule column needs one graph per row, got {[len(c) for c in columns]}")
        self.num_rows = len(columns[0])
        for name, value in (("features", features), ("targets", targets)):
            if value is not None and value.shape[0] != self.num_rows:
                raise ValueError(f"{name} has {value.shape[0]} rows for {self.num_rows} rows of molecules")
        bare = [[Data(x=g.x, edge_index=g.edge_index, edge_attr=g.edge_attr) for g in column] for column in columns]
        self.packed = [PackedGraphs(column) for column in bare] if self.num_rows else []
        self.features, self.targets = features, targets

    def __len__(self) -> int:
        return self.num_rows

    def batch(self, chosen: Tensor) -> MoleculeBatch:
        """The rows ``chosen``, in that order."""
        pick = lambda t: None if t is None else t[chosen]  # noqa: E731
        return MoleculeBatch(tuple(p.batch(chosen) for p in self.packed), pick(self.features), pick(self.targets))

    def batches(
        self, batch_size: int, device: torch.device | str, rows: Sequence[int] | None = None
    ) -> list[MoleculeBatch]:
        """Consecutive batches of ``rows`` (default: every row), in order, on ``device``."""
        chosen = torch.arange(self.num_rows) if rows is None else torch.as_tensor(rows, dtype=torch.long)
        return [self.batch(part).to(device) for part in chosen.split(batch_size) if len(part)]


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def forward(model: nn.Module, batch: MoleculeBatch) -> Tensor:
    """The model's outputs ``[num_rows, outputs]`` for ``batch`` (an MPNN or a MultiMPNN, DDP-wrapped or not)."""
    if isinstance(_unwrap(model), MultiMPNN):
        return model(batch.graphs, features=batch.features)
    graph = batch.graphs[0]
    return model(graph.x, graph.edge_index, graph.edge_attr, graph.batch, graph.num_graphs, features=batch.features)


def fingerprint(model: MPNN | MultiMPNN, batch: MoleculeBatch) -> Tensor:
    """The learned read-out ``[num_rows, fingerprint_size]`` (the molecules' embedding, before the head)."""
    if isinstance(model, MultiMPNN):
        return model.fingerprint(batch.graphs)
    return model.fingerprint(batch.graphs[0])
