"""Molecule property datasets: a CSV reader, the MoleculeNet regression sets and QM9.

Each loader names the dataset's canonical source and reads a local copy from the data
directory (:mod:`structnets.data`); nothing is downloaded. Every molecule is featurised
once, when the dataset is read, with :func:`structnets.chem.mol_to_graph`.

Where a molecule came from is kept in :attr:`MoleculeDataset.rows`: for a CSV, the
1-based line number of its record in the file (the header is line 1, so the first
molecule is line 2, as an editor shows it); for QM9, the molecule's QM9 index (the
number in ``dsgdb9nsd_NNNNNN``).
"""

from __future__ import annotations

import concurrent.futures
import copy
import csv
import dataclasses
import enum
import importlib.util
import logging
import math
import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from ..train.data import check_finite, dataset_path, read_csv
from .featurize import (
    FeaturizerConfig,
    MoleculeError,
    graph_from_smiles,
    mol_from_smiles,
    mol_to_graph,
    mol_with_geometry,
)

__all__ = [
    "SkippedRow",
    "MoleculeDataset",
    "read_molecule_csv",
    "ESOL_URL",
    "FREESOLV_URL",
    "LIPOPHILICITY_URL",
    "QM9_URL",
    "QM9PACK_REQUIREMENT",
    "load_esol",
    "load_freesolv",
    "load_lipophilicity",
    "HARTREE_TO_EV",
    "QM9_TARGETS",
    "CHEMICAL_ACCURACY",
    "QM9_CONFIG",
    "QM9Source",
    "load_qm9",
    "write_qm9_npz",
]

logger = logging.getLogger(__name__)

_DEFAULT_CONFIG = FeaturizerConfig()

# Largest float32; a finite float64 above it would become infinity in the targets tensor.
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


class SkippedRow(NamedTuple):
    """A row left out by a reader with ``skip_invalid=True``: where, the offending value, why."""

    row: int
    value: str
    reason: str


