"""The message passing neural network of Gilmer et al. (2017) for molecular properties.

::

    atom features ──Linear──► h⁰ ──┐
                                   ▼  T rounds, weights shared (synchronous schedule)
    bond features ──EdgeNetwork──► A(e_vw) ──► m_v = Σ_w A(e_vw) h_w ──► h_v = GRU(m_v, h_v)
                                   │
                                   ▼
                          Set2Set([h^T, h⁰]) ──MLP──► properties
                          (optionally beside Σ_v [h^T, h⁰], see ``sum_readout``)

Messages are the paper's edge network: a small MLP maps each bond's features to a
``hidden x hidden`` matrix that multiplies the sender's state. Bonds do not change between
rounds, so the matrices are computed once per forward pass (once per distinct bond feature
vector) and reused in every round. The
rounds are one :func:`structnets.propagate` call under the synchronous schedule, with the
edge network's messages as its edge step and structnets' GRU cell as its node step; the
readout is :class:`structnets.nn.Set2Set` (Vinyals et al. 2016).

The model takes torch_geometric's containers and conventions: ``model(batch)`` for a
``Data`` or ``Batch`` (a ``DataLoader``'s), or ``model(x, edge_index, edge_attr, batch)``
with the number of molecules optional. Integer (categorical) atom and bond features, such
as ``torch_geometric.utils.from_smiles`` gives, are one-hot encoded column by column when
the config names each column's number of categories (:meth:`MPNNConfig.for_from_smiles`).
``torch.export`` and the ONNX exporter take the forward pass with dynamic numbers of
atoms, bonds and molecules: traced, it skips the value checks, reads the number of
molecules from ``batch`` without a host synchronisation, and with real-valued bond features
computes one matrix per bond (eager mode looks for the distinct vectors first; categorical
bond features are told apart by a 1-D unique either way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.utils import scatter

from ..core.cells import GRUCell
from ..core.propagate import is_graph_data, propagate, sum_aggregate
from ..core.schedules import Synchronous
from ..nn.mlp import MLP
from ..nn.readout import Set2Set

__all__ = ["MPNNConfig", "MPNN", "EdgeNetwork", "Set2Set", "join_features"]


@dataclass(frozen=True)
class MPNNConfig:
    """Sizes of an :class:`MPNN`.

    Attributes:
        atom_features: size of the input atom feature vectors.
        bond_features: size of the input bond feature vectors.
        num_targets: outputs per molecule.
        hidden_size: node state size ``d``.
        rounds: message-passing rounds ``T`` (weights shared across rounds).
        edge_hidden_size: hidden width of the edge network.
        set2set_steps: processing steps of the Set2Set readout.
        readout_hidden_size: hidden width of the final MLP.
        dropout: dropout before the final MLP's hidden layer.
        sum_readout: also feed the head the sum of the node states (scaled by
            ``1 / sum_readout_scale``). Set2Set's attention read-out is a weighted *mean*,
            blind to molecule size, which size-extensive properties (solubility) need.
        sum_readout_scale: divisor of the summed states, keeping them near unit scale.
        distance_bins: when positive, the last bond feature is an interatomic distance and
            the edge network sees it expanded into this many Gaussians (centres evenly
            spaced from 0 to ``distance_cutoff`` Angstrom, width one spacing) instead of the
            raw number; Gilmer et al. bin distances for the same reason, and SchNet
            expands them the same way. A single scalar through one ReLU layer gives the
            network few ways to tell 1.09 A (C-H) from 1.54 A (C-C).
        distance_cutoff: the largest Gaussian centre, Angstrom.
        categorical_atom_features: for integer atom features, each column's number of
            categories (``atom_features`` columns); each column is one-hot encoded before
            the first layer. Empty (the default): the atom features are real vectors.
        categorical_bond_features: likewise for the bond features.
        extra_features: per-molecule features (fingerprints, descriptors) joined to the
            read-out before the head, as ``model(..., features=...)`` gives them.
        with_head: False for an encoder alone: ``forward`` returns the read-out (the learned
            fingerprint), as :class:`MultiMPNN` uses one encoder per molecule of a row.
    """

    atom_features: int
    bond_features: int
    num_targets: int = 1
    hidden_size: int = 64
    rounds: int = 3
    edge_hidden_size: int = 128
    set2set_steps: int = 3
    readout_hidden_size: int = 256
    dropout: float = 0.0
    sum_readout: bool = False
    sum_readout_scale: float = 10.0
    distance_bins: int = 0
    distance_cutoff: float = 8.0
    categorical_atom_features: tuple[int, ...] = ()
    categorical_bond_features: tuple[int, ...] = ()
    extra_features: int = 0
    with_head: bool = True

    @property
    def fingerprint_size(self) -> int:
        """Width of the read-out (:meth:`MPNN.fingerprint`): Set2Set's ``4 d``, plus ``2 d`` summed."""
        return (6 if self.sum_readout else 4) * self.hidden_size

    def __post_init__(self) -> None:
        for name, columns in (("atom", self.atom_features), ("bond", self.bond_features)):
            sizes = getattr(self, f"categorical_{name}_features")
            if sizes and len(sizes) != columns:
                raise ValueError(
                    f"categorical_{name}_features names {len(sizes)} columns' sizes, but {name}_features is {columns}"
                )
            if any(size < 1 for size in sizes):
                raise ValueError(f"categorical_{name}_features must be positive sizes, got {tuple(sizes)}")
        if math.prod(self.categorical_bond_features) >= 2**62:  # the bond types' keys are int64
            raise ValueError(f"categorical_bond_features allow too many bond types: {self.categorical_bond_features}")
        if self.categorical_bond_features and self.distance_bins > 0:
            raise ValueError("distance_bins expands a real distance column; categorical bond features have none")

    @classmethod
    def for_from_smiles(cls, **fields) -> MPNNConfig:
        """The config for ``torch_geometric.utils.from_smiles`` graphs: its 9 integer atom
        and 3 integer bond columns, sized by its ``x_map`` and ``e_map``; ``fields`` sets
        the rest (``num_targets=``, ``hidden_size=``, ...)."""
        from torch_geometric.utils.smiles import e_map, x_map

        atoms, bonds = tuple(len(v) for v in x_map.values()), tuple(len(v) for v in e_map.values())
        return cls(
            atom_features=len(atoms),
            bond_features=len(bonds),
            categorical_atom_features=atoms,
            categorical_bond_features=bonds,
            **fields,
        )


