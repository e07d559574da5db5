"""Target scaling for molecule property regression: a composition baseline, then standardisation.

A network learns best from targets near zero with unit spread. :class:`Scaler` is fitted on
the training split only: optionally a linear model of each molecule's composition
(:func:`composition`, atoms per element), then each target's mean and standard deviation
of what that model leaves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data

from .featurize import FeaturizerConfig, atom_feature_names
from .metrics import Task

__all__ = ["composition", "Scaler"]


def composition(graphs: Sequence[Data], featurizer: FeaturizerConfig) -> Tensor:
    """Each molecule's atom count per element slot (hydrogens included, whether or not they
    are graph nodes), and a column of ones.

    Read from the featurised atoms, so it needs no second pass through rdkit.

    Shapes:
        returns ``[num_graphs, elements + 2]`` float64 (the element slots, "other", ones).
    """
    names = atom_feature_names(featurizer)
    elements = [k for k, n in enumerate(names) if n.startswith("element=")]
    hydrogen_slot = names.index("element=H") if "element=H" in names else None
    hydrogen_counts = [
        (k, float(n.split("=")[1].rstrip("+"))) for k, n in enumerate(names) if n.startswith("hydrogens=")
    ]
    out = torch.zeros(len(graphs), len(elements) + 2, dtype=torch.float64)
    if not graphs:
        return out
    x = torch.cat([graph.x for graph in graphs]).to(torch.float64)
    per_atom = torch.zeros(x.shape[0], out.shape[1], dtype=torch.float64)
    per_atom[:, : len(elements)] = x[:, elements]
    if not featurizer.explicit_hydrogens:
        # Hydrogens live in the heavy atoms' hydrogen-count one-hot; an explicit
        # hydrogen atom would be counted twice, once as a node and once there.
        slots, counts = zip(*hydrogen_counts)
        column = elements.index(hydrogen_slot) if hydrogen_slot is not None else len(elements)
        per_atom[:, column] += x[:, list(slots)] @ torch.tensor(counts, dtype=torch.float64)
    graph_of_atom = torch.repeat_interleave(torch.arange(len(graphs)), torch.tensor([g.x.shape[0] for g in graphs]))
    out.index_add_(0, graph_of_atom, per_atom)
    out[:, -1] = 1.0
    return out


@dataclasses.dataclass(frozen=True)
class Scaler:
    """Per-target standardisation fitted on the training split (identity for classification).

    ``transform(y) = (y - counts @ baseline - mean) / std`` and ``inverse`` undoes it.

    With ``baseline`` set, a linear model of the molecule's composition (atoms per element,
    plus a constant) is fitted on the training split first, and the network learns the
    standardised remainder. Extensive properties such as QM9's total energies (standard
    deviation ~10 eV, almost all of it from the atom counts) then leave the network only
    the part that depends on the structure, like the per-element reference energies of
    SchNet and others.

    Shapes:
        mean, std: ``[num_targets]``; baseline: ``[elements + 2, num_targets]`` float64;
        y: ``[num_molecules, num_targets]``; counts: ``[num_molecules, elements + 2]``.
    """

    mean: Tensor
    std: Tensor
    baseline: Tensor | None = None

    @classmethod
    def fit(cls, targets: Tensor, task: Task, counts: Tensor | None = None) -> Scaler:
        """Fitted on ``targets`` (the training split's); ``counts`` adds the composition baseline."""
        if task is Task.CLASSIFICATION:
            return cls(torch.zeros(targets.shape[1]), torch.ones(targets.shape[1]))
        baseline = None
        if counts is not None:
            # Least squares, minimum-norm: an element absent from training gets coefficient 0.
            # No ridge penalty: on additive targets such as total energies (~1,000 eV per
            # carbon) any shrinkage of a rare element's coefficient costs that much error.
            baseline = torch.linalg.lstsq(counts, targets.to(torch.float64), driver="gelsd").solution
            targets = targets - (counts @ baseline).to(targets.dtype)
        std = targets.std(0, unbiased=False)
        return cls(targets.mean(0), torch.where(std > 0, std, torch.ones_like(std)), baseline)

    def _offset(self, y: Tensor, counts: Tensor | None) -> Tensor:
        if self.baseline is None:
            return self.mean.to(y)
        if counts is None:
            raise ValueError("this scaler has a composition baseline: pass the molecules' composition")
        return (counts @ self.baseline).to(y) + self.mean.to(y)

    def transform(self, y: Tensor, counts: Tensor | None = None) -> Tensor:
        return (y - self._offset(y, counts)) / self.std.to(y)

    def inverse(self, y: Tensor, counts: Tensor | None = None) -> Tensor:
        return y * self.std.to(y) + self._offset(y, counts)

    def state_dict(self) -> dict[str, Any]:
        """Tensors for a checkpoint's ``extra`` (they load with ``weights_only=True``)."""
        return {"mean": self.mean, "std": self.std, "baseline": self.baseline}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Scaler:
        return cls(state["mean"], state["std"], state.get("baseline"))