@dataclass(frozen=True, eq=False)
class MoleculeDataset:
    """Featurised molecules and their regression targets.

    ``targets`` is the one place the targets live: the stored ``graphs`` carry none, and
    ``dataset[i]`` returns a shallow copy of ``graphs[i]`` with ``y = targets[i : i + 1]``
    attached, so the stored graphs never change and a dataset made with
    ``dataclasses.replace`` (other target columns, standardised targets) stays consistent.

    Attributes:
        smiles: one SMILES per molecule, as read (surrounding whitespace removed).
        graphs: one featurised graph per molecule (see :func:`structnets.chem.mol_to_graph`).
        targets: ``[num_molecules, num_targets]`` float32.
        target_names: one name per target column.
        rows: where each molecule came from (see the module docstring).
        skipped: the rows a reader left out, each with the offending value and the reason.
        allow_missing_targets: NaN marks a missing target; without it NaN is an error.
            Infinity is always an error.
        positions: each molecule's 0-based position among the source's data rows (for a
            CSV, the records after the header, blank lines not counted, skipped rows
            counted); split files index these. None: ``0 .. len - 1``.
        source_rows: how many data rows the source has, skipped ones included (None:
            unknown, for example when a limit stopped the reader early).
        other_smiles: for rows of several molecules (a solute and a solvent, reactants),
            each row's molecules after the first, as read from the further SMILES columns;
            empty tuples for one molecule per row. ``smiles`` and ``graphs`` are the first.
        other_graphs: the featurised ``other_smiles``.

    Shapes:
        dataset[i].y: ``[1, num_targets]``, so that a batch's ``y`` is ``[num_graphs, num_targets]``.
    """

    smiles: list[str]
    graphs: list[Data]
    targets: Tensor
    target_names: list[str]
    rows: list[int]
    skipped: list[SkippedRow] = field(default_factory=list)
    allow_missing_targets: bool = False
    positions: list[int] | None = None
    source_rows: int | None = None
    other_smiles: list[tuple[str, ...]] | None = None
    other_graphs: list[tuple[Data, ...]] | None = None

    def __post_init__(self) -> None:
        if self.positions is None:
            object.__setattr__(self, "positions", list(range(len(self.graphs))))
        if (self.other_smiles is None) != (self.other_graphs is None):
            raise ValueError("other_smiles and other_graphs come together: give both or neither")
        if self.other_smiles is None:
            object.__setattr__(self, "other_smiles", [()] * len(self.graphs))
            object.__setattr__(self, "other_graphs", [()] * len(self.graphs))
        widths = {len(row) for row in self.other_smiles} | {len(row) for row in self.other_graphs}
        if len(widths) > 1:
            raise ValueError(f"every row must have the same number of molecules, got {sorted(w + 1 for w in widths)}")
        if self.targets.dim() != 2 or not self.targets.is_floating_point():
            raise ValueError(f"targets must be a 2-D float tensor, got {self.targets.dim()}-D {self.targets.dtype}")
        count = self.targets.shape[0]
        sizes = {
            "smiles": len(self.smiles),
            "graphs": len(self.graphs),
            "rows": len(self.rows),
            "positions": len(self.positions),
            "other_smiles": len(self.other_smiles),
            "other_graphs": len(self.other_graphs),
        }
        if any(size != count for size in sizes.values()):
            raise ValueError(f"targets has {count} rows but the lengths are {sizes}")
        if len(self.target_names) != self.targets.shape[1]:
            raise ValueError(f"{len(self.target_names)} target names for {self.targets.shape[1]} target columns")
        if self.allow_missing_targets:
            # NaN may mark a missing label; infinity never means anything.
            check_finite(torch.nan_to_num(self.targets, nan=0.0, posinf=math.inf, neginf=-math.inf), "targets")
        else:
            check_finite(self.targets, "targets (pass allow_missing_targets=True if NaN marks a missing value)")

    def __len__(self) -> int:
        return len(self.graphs)

    @property
    def molecules_per_row(self) -> int:
        return 1 + (len(self.other_smiles[0]) if self.other_smiles else 0)

    def column(self, position: int) -> list[Data]:
        """The graphs of molecule ``position`` of every row (0: :attr:`graphs`)."""
        return self.graphs if position == 0 else [row[position - 1] for row in self.other_graphs]

    def pick(self, indices: Sequence[int], **changes: Any) -> MoleculeDataset:
        """The molecules at ``indices``, every per-molecule field with them; ``changes`` replace fields."""
        indices = list(indices)
        fields = dict(
            smiles=[self.smiles[i] for i in indices],
            graphs=[self.graphs[i] for i in indices],
            targets=self.targets[indices],
            rows=[self.rows[i] for i in indices],
            positions=[self.positions[i] for i in indices],
            other_smiles=[self.other_smiles[i] for i in indices],
            other_graphs=[self.other_graphs[i] for i in indices],
        )
        return dataclasses.replace(self, **{**fields, **changes})

    def __getitem__(self, index: int) -> Data:
        index = range(len(self))[index]  # negative indices count from the end; IndexError past it
        graph = copy.copy(self.graphs[index])
        graph.y = self.targets[index : index + 1]
        return graph

    def __iter__(self) -> Iterator[Data]:
        return (self[i] for i in range(len(self)))

    def subset(self, indices: Sequence[int]) -> MoleculeDataset:
        """The molecules at ``indices`` (for example one part of a split); ``skipped`` is not carried over."""
        return self.pick(indices, skipped=[])


# ---------------------------------------------------------------------------- CSV
def _parse_target(text: str, column: str, allow_missing: bool) -> float:
    """A target value, or a ValueError whose message names the column and the value."""
    stripped = text.strip()
    if not stripped:
        if allow_missing:
            return math.nan
        raise ValueError(f"empty target in column {column!r}")
    try:
        value = float(stripped)
    except ValueError:
        raise ValueError(f"non-numeric target {text!r} in column {column!r}") from None
    if math.isnan(value):
        if allow_missing:
            return value
        raise ValueError(
            f"NaN target {text!r} in column {column!r} (pass allow_missing_targets=True if NaN marks a missing value)"
        )
    if math.isinf(value) or abs(value) > _FLOAT32_MAX:
        raise ValueError(f"infinite target {text!r} in column {column!r} (or beyond the float32 range)")
    return value


