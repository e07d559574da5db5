"""The molecules a molecule property run reads, and how it splits them.

:class:`MoleculeSet` names the datasets ``structnets molprop train --dataset`` knows;
:func:`load_molecules` reads the run's molecules (a named dataset or a CSV file, sampled and
restricted to the chosen targets) and :func:`make_split` splits them, both as the run's
config says.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .datasets import (
    MoleculeDataset,
    QM9Source,
    load_esol,
    load_freesolv,
    load_lipophilicity,
    load_qm9,
    read_molecule_csv,
)
from .splits import random_split, read_split_json, scaffold_split, sized_split

if TYPE_CHECKING:
    from .molprop_config import MolpropConfig

__all__ = ["MoleculeSet", "SplitKind", "load_molecules", "make_split", "split_by_rows", "subsample"]

logger = logging.getLogger(__name__)


class MoleculeSet(enum.Enum):
    """The named datasets. ``qm9`` is the full set, read from the installed ``qm9pack``
    package; ``qm9-subset`` the 5,000-molecule subset in the data directory; the others are
    MoleculeNet's files in the data directory."""

    ESOL = "esol"
    FREESOLV = "freesolv"
    LIPOPHILICITY = "lipophilicity"
    QM9 = "qm9"
    QM9_SUBSET = "qm9-subset"

    @property
    def is_qm9(self) -> bool:
        return self in (MoleculeSet.QM9, MoleculeSet.QM9_SUBSET)

    def load(self, **kwargs: Any) -> MoleculeDataset:
        """Reads the dataset; ``kwargs`` go to its loader (:mod:`structnets.chem.datasets`)."""
        if self is MoleculeSet.QM9:
            return load_qm9(source=QM9Source.QM9PACK, **kwargs)
        if self is MoleculeSet.QM9_SUBSET:
            return load_qm9(source=QM9Source.SUBSET, **kwargs)
        loader = {
            MoleculeSet.ESOL: load_esol,
            MoleculeSet.FREESOLV: load_freesolv,
            MoleculeSet.LIPOPHILICITY: load_lipophilicity,
        }[self]
        return loader(**kwargs)


class SplitKind(enum.Enum):
    """How molecules are split: at random, or by Bemis-Murcko scaffold (no scaffold in two splits)."""

    RANDOM = "random"
    SCAFFOLD = "scaffold"


def load_molecules(config: MolpropConfig) -> MoleculeDataset:
    """The run's molecules: ``config.dataset`` or the CSV ``config.data``, featurised."""
    if config.dataset is None:
        dataset = read_molecule_csv(
            Path(config.data),
            config.smiles_columns,
            list(config.target_columns),
            config.featurizer,
            skip_invalid=config.skip_invalid,
        )
        return dataset if config.sample is None else subsample(dataset, config.sample, config.train.seed)
    kwargs: dict[str, Any] = {"data_dir": config.data_dir, "config": config.featurizer}
    if config.limit is not None:
        kwargs["limit"] = config.limit
    if config.dataset.is_qm9:
        if config.qm9_npz is not None:
            kwargs["path"] = config.qm9_npz
        if config.workers is not None:
            kwargs["workers"] = config.workers
        if config.sample is not None:
            # Drawn before featurisation: a few thousand molecules of QM9 load in seconds.
            kwargs.update(sample=config.sample, seed=config.train.seed)
    dataset = config.dataset.load(**kwargs)
    if not config.dataset.is_qm9 and config.sample is not None:
        dataset = subsample(dataset, config.sample, config.train.seed)
    if config.target_columns:
        missing = [t for t in config.target_columns if t not in dataset.target_names]
        if missing:
            raise ValueError(
                f"{config.dataset.value} has no target {missing[0]!r}; it has {', '.join(dataset.target_names)}"
            )
        keep = [dataset.target_names.index(t) for t in config.target_columns]
        dataset = dataclasses.replace(
            dataset, targets=dataset.targets[:, keep], target_names=list(config.target_columns)
        )
    return dataset


def subsample(dataset: MoleculeDataset, sample: int, seed: int) -> MoleculeDataset:
    """``sample`` molecules drawn at random (``seed``), kept in file order."""
    if sample > len(dataset):
        raise ValueError(f"cannot sample {sample} molecules out of the {len(dataset)} read")
    keep = sorted(torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:sample].tolist())
    return dataset.pick(keep)


def split_by_rows(path: Path, dataset: MoleculeDataset) -> dict[str, list[int]]:
    """A split file's rows as indices of ``dataset``.

    The file's indices count the source's data rows (see :attr:`MoleculeDataset.positions`),
    whatever the reader skipped, so a split file means the same molecules with and without
    ``--skip-invalid``; a row that was skipped is left out of its split with a warning.
    Every split must keep at least one molecule.
    """
    total = dataset.source_rows if dataset.source_rows is not None else len(dataset)
    rows = read_split_json(path, total)
    where = {position: k for k, position in enumerate(dataset.positions)}
    split = {name: [where[i] for i in indices if i in where] for name, indices in rows.items()}
    lost = {name: len(rows[name]) - len(split[name]) for name in rows if len(rows[name]) != len(split[name])}
    if lost:
        shown = ", ".join(f"{count} from {name}" for name, count in lost.items())
        logger.warning("%s: rows skipped as invalid are left out of the split (%s)", path, shown)
    empty = [name for name, indices in split.items() if not indices]
    if empty:
        raise ValueError(f"{path}: the split leaves no molecules in {' and '.join(map(repr, empty))}")
    return split


def make_split(config: MolpropConfig, dataset: MoleculeDataset) -> dict[str, list[int]]:
    """``{"train": [...], "val": [...], "test": [...]}``: row indices of ``dataset``."""
    if config.split_indices is not None:
        return split_by_rows(Path(config.split_indices), dataset)
    if config.split_sizes is not None:
        if config.split is SplitKind.SCAFFOLD:
            raise ValueError("--split-sizes makes a random split; it cannot be combined with --split scaffold")
        return sized_split(len(dataset), *config.split_sizes, seed=config.train.seed)
    if config.split is SplitKind.SCAFFOLD:
        return scaffold_split(dataset.smiles, config.fractions, seed=config.train.seed)
    return random_split(len(dataset), config.fractions, seed=config.train.seed)