class EdgeNetwork(nn.Module):
    """``A(e) = reshape(MLP(e), [hidden, hidden])``: one matrix per edge (Gilmer et al. sec. 5.1).

    Shapes:
        edge_attr: ``[num_edges, bond_features]``; returns ``[num_edges, hidden, hidden]``.
    """

    def __init__(self, bond_features: int, hidden_size: int, edge_hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.net = MLP([bond_features, edge_hidden_size, hidden_size**2])

    def forward(self, edge_attr: Tensor) -> Tensor:
        return self.net(edge_attr).view(-1, self.hidden_size, self.hidden_size)


# Use the per-bond-type message while (bond types x nodes) <= this many times the edges.
_TYPED_MESSAGE_LIMIT = 16


def _distinct_rows(values: Tensor) -> tuple[Tensor, Tensor]:
    """``(distinct, inverse)`` with ``values == distinct[inverse]``, as ``torch.unique(dim=0)``.

    Rows of small non-negative integers (one-hot bond features) are packed into one integer
    key first: a 1-D unique is an order of magnitude faster than ``unique_dim`` on CPUs.
    """
    if values.shape[0] and values.shape[1] <= 16:
        packed = values.to(torch.int64)
        if bool((packed == values).all()) and int(packed.min()) >= 0 and int(packed.max()) < 8:
            weights = 8 ** torch.arange(values.shape[1], dtype=torch.int64, device=values.device)
            keys, inverse = torch.unique(packed @ weights, return_inverse=True)
            digits = torch.div(keys.unsqueeze(1), weights, rounding_mode="floor") % 8
            return digits.to(values.dtype), inverse
    return torch.unique(values, dim=0, return_inverse=True)


def _distinct_categories(values: Tensor, sizes: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``(distinct, inverse)`` of integer category rows, ``values == distinct[inverse]``.

    Each row is one mixed-radix key (column ``k`` a digit of base ``sizes[k]``), so that a
    1-D unique finds the distinct rows, without a host synchronisation.
    """
    limits = torch.tensor(sizes, dtype=torch.int64, device=values.device)
    radix = torch.tensor([math.prod(sizes[:k]) for k in range(len(sizes))], device=values.device)  # [1, s0, ...]
    keys, inverse = torch.unique(values.long() @ radix, return_inverse=True)
    return torch.div(keys.unsqueeze(1), radix, rounding_mode="floor") % limits, inverse


class _TypedMessages:
    """The edge step for few bond types: ``m_vw = A(e_vw) h_w`` with ``A`` one matrix per type.

    Every node's state is multiplied by every type's matrix in one GEMM, then each edge
    gathers its sender's product for its type: far cheaper than a ``[num_edges, d, d]``
    tensor per round, and the same sum of products.
    """

    def __init__(self, matrices: Tensor, types: Tensor) -> None:
        self.stacked = matrices.reshape(-1, matrices.shape[-1])  # [types * d, d]
        self.num_types = matrices.shape[0]
        self.types = types

    def __call__(self, edges: Tensor | None, nodes: Tensor, edge_index: Tensor) -> Tensor:
        rows = edge_index[0] * self.num_types + self.types
        return (nodes @ self.stacked.t()).view(-1, nodes.shape[-1]).index_select(0, rows)


class _PerEdgeMessages:
    """The edge step for continuous bond features: ``m_vw = A(e_vw) h_w``, one matrix per edge.

    A multiply and a sum rather than bmm: on CPUs torch's batched matrix-vector product is
    several times slower at these sizes, forward and backward.
    """

    def __init__(self, matrices: Tensor) -> None:
        self.matrices = matrices  # [num_edges, d, d]

    def __call__(self, edges: Tensor | None, nodes: Tensor, edge_index: Tensor) -> Tensor:
        return (self.matrices * nodes.index_select(0, edge_index[0]).unsqueeze(1)).sum(-1)


def _check_categories(values: Tensor, sizes: tuple[int, ...], what: str) -> None:
    """Raises unless ``values`` are integer columns ``[n, len(sizes)]``, column ``k`` in ``0 .. sizes[k] - 1``.

    Traced by torch.compile or torch.export, only the dtype and shape are checked.
    """
    if torch.is_floating_point(values) or values.dim() != 2 or values.shape[1] != len(sizes):
        raise TypeError(
            f"{what} features must be integers, {len(sizes)} columns (categorical_{what}_features), "
            f"got dtype {values.dtype} and shape {tuple(values.shape)}"
        )
    if not torch.compiler.is_compiling() and values.numel():
        bad = (values < 0) | (values >= torch.tensor(sizes, device=values.device))
        if bool(bad.any()):
            row, column = (int(i) for i in torch.nonzero(bad)[0])
            raise ValueError(
                f"{what} {row} has category {int(values[row, column])} in column {column}, "
                f"which has {sizes[column]} categories (0 .. {sizes[column] - 1})"
            )


def _one_hot_columns(values: Tensor, sizes: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """Integer columns ``[n, len(sizes)]`` as their concatenated one-hot codes ``[n, sum(sizes)]``."""
    limits = torch.tensor(sizes, device=values.device)
    offsets = torch.cumsum(limits, 0) - limits
    codes = values.new_zeros(values.shape[0], sum(sizes), dtype=dtype)
    return codes.scatter(1, values.long() + offsets, 1.0)


def _refuse_integers(values: Tensor, what: str) -> None:
    if not torch.is_floating_point(values):
        raise TypeError(
            f"MPNN got integer {what} features (dtype {values.dtype}, {values.shape[-1]} columns), such as "
            "torch_geometric.utils.from_smiles gives: set MPNNConfig(categorical_atom_features=..., "
            "categorical_bond_features=...) to each column's number of categories (MPNNConfig.for_from_smiles() "
            "does for from_smiles), or pass real feature vectors (structnets.chem.mol_to_graph's)"
        )


def join_features(pooled: Tensor, features: Tensor | None, expected: int, what: str) -> Tensor:
    """``[pooled, features]`` for a head that takes ``expected`` extra features per row (0: none).

    Shapes:
        pooled: ``[rows, width]``; features: ``[rows, expected]``; returns ``[rows, width + expected]``.
    """
    if expected:
        if features is None or features.shape != (pooled.shape[0], expected):
            shape = None if features is None else tuple(features.shape)
            raise ValueError(
                f"{what} joins {expected} per-row features to its read-out: pass "
                f"features=[{pooled.shape[0]}, {expected}], got {shape}"
            )
        return torch.cat([pooled, features.to(pooled.dtype)], -1)
    if features is not None and features.numel():
        raise ValueError(f"{what} takes no per-row features (extra_features is 0)")
    return pooled


def _count_graphs(batch: Tensor) -> int:
    """``batch.max() + 1``; traced, an unbacked size (no host synchronisation, no guard)."""
    if torch.compiler.is_compiling():
        count = batch.max().item() + 1
        torch._check(count >= 1)
        return count
    return int(batch.max()) + 1 if batch.numel() else 0


class MPNN(nn.Module):
    """Gilmer et al.'s MPNN: edge-network messages, GRU update, Set2Set readout.

    Call as ``model(batch)`` with a torch_geometric ``Data`` or ``Batch``, or as
    ``model(x, edge_index, edge_attr, batch, num_graphs)`` with tensors, torch_geometric's
    argument order: ``batch`` None puts every atom in one molecule, ``num_graphs`` None
    counts the molecules as ``batch.max() + 1`` (pass it where trailing molecules may have
    no atoms; a ``Batch`` gives its own).

    Shapes:
        x: ``[num_nodes, atom_features]`` (integers with ``categorical_atom_features``);
        edge_index: ``[2, num_edges]``; edge_attr: ``[num_edges, bond_features]``;
        batch: ``[num_nodes]``; returns ``[num_graphs, num_targets]``.
    """

    def __init__(self, config: MPNNConfig) -> None:
        super().__init__()
        self.config = config
        d = config.hidden_size
        atom_inputs = sum(config.categorical_atom_features) or config.atom_features
        self.embed = MLP([atom_inputs, d], activate_last=True)
        if config.categorical_bond_features:
            bond_inputs = sum(config.categorical_bond_features)
        else:
            bond_inputs = config.bond_features + (config.distance_bins - 1 if config.distance_bins > 0 else 0)
        self.edge_network = EdgeNetwork(bond_inputs, d, config.edge_hidden_size)
        if config.distance_bins > 0:
            centres = torch.linspace(0.0, config.distance_cutoff, config.distance_bins)
            self.register_buffer("distance_centres", centres, persistent=False)
        self.update = GRUCell(d, d)
        self.readout = Set2Set(2 * d, config.set2set_steps)
        head_inputs = config.fingerprint_size + config.extra_features
        self.head = (
            MLP([head_inputs, config.readout_hidden_size, config.num_targets], dropout=config.dropout)
            if config.with_head
            else None
        )

    def node_states(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> tuple[Tensor, Tensor]:
        """``(h^0, h^T)``: node states before and after the message-passing rounds."""
        h0 = self.embed(self._atom_inputs(x))
        if edge_attr.dim() == 1:  # one feature per bond, as PyG allows
            edge_attr = edge_attr.unsqueeze(-1)
        if self.config.categorical_bond_features:
            _check_categories(edge_attr, self.config.categorical_bond_features, "bond")
        else:
            _refuse_integers(edge_attr, "bond")
        if self.config.categorical_bond_features:
            # Categorical bonds are few types: one matrix per type present, found by a 1-D unique
            # (traced too: torch.export and ONNX take its data-dependent size).
            distinct, inverse = _distinct_categories(edge_attr, self.config.categorical_bond_features)
            messages: _TypedMessages | _PerEdgeMessages = _TypedMessages(
                self.edge_network(self._bond_inputs(distinct)), inverse
            )
        elif torch.compiler.is_compiling():
            # Traced, real bond features: how many distinct vectors there are is read on the host
            # in eager mode (a choice of path), so one matrix per bond.
            messages = _PerEdgeMessages(self.edge_network(self._bond_inputs(edge_attr)))
        else:
            # The matrices are computed once per forward and reused every round, and only for
            # the distinct bond feature vectors: molecular graphs have a handful of bond types.
            distinct, inverse = _distinct_rows(edge_attr)
            matrices = self.edge_network(self._bond_inputs(distinct))  # [types, d, d]
            if distinct.shape[0] * h0.shape[0] <= _TYPED_MESSAGE_LIMIT * max(edge_index.shape[1], 1):
                messages = _TypedMessages(matrices, inverse)
            else:
                messages = _PerEdgeMessages(matrices.index_select(0, inverse))
        rounds = Synchronous(self.config.rounds)
        h, _ = propagate(self.update, None, edge_index, rounds, state=h0, edge_step=messages, aggregate=sum_aggregate)
        return h0, h

    def _atom_inputs(self, x: Tensor) -> Tensor:
        if self.config.categorical_atom_features:
            _check_categories(x, self.config.categorical_atom_features, "atom")
            return _one_hot_columns(x, self.config.categorical_atom_features, self.embed[0].weight.dtype)
        _refuse_integers(x, "atom")
        return x

    def _bond_inputs(self, edge_attr: Tensor) -> Tensor:
        if self.config.categorical_bond_features:
            dtype = self.edge_network.net[0].weight.dtype
            return _one_hot_columns(edge_attr, self.config.categorical_bond_features, dtype)
        return self._expand_distances(edge_attr)

    def _expand_distances(self, edge_attr: Tensor) -> Tensor:
        """Replaces the last column (a distance) by its Gaussian expansion, when configured."""
        if self.config.distance_bins <= 0:
            return edge_attr
        centres = self.distance_centres.to(edge_attr.dtype)
        width = self.config.distance_cutoff / max(self.config.distance_bins - 1, 1)
        expanded = torch.exp(-(((edge_attr[:, -1:] - centres) / width) ** 2))
        return torch.cat([edge_attr[:, :-1], expanded], -1)

    def forward(
        self,
        x: Tensor | Data,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
        batch: Tensor | None = None,
        num_graphs: int | None = None,
        *,
        features: Tensor | None = None,
    ) -> Tensor:
        """The head's outputs ``[num_graphs, num_targets]`` (the read-out without a head).

        ``features`` ``[num_graphs, extra_features]`` are joined to the read-out before the
        head; a ``Data`` or ``Batch`` may carry them as its ``features`` attribute.
        """
        if is_graph_data(x) and features is None:
            features = getattr(x, "features", None)
        pooled = self.fingerprint(x, edge_index, edge_attr, batch, num_graphs)
        if self.head is None:
            return pooled
        return self.head(join_features(pooled, features, self.config.extra_features, "this MPNN"))

    def fingerprint(
        self,
        x: Tensor | Data,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
        batch: Tensor | None = None,
        num_graphs: int | None = None,
    ) -> Tensor:
        """The read-out ``[num_graphs, fingerprint_size]``: Set2Set of ``[h^T, h^0]`` (and their sum)."""
        if is_graph_data(x):
            if edge_index is not None or edge_attr is not None or batch is not None:
                raise ValueError("with a Data or Batch, call model(data): the tensors come from it")
            data = x
            x, edge_index, edge_attr, batch = data.x, data.edge_index, data.edge_attr, getattr(data, "batch", None)
            if num_graphs is None:
                num_graphs = getattr(data, "num_graphs", None) if batch is not None else 1
        for name, value in (("x", x), ("edge_index", edge_index), ("edge_attr", edge_attr)):
            if value is None:
                raise ValueError(f"MPNN needs {name} (bond features as edge_attr: [num_edges, bond_features])")
        if batch is None:
            batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            num_graphs = 1 if num_graphs is None else num_graphs
        elif num_graphs is None:
            num_graphs = _count_graphs(batch)
        h0, h = self.node_states(x, edge_index, edge_attr)
        states = torch.cat([h, h0], -1)
        pooled = self.readout(states, batch, num_graphs)
        if self.config.sum_readout:
            summed = scatter(states, batch, 0, num_graphs, reduce="sum") / self.config.sum_readout_scale
            pooled = torch.cat([pooled, summed], -1)
        return pooled

    def forward_batch(self, data: Data) -> Tensor:
        """Runs on a ``torch_geometric.data.Batch`` (the same as ``model(data)``)."""
        return self(data)