def read_molecule_csv(
    path: str | Path,
    smiles_column: str | Sequence[str],
    target_columns: Sequence[str],
    config: FeaturizerConfig = _DEFAULT_CONFIG,
    skip_invalid: bool = False,
    *,
    allow_missing_targets: bool = False,
    limit: int | None = None,
) -> MoleculeDataset:
    """Reads and featurises a CSV with a header row, a SMILES column and numeric target columns.

    Every invalid row (unparsable SMILES, non-numeric, NaN or infinite target, too few
    fields) is an error naming the file, the line and the value; with ``skip_invalid=True``
    it is left out instead, logged with ``logging.warning`` and recorded in ``skipped``.
    Blank lines are ignored.

    Args:
        path: the CSV file (UTF-8, an optional byte-order mark is ignored).
        smiles_column: header of the SMILES column, or several headers for rows of several
            molecules (the first becomes ``smiles``/``graphs``, the rest ``other_smiles``/``other_graphs``).
        target_columns: headers of the target columns, in the order of ``targets``.
        config: featurisation.
        skip_invalid: skip invalid rows instead of raising.
        allow_missing_targets: read an empty or NaN target as NaN (a missing label).
        limit: stop after this many molecules (for quick experiments and tests).

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty file, missing column (the message lists the columns), no
            molecules, or an invalid row without ``skip_invalid``
            (:class:`MoleculeError` for an invalid SMILES).
    """
    if isinstance(target_columns, str):
        raise TypeError(f"target_columns must be a sequence of column names, got the string {target_columns!r}")
    if not target_columns:
        raise ValueError("target_columns is empty: name at least one target column")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CSV file at {path}")
    table = read_csv(path)
    table.check_unique()
    if len(set(target_columns)) != len(target_columns):
        twice = sorted({c for c in target_columns if list(target_columns).count(c) > 1})
        raise ValueError(f"target column(s) {twice} asked for more than once; name each target once")
    smiles_columns = [smiles_column] if isinstance(smiles_column, str) else list(smiles_column)
    if not smiles_columns or len(set(smiles_columns)) != len(smiles_columns):
        raise ValueError(f"name each SMILES column once, got {smiles_columns}")
    smiles_indices = [table.column(name) for name in smiles_columns]
    other_smiles: list[tuple[str, ...]] = []
    other_graphs: list[tuple[Data, ...]] = []
    target_indices = [table.column(name) for name in target_columns]
    smiles_list: list[str] = []
    graphs: list[Data] = []
    values: list[list[float]] = []
    rows: list[int] = []
    positions: list[int] = []
    skipped: list[SkippedRow] = []
    for record in table.rows:
        if limit is not None and len(graphs) >= limit:
            break
        value = ""  # the field being checked, reported if the row is invalid
        try:
            width = table.width_error(record)
            if width is not None:
                value = ",".join(record.fields)
                raise ValueError(width)
            row_smiles = []
            for index in smiles_indices:
                value = record.fields[index].strip()
                if not value:
                    where = f" in column {table.names[index]!r}" if len(smiles_indices) > 1 else ""
                    raise MoleculeError(f"empty SMILES{where}")
                row_smiles.append(value)
            smiles = row_smiles[0]
            target_row = []
            for index in target_indices:
                value = record.fields[index]
                target_row.append(_parse_target(value, table.names[index], allow_missing_targets))
            row_graphs = []
            for index, value in zip(smiles_indices, row_smiles):
                try:
                    row_graphs.append(graph_from_smiles(value, config))
                except MoleculeError as error:
                    where = f" (column {table.names[index]!r})" if len(smiles_indices) > 1 else ""
                    raise MoleculeError(f"{error}{where}") from error
            graph = row_graphs[0]
        except ValueError as error:
            if not skip_invalid:
                raise type(error)(f"{path}, line {record.line}: {error}") from error
            logger.warning("%s, line %d: skipped %r: %s", path, record.line, value, error)
            skipped.append(SkippedRow(record.line, value, str(error)))
            continue
        smiles_list.append(smiles)
        graphs.append(graph)
        other_smiles.append(tuple(row_smiles[1:]))
        other_graphs.append(tuple(row_graphs[1:]))
        values.append(target_row)
        rows.append(record.line)
        positions.append(record.index)
    if not graphs:
        detail = (
            f"all {len(skipped)} rows were invalid; the first, line {skipped[0].row}: {skipped[0].reason}"
            if skipped
            else "no data rows"
        )
        raise ValueError(f"{path}: no molecules read ({detail})")
    return MoleculeDataset(
        smiles=smiles_list,
        graphs=graphs,
        targets=torch.tensor(values, dtype=torch.float32),
        target_names=list(target_columns),
        rows=rows,
        skipped=skipped,
        allow_missing_targets=allow_missing_targets,
        positions=positions,
        source_rows=None if limit is not None and len(graphs) >= limit else len(table.rows),
        other_smiles=other_smiles,
        other_graphs=other_graphs,
    )


