"""Several molecules per example: one MPNN read-out per molecule, joined, then one head.

::

    molecule 1 ──MPNN encoder──► r₁ ─┐
    molecule 2 ──MPNN encoder──► r₂ ─┼─ concat ─(+ per-row features)─ MLP ─► properties
    ...                              │
    molecule K ──MPNN encoder──► r_K ┘

A solute and its solvent, or the reactants of a reaction, are the same kind of input as one
molecule, only several of them per row. Each position has its own encoder (an
:class:`~structnets.models.MPNN` without a head), or every position shares one encoder
(``shared_encoder``), as chemprop's ``--mpn-shared`` does; the read-outs are concatenated in
column order, so the model is not symmetric in its inputs unless trained to be.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from ..nn.mlp import MLP
from .mpnn import MPNN, MPNNConfig, join_features

__all__ = ["MultiMPNNConfig", "MultiMPNN"]


@dataclass(frozen=True)
class MultiMPNNConfig:
    """Sizes of a :class:`MultiMPNN`.

    Attributes:
        encoder: each molecule's encoder; its head settings (``num_targets``, ``extra_features``,
            ``with_head``) are ignored: the encoders are built without a head.
        molecules: molecules per example ``K`` (at least 2; one molecule is an MPNN).
        num_targets: outputs per example.
        shared_encoder: one encoder for every position instead of one per position.
        extra_features: per-example features joined to the read-outs before the head.
        readout_hidden_size: hidden width of the head.
        dropout: dropout before the head's hidden layer.
    """

    encoder: MPNNConfig
    molecules: int = 2
    num_targets: int = 1
    shared_encoder: bool = False
    extra_features: int = 0
    readout_hidden_size: int = 128
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.molecules < 2:
            raise ValueError(f"MultiMPNN takes at least 2 molecules per example, got {self.molecules}; use MPNN")

    @property
    def fingerprint_size(self) -> int:
        return self.molecules * self.encoder.fingerprint_size


class MultiMPNN(nn.Module):
    """One MPNN read-out per molecule of an example, concatenated, then an MLP head.

    Call as ``model(graphs, features=None)`` with ``graphs`` one ``Batch`` per molecule
    position, each holding the same number of examples in the same order.

    Shapes:
        graphs[k]: a ``Batch`` of ``num_examples`` molecules; features:
        ``[num_examples, extra_features]``; returns ``[num_examples, num_targets]``.
    """

    def __init__(self, config: MultiMPNNConfig) -> None:
        super().__init__()
        self.config = config
        encoder = dataclasses.replace(config.encoder, with_head=False, extra_features=0)
        count = 1 if config.shared_encoder else config.molecules
        self.encoders = nn.ModuleList(MPNN(encoder) for _ in range(count))
        inputs = config.fingerprint_size + config.extra_features
        self.head = MLP([inputs, config.readout_hidden_size, config.num_targets], dropout=config.dropout)

    def fingerprint(self, graphs: Sequence[Batch]) -> Tensor:
        """The joined read-outs ``[num_examples, molecules * encoder.fingerprint_size]``."""
        if len(graphs) != self.config.molecules:
            raise ValueError(f"MultiMPNN takes {self.config.molecules} molecules per example, got {len(graphs)}")
        counts = {int(g.num_graphs) for g in graphs}
        if len(counts) != 1:
            raise ValueError(f"each molecule position must hold the same number of examples, got {sorted(counts)}")
        encoders = [self.encoders[0 if self.config.shared_encoder else k] for k in range(len(graphs))]
        return torch.cat([encoder.fingerprint(graph) for encoder, graph in zip(encoders, graphs)], -1)

    def forward(self, graphs: Sequence[Batch], *, features: Tensor | None = None) -> Tensor:
        pooled = self.fingerprint(graphs)
        return self.head(join_features(pooled, features, self.config.extra_features, "this model"))