# ---------------------------------------------------------------------------- MoleculeNet
ESOL_URL = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/delaney-processed.csv"
FREESOLV_URL = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/SAMPL.csv"
LIPOPHILICITY_URL = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/Lipophilicity.csv"


def load_esol(
    data_dir: str | Path | None = None,
    config: FeaturizerConfig = _DEFAULT_CONFIG,
    *,
    skip_invalid: bool = False,
    limit: int | None = None,
) -> MoleculeDataset:
    """ESOL (Delaney 2004): 1,128 molecules, log10 aqueous solubility in mol/L.

    Reads ``esol/delaney-processed.csv`` from the data directory (MoleculeNet's file,
    :data:`ESOL_URL`); the target is ``measured log solubility in mols per litre``.
    """
    path = dataset_path("esol", "delaney-processed.csv", ESOL_URL, data_dir)
    return read_molecule_csv(
        path, "smiles", ["measured log solubility in mols per litre"], config, skip_invalid, limit=limit
    )


def load_freesolv(
    data_dir: str | Path | None = None,
    config: FeaturizerConfig = _DEFAULT_CONFIG,
    *,
    skip_invalid: bool = False,
    limit: int | None = None,
) -> MoleculeDataset:
    """FreeSolv (Mobley and Guthrie 2014): 642 molecules, hydration free energy in kcal/mol.

    Reads ``freesolv/SAMPL.csv`` (MoleculeNet's file, :data:`FREESOLV_URL`); SMILES in
    ``smiles``, the experimental target in ``expt`` (``calc`` is a physics baseline).
    """
    path = dataset_path("freesolv", "SAMPL.csv", FREESOLV_URL, data_dir)
    return read_molecule_csv(path, "smiles", ["expt"], config, skip_invalid, limit=limit)


def load_lipophilicity(
    data_dir: str | Path | None = None,
    config: FeaturizerConfig = _DEFAULT_CONFIG,
    *,
    skip_invalid: bool = False,
    limit: int | None = None,
) -> MoleculeDataset:
    """Lipophilicity (ChEMBL, via MoleculeNet): 4,200 molecules, octanol/water logD at pH 7.4.

    Reads ``lipophilicity/Lipophilicity.csv`` (:data:`LIPOPHILICITY_URL`); columns
    ``CMPD_CHEMBLID``, ``exp`` (the target) and ``smiles``.
    """
    path = dataset_path("lipophilicity", "Lipophilicity.csv", LIPOPHILICITY_URL, data_dir)
    return read_molecule_csv(path, "smiles", ["exp"], config, skip_invalid, limit=limit)


# ---------------------------------------------------------------------------- QM9
QM9_URL = "https://ndownloader.figshare.com/files/3195389"
QM9PACK_REQUIREMENT = "qm9pack==1.0.3"

#: CODATA 2018 value, the one torch_geometric's QM9 uses.
HARTREE_TO_EV = 27.211386246

#: The 12 targets of Gilmer et al. (2017) and MoleculeNet, with the units the loader returns.
QM9_TARGETS: dict[str, str] = {
    "mu": "D",
    "alpha": "bohr^3",
    "homo": "eV",
    "lumo": "eV",
    "gap": "eV",
    "r2": "bohr^2",
    "zpve": "eV",
    "u0": "eV",
    "u298": "eV",
    "h298": "eV",
    "g298": "eV",
    "cv": "cal/(mol K)",
}

#: Chemical accuracy per target as used by Gilmer et al. (2017), in the units of :data:`QM9_TARGETS`.
CHEMICAL_ACCURACY: dict[str, float] = {
    "mu": 0.1,
    "alpha": 0.1,
    "homo": 0.043,
    "lumo": 0.043,
    "gap": 0.043,
    "r2": 1.2,
    "zpve": 0.0012,
    "u0": 0.043,
    "u298": 0.043,
    "h298": 0.043,
    "g298": 0.043,
    "cv": 0.050,
}

# Stored in Hartree in QM9; converted to eV as torch_geometric does.
_HARTREE_TARGETS = frozenset({"homo", "lumo", "gap", "zpve", "u0", "u298", "h298", "g298"})

# Column of each target in qm9pack's CSV files (names from qm9pack's own column help).
_QM9PACK_COLUMNS = {
    "mu": "Dipole_debye",
    "alpha": "Polarizability_bohr3",
    "homo": "HOMO_au",
    "lumo": "LUMO_au",
    "gap": "HOMO_LUMO_gap_au",
    "r2": "R2_bohr2",
    "zpve": "ZPVE_au",
    "u0": "InternalEnergy_0K_au",
    "u298": "InternalEnergy_298K_au",
    "h298": "Enthalphy_298K_au",
    "g298": "GibbsFreeEnergy_298K_au",
    "cv": "Heatcapacity_Cv_cal_mol_K",
}
_QM9PACK_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")


#: Gilmer et al.'s QM9 inputs: hydrogens as atoms and interatomic distances on the bonds.
QM9_CONFIG = FeaturizerConfig(explicit_hydrogens=True, distances=True)


class QM9Source(enum.Enum):
    """Where :func:`load_qm9` reads QM9 from."""

    #: ``qm9/qm9_subset5000.npz`` in the data directory: 5,000 random molecules with geometries.
    SUBSET = "subset"
    #: All 130,831 molecules from the ``qm9pack`` package's CSV files (``pip install qm9pack==1.0.3``).
    QM9PACK = "qm9pack"


class _QM9Record(NamedTuple):
    index: int
    smiles: str
    # Either parsed already (the subset), or qm9pack's text, parsed by _geometry only for
    # the molecules that are featurised, and in the worker processes when there are any.
    atoms: list[int] | str
    coordinates: Tensor | str
    origin: str  # file and line, for error messages
    raw_targets: list[float]  # in QM9's own units, in the order asked for


def load_qm9(
    data_dir: str | Path | None = None,
    config: FeaturizerConfig = QM9_CONFIG,
    *,
    source: QM9Source = QM9Source.SUBSET,
    targets: Sequence[str] = tuple(QM9_TARGETS),
    skip_invalid: bool = False,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    path: str | Path | None = None,
) -> MoleculeDataset:
    """QM9 (Ramakrishnan et al. 2014) with DFT geometries; energies converted to eV.

    The bonds, bond orders and charges come from QM9's SMILES, and the coordinates from
    the DFT geometry. QM9's geometry files list the atoms in their own order, which for
    about 0.3% of molecules differs from that of the SMILES with hydrogens added (atoms
    of charged groups, for example), so the atoms are matched by
    :func:`structnets.chem.mol_with_geometry`, not assumed to be in the same order. Bond
    perception from the geometry alone (rdkit's DetermineBonds) is not used, because it
    fails on about 3% of QM9, its strained cages.

    The default ``config`` is :data:`QM9_CONFIG`, Gilmer et al.'s: explicit hydrogens and
    distances (add ``complete_graph=True`` for their complete-graph variant).

    Args:
        data_dir: the data directory (for :attr:`QM9Source.SUBSET`).
        config: featurisation.
        source: the 5,000-molecule subset in the data directory, or the full set from qm9pack.
        targets: names from :data:`QM9_TARGETS`, in the order of the targets tensor.
        skip_invalid: skip molecules whose SMILES cannot be read or matched to the geometry.
        limit: read only the first molecules (for quick experiments and tests). QM9 is
            ordered by size, so the first molecules are the smallest: use ``sample`` for a
            representative part.
        sample: featurise only this many molecules drawn at random (``seed``) from those
            read, kept in QM9's order. Drawn before featurisation, so a small sample of the
            full set loads in seconds.
        seed: seed of ``sample``'s draw.
        path: an npz file in the subset's layout (such as :func:`write_qm9_npz` writes),
            read instead of ``source``.
        workers: processes that featurise in parallel; ``None`` picks one per CPU core for
            large reads and one for small ones.

    Raises:
        FileNotFoundError: the subset is not in the data directory.
        ImportError: qm9pack is asked for and not installed.
        ValueError: an unknown target name, or an invalid molecule without ``skip_invalid``.
    """
    if isinstance(targets, str):
        raise TypeError(f"targets must be a sequence of target names, got the string {targets!r}")
    unknown = [t for t in targets if t not in QM9_TARGETS]
    if unknown or not targets:
        raise ValueError(f"unknown QM9 target(s) {unknown}; choose from {', '.join(QM9_TARGETS)}")
    if path is not None:
        where = Path(path)
        if not where.is_file():
            raise FileNotFoundError(f"no QM9 npz file at {where}")
        records = _read_qm9_subset(where, targets, limit)
    elif source is QM9Source.SUBSET:
        where = dataset_path(
            "qm9",
            "qm9_subset5000.npz",
            f"{QM9_URL} (the subset file is made from the qm9pack package; see the MANIFEST of the data directory)",
            data_dir,
        )
        records = _read_qm9_subset(where, targets, limit)
    else:
        where = _qm9pack_folder()
        records = _read_qm9pack(where, targets, limit)

    if sample is not None:
        records = list(records)
        if not 0 < sample <= len(records):
            raise ValueError(f"sample must be between 1 and the {len(records)} molecules read, got {sample}")
        chosen = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed))[:sample]
        records = [records[i] for i in sorted(chosen.tolist())]

    smiles_list, graphs, values, rows, skipped = [], [], [], [], []
    scale = torch.tensor([HARTREE_TO_EV if t in _HARTREE_TARGETS else 1.0 for t in targets], dtype=torch.float64)
    for record, (graph, error) in zip(*_featurize_records(records, config, workers)):
        if error is not None:
            message = f"QM9 molecule {record.index} ({record.smiles!r}): {error}"
            if not skip_invalid:
                raise MoleculeError(f"{where}: {message}")
            logger.warning("%s: skipped %s", where, message)
            skipped.append(SkippedRow(record.index, record.smiles, error))
            continue
        smiles_list.append(record.smiles)
        graphs.append(graph)
        values.append(record.raw_targets)
        rows.append(record.index)
    if not graphs:
        raise ValueError(f"{where}: no QM9 molecules read")
    raw = torch.tensor(values, dtype=torch.float64)
    check_finite(raw, f"{where}: QM9 targets")
    return MoleculeDataset(
        smiles=smiles_list,
        graphs=graphs,
        targets=(raw * scale).to(torch.float32),
        target_names=list(targets),
        rows=rows,
        skipped=skipped,
    )


# Reads smaller than this are featurised in the calling process: starting workers costs
# more than it saves.
_PARALLEL_MINIMUM = 20000


def _featurize_record(record: _QM9Record, config: FeaturizerConfig) -> tuple[Data | None, str | None]:
    """``(graph, None)``, or ``(None, reason)`` for a molecule that cannot be featurised."""
    numbers, positions = _geometry(record)
    try:
        mol = mol_with_geometry(mol_from_smiles(record.smiles), numbers, positions)
        return mol_to_graph(mol, config), None
    except MoleculeError as error:
        return None, str(error)


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SYMBOL = re.compile(r"[A-Z][a-z]?")
_QM9_ELEMENTS = {symbol: number for number, symbol in enumerate(["", "H", "He", "Li", "Be", "B", "C", "N", "O", "F"])}


def _geometry(record: _QM9Record) -> tuple[list[int], Tensor]:
    """Atomic numbers and ``[atoms, 3]`` positions of a record, parsing qm9pack's text if need be.

    qm9pack writes ``Elements`` and ``XYZ_Ang`` as Python-style lists; they are read with
    regular expressions rather than ``eval``.
    """
    if not isinstance(record.atoms, str):
        return record.atoms, record.coordinates
    symbols = _SYMBOL.findall(record.atoms)
    values = [float(v) for v in _NUMBER.findall(record.coordinates.replace("*^", "e"))]
    if not symbols or len(values) != 3 * len(symbols) or any(s not in _QM9_ELEMENTS for s in symbols):
        raise ValueError(
            f"{record.origin}: cannot read {len(symbols)} atoms from Elements {record.atoms[:80]!r} "
            f"and XYZ_Ang {record.coordinates[:80]!r}"
        )
    return [_QM9_ELEMENTS[s] for s in symbols], torch.tensor(values, dtype=torch.float64).reshape(-1, 3)


def _featurize_chunk(chunk: list[_QM9Record], config: FeaturizerConfig) -> list[tuple[dict | None, str | None]]:
    """Featurises in a worker process; graphs travel back as numpy arrays.

    Sent as tensors, each would go through torch's shared-memory pickling, one file
    descriptor per tensor, and a large chunk exhausts the process's descriptors.
    """
    out = []
    for record in chunk:
        graph, error = _featurize_record(record, config)
        if graph is not None:
            graph = {k: v.numpy() if isinstance(v, Tensor) else v for k, v in graph.items()}
        out.append((graph, error))
    return out


def _graph_from_arrays(fields: dict) -> Data:
    return Data(**{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in fields.items()})


def _featurize_records(
    records: Iterable[_QM9Record], config: FeaturizerConfig, workers: int | None
) -> tuple[list[_QM9Record], list[tuple[Data | None, str | None]]]:
    """The records and, in the same order, their featurisation results.

    rdkit holds the GIL, so parallel featurisation needs processes; the chunks are large so
    that pickling the graphs back costs little beside featurising them.
    """
    records = list(records)
    if workers is None:
        workers = (os.cpu_count() or 1) if len(records) >= _PARALLEL_MINIMUM else 1
    if workers <= 1 or len(records) < 2:
        return records, [_featurize_record(record, config) for record in records]
    size = max(256, math.ceil(len(records) / (4 * workers)))
    chunks = [records[i : i + size] for i in range(0, len(records), size)]
    try:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = [
                (None if graph is None else _graph_from_arrays(graph), error)
                for part in pool.map(_featurize_chunk, chunks, [config] * len(chunks))
                for graph, error in part
            ]
    except concurrent.futures.process.BrokenProcessPool as error:
        # A worker killed from outside (out of memory, a sandbox's limits): the work itself
        # is sound, so finish it here rather than lose the run.
        logger.warning("parallel featurisation failed (%s); featurising in this process instead", error)
        results = [_featurize_record(record, config) for record in records]
    return records, results


def _read_qm9_subset(path: Path, targets: Sequence[str], limit: int | None) -> Iterator[_QM9Record]:
    """Molecules of the subset npz (schema in the data directory's MANIFEST)."""
    with np.load(path) as archive:
        arrays = {
            name: archive[name] for name in ("index", "ptr", "z", "targets", "target_names", "target_units", "smiles")
        }
        # write_qm9_npz(compact=True) stores int16 thousandths of an Angstrom.
        arrays["pos"] = archive["pos"] if "pos" in archive else archive["pos_milliangstrom"] / 1000.0
    names = [str(n) for n in arrays["target_names"]]
    units = [str(u) for u in arrays["target_units"]]
    columns = [names.index(t) for t in targets]
    for t, column in zip(targets, columns):
        # Guards against a file that is already in eV, which would be converted twice.
        expected = "Hartree" if t in _HARTREE_TARGETS else None
        if expected is not None and units[column] != expected:
            raise ValueError(f"{path}: target {t!r} is in {units[column]!r}, expected {expected!r}")
    count = len(arrays["index"]) if limit is None else min(limit, len(arrays["index"]))
    ptr, z, pos = arrays["ptr"], arrays["z"], torch.from_numpy(arrays["pos"].astype(np.float64))
    for i in range(count):
        start, end = int(ptr[i]), int(ptr[i + 1])
        yield _QM9Record(
            index=int(arrays["index"][i]),
            smiles=str(arrays["smiles"][i]),
            atoms=z[start:end].tolist(),
            coordinates=pos[start:end],
            origin=f"{path}, molecule {i}",
            raw_targets=arrays["targets"][i, columns].tolist(),
        )


def _qm9pack_folder() -> Path:
    """qm9pack's data folder, found without importing qm9pack (its import needs pandas)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the full QM9 set is read from the qm9pack package, which is not installed: "
            f"pip install {QM9PACK_REQUIREMENT} (about 226 MB), or use QM9Source.SUBSET"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    missing = [name for name in _QM9PACK_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"qm9pack is installed but {folder} lacks {', '.join(missing)}; reinstall {QM9PACK_REQUIREMENT}"
        )
    return folder


def _read_qm9pack(folder: Path, targets: Sequence[str], limit: int | None) -> Iterator[_QM9Record]:
    """Molecules of qm9pack's CSV files: ``Index``, ``SMILES``, ``Elements``, ``XYZ_Ang`` and the properties.

    The geometry is kept as text here and parsed by :func:`_geometry`.
    """
    count = 0
    for name in _QM9PACK_FILES:
        path = folder / name
        # A streaming csv.reader, not read_csv: the three files are 226 MB, and nothing here
        # needs them whole. Each row must fill the header, or the file is refused at that line.
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, strict=True)
            header = [column.strip() for column in next(reader, None) or []]
            needed = ["Index", "SMILES", "Elements", "XYZ_Ang", *(_QM9PACK_COLUMNS[t] for t in targets)]
            missing = [c for c in needed if c not in header]
            if missing:
                raise ValueError(f"{path}: no column(s) {missing}; the columns are {header}")
            at = {column: header.index(column) for column in needed}
            while True:
                if limit is not None and count >= limit:
                    return
                try:
                    fields = next(reader, None)
                except csv.Error as error:
                    raise ValueError(f"{path}, line {reader.line_num}: not valid CSV: {error}") from None
                if fields is None:
                    break
                line = reader.line_num
                if len(fields) != len(header):
                    raise ValueError(f"{path}, line {line}: {len(fields)} fields, but the header has {len(header)}")
                try:
                    raw = [float(fields[at[_QM9PACK_COLUMNS[t]]].replace("*^", "e")) for t in targets]
                    index = int(fields[at["Index"]])
                except ValueError as error:
                    raise ValueError(f"{path}, line {line}: non-numeric index or target: {error}") from None
                count += 1
                yield _QM9Record(
                    index=index,
                    smiles=fields[at["SMILES"]].strip(),
                    atoms=fields[at["Elements"]],
                    coordinates=fields[at["XYZ_Ang"]],
                    origin=f"{path}, line {line}",
                    raw_targets=raw,
                )


def write_qm9_npz(
    path: str | Path,
    source: QM9Source = QM9Source.QM9PACK,
    data_dir: str | Path | None = None,
    *,
    compact: bool = False,
) -> int:
    """Writes QM9 (geometries, SMILES and the 12 targets in QM9's units) as one compressed npz.

    The layout is the data directory subset's (see its MANIFEST), so ``load_qm9(path=...)``
    reads it back. The full set is about 30 MB this way against qm9pack's 226 MB of CSV, and
    loads without parsing text: handy to carry QM9 to another machine. Returns the number
    of molecules written.

    With ``compact``, each molecule is centred on its mean position and its coordinates are
    stored as int16 thousandths of an Angstrom (``pos_milliangstrom``; the error in a
    coordinate is at most 0.0005 A), which halves the file again; distances are unchanged
    by the centring.
    """
    if source is QM9Source.SUBSET:
        records = _read_qm9_subset(
            dataset_path("qm9", "qm9_subset5000.npz", QM9_URL, data_dir), list(QM9_TARGETS), None
        )
    else:
        records = _read_qm9pack(_qm9pack_folder(), list(QM9_TARGETS), None)
    index, smiles, numbers, positions, values = [], [], [], [], []
    for record in records:
        z, pos = _geometry(record)
        index.append(record.index)
        smiles.append(record.smiles)
        numbers.append(np.asarray(z, dtype=np.int8))
        pos = np.asarray(pos, dtype=np.float64)
        if compact:
            pos = np.rint((pos - pos.mean(0)) * 1000)
            if np.abs(pos).max() > np.iinfo(np.int16).max:
                raise ValueError(f"{record.origin}: a coordinate is beyond 32 A of the molecule's centre")
        positions.append(pos.astype(np.int16 if compact else np.float32))
        values.append(record.raw_targets)
    counts = np.array([len(z) for z in numbers], dtype=np.int16)
    np.savez_compressed(
        path,
        index=np.array(index, dtype=np.int32),
        n_atoms=counts,
        ptr=np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]),
        z=np.concatenate(numbers),
        **{"pos_milliangstrom" if compact else "pos": np.concatenate(positions)},
        targets=np.array(values, dtype=np.float64),
        target_names=np.array(list(QM9_TARGETS)),
        target_units=np.array(["Hartree" if t in _HARTREE_TARGETS else QM9_TARGETS[t] for t in QM9_TARGETS]),
        smiles=np.array(smiles),
    )
    return len(index)
