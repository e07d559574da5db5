"""Molecules as graphs, with the atom and bond features of Gilmer et al. (2017).

Gilmer, Schoenholz, Riley, Vinyals, Dahl, "Neural Message Passing for Quantum Chemistry",
ICML 2017, describe each atom by its element, aromaticity, hybridisation, hydrogen count
and atomic number, and each bond by its type; on QM9 their best inputs keep the hydrogens
as atoms and add the interatomic distance, treating the molecule as a complete graph.
:class:`FeaturizerConfig` selects between those inputs.

Every graph is a :class:`torch_geometric.data.Data` in torch_geometric's convention:
``edge_index`` row 0 is the source atom and row 1 the target atom. A chemical bond ``k``
appears twice, as columns ``2k`` (begin -> end atom) and ``2k + 1`` (end -> begin). In a
complete graph the columns are every ordered pair ``(i, j)``, ``i != j``, in row-major order.

Shapes:
    x: ``[num_atoms, atom_feature_size(config)]`` float32.
    edge_index: ``[2, num_edges]`` int64.
    edge_attr: ``[num_edges, bond_feature_size(config)]`` float32.
    pos: ``[num_atoms, 3]`` float32 in Angstrom, only when the molecule has 3D coordinates.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from rdkit import Chem, rdBase
from rdkit.Chem import rdDetermineBonds
from rdkit.Geometry import Point3D
from torch import Tensor
from torch_geometric.data import Data

__all__ = [
    "DEFAULT_ELEMENTS",
    "MoleculeError",
    "FeaturizerConfig",
    "XYZMolecule",
    "atom_feature_names",
    "bond_feature_names",
    "atom_feature_size",
    "bond_feature_size",
    "mol_from_smiles",
    "mol_to_graph",
    "mol_with_geometry",
    "graph_from_smiles",
    "graphs_from_sdf",
    "read_xyz_file",
    "mol_from_xyz",
    "graph_from_xyz",
    "graphs_from_xyz_file",
]

#: Elements with their own one-hot slot by default; every other element shares one slot.
DEFAULT_ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F", "S", "Cl", "Br", "I", "P")

_HYBRIDISATIONS = (Chem.HybridizationType.SP, Chem.HybridizationType.SP2, Chem.HybridizationType.SP3)
_MAX_HYDROGENS = 4
_FORMAL_CHARGES = (-1, 0, 1)
_BOND_TYPES = (Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE, Chem.BondType.AROMATIC)
# Keeps the atomic number on the scale of the one-hot features (iodine is 0.53).
_ATOMIC_NUMBER_SCALE = 100.0
# Atoms closer than this multiple of the sum of their covalent radii count as bonded; 1.3 is
# rdkit's DetermineBonds default (covFactor), so both ways of reading a geometry agree.
_BONDING_FACTOR = 1.3


@lru_cache(maxsize=1)
def _symbol_to_atomic_number() -> dict[str, int]:
    # Looked up in our own table because rdkit's GetAtomicNumber prints a C++ stack trace
    # to stderr for an unknown symbol even when the exception is caught.
    table = Chem.GetPeriodicTable()
    return {table.GetElementSymbol(z): z for z in range(1, 119)}


def _remove_hydrogens_parameters() -> Chem.RemoveHsParameters:
    # rdkit keeps by default a hydrogen that defines double-bond or wedge stereochemistry
    # as an atom; "no explicit hydrogens" must mean the same graph for every molecule.
    parameters = Chem.RemoveHsParameters()
    parameters.removeDefiningBondStereo = True
    parameters.removeWithWedgedBond = True
    return parameters


_REMOVE_HYDROGENS = _remove_hydrogens_parameters()


class MoleculeError(ValueError):
    """A molecule that cannot be read or featurised; the message names the input and rdkit's reason."""


@dataclass(frozen=True)
class FeaturizerConfig:
    """What :func:`mol_to_graph` puts into a graph.

    Attributes:
        explicit_hydrogens: keep hydrogens as atoms (Gilmer et al.'s QM9 inputs) instead of
            only counting them in the heavy atoms' hydrogen feature.
        distances: append the interatomic distance (Angstrom) to every edge; needs 3D coordinates.
        complete_graph: connect every ordered pair of atoms; pairs without a chemical bond
            get the "no bond" bond-type slot. Usually combined with ``distances``.
        elements: elements with their own one-hot slot; all others share an "other" slot.
    """

    explicit_hydrogens: bool = False
    distances: bool = False
    complete_graph: bool = False
    elements: tuple[str, ...] = DEFAULT_ELEMENTS

    def __post_init__(self) -> None:
        # A list would make the config unhashable; the element table is cached per config.
        object.__setattr__(self, "elements", tuple(self.elements))
        unknown = [e for e in self.elements if e not in _symbol_to_atomic_number()]
        if unknown:
            raise ValueError(f"FeaturizerConfig.elements: unknown element symbol(s) {unknown}")
        if len(set(self.elements)) != len(self.elements):
            raise ValueError(f"FeaturizerConfig.elements lists an element twice: {self.elements}")


@dataclass(frozen=True, eq=False)
class XYZMolecule:
    """One molecule of an XYZ or extended-XYZ file.

    Attributes:
        symbols: element symbol of each atom.
        positions: ``[num_atoms, 3]`` float64 coordinates in Angstrom.
        comment: the raw comment (second) line.
        properties: ``key=value`` pairs of an extended-XYZ comment line, quotes removed
            (empty for a free-text comment).
        line: 1-based line number of the atom-count line in its file.
    """

    symbols: tuple[str, ...]
    positions: Tensor
    comment: str = ""
    properties: dict[str, str] = field(default_factory=dict)
    line: int = 1


# ---------------------------------------------------------------------------- feature layout
def atom_feature_names(config: FeaturizerConfig = FeaturizerConfig()) -> list[str]:
    """Names of the columns of ``x``, in order."""
    return (
        [f"element={e}" for e in config.elements]
        + ["element=other", "aromatic"]
        + ["hybridisation=SP", "hybridisation=SP2", "hybridisation=SP3", "hybridisation=other"]
        + [f"hydrogens={k}" for k in range(_MAX_HYDROGENS)]
        + [f"hydrogens={_MAX_HYDROGENS}+"]
        + ["charge=-1", "charge=0", "charge=+1", "charge=other", "in_ring", "atomic_number/100"]
    )


def bond_feature_names(config: FeaturizerConfig = FeaturizerConfig()) -> list[str]:
    """Names of the columns of ``edge_attr``, in order."""
    names = ["bond=single", "bond=double", "bond=triple", "bond=aromatic"]
    if config.complete_graph:
        names.append("bond=none")
    names += ["conjugated", "in_ring"]
    if config.distances:
        names.append("distance")
    return names


def atom_feature_size(config: FeaturizerConfig = FeaturizerConfig()) -> int:
    """Width of ``x``: 27 with the default elements."""
    return len(atom_feature_names(config))


def bond_feature_size(config: FeaturizerConfig = FeaturizerConfig()) -> int:
    """Width of ``edge_attr``: 6, plus 1 for a complete graph's "no bond" slot, plus 1 for distances."""
    return len(bond_feature_names(config))


@lru_cache(maxsize=16)
def _element_slots(elements: tuple[str, ...]) -> dict[int, int]:
    lookup = _symbol_to_atomic_number()
    return {lookup[e]: slot for slot, e in enumerate(elements)}


def _one_hot(index: int, size: int) -> list[float]:
    out = [0.0] * size
    out[index] = 1.0
    return out


def _atom_features(atom: Chem.Atom, config: FeaturizerConfig) -> list[float]:
    slots = _element_slots(config.elements)
    number = atom.GetAtomicNum()
    hybridisation = atom.GetHybridization()
    charge = atom.GetFormalCharge()
    # includeNeighbors counts explicit hydrogen atoms too, so a carbon's count is the same
    # whether or not the hydrogens are kept as atoms.
    hydrogens = min(atom.GetTotalNumHs(includeNeighbors=True), _MAX_HYDROGENS)
    return (
        _one_hot(slots.get(number, len(slots)), len(slots) + 1)
        + [float(atom.GetIsAromatic())]
        + _one_hot(_HYBRIDISATIONS.index(hybridisation) if hybridisation in _HYBRIDISATIONS else 3, 4)
        + _one_hot(hydrogens, _MAX_HYDROGENS + 1)
        + _one_hot(_FORMAL_CHARGES.index(charge) if charge in _FORMAL_CHARGES else 3, 4)
        + [float(atom.IsInRing()), number / _ATOMIC_NUMBER_SCALE]
    )


def _bond_features(bond: Chem.Bond, config: FeaturizerConfig) -> list[float]:
    kind = bond.GetBondType()
    if kind not in _BOND_TYPES:
        atoms = f"{bond.GetBeginAtom().GetSymbol()}{bond.GetBeginAtomIdx()}-{bond.GetEndAtom().GetSymbol()}{bond.GetEndAtomIdx()}"
        raise MoleculeError(
            f"bond {atoms} has type {kind}; only single, double, triple and aromatic bonds are featurised"
        )
    return _one_hot(_BOND_TYPES.index(kind), len(_BOND_TYPES) + int(config.complete_graph)) + [
        float(bond.GetIsConjugated()),
        float(bond.IsInRing()),
    ]


# ---------------------------------------------------------------------------- molecule -> graph
def _conformer_3d(mol: Chem.Mol) -> Chem.Conformer | None:
    if mol.GetNumConformers() == 0:
        return None
    conformer = mol.GetConformer()
    return conformer if conformer.Is3D() else None


def mol_to_graph(mol: Chem.Mol, config: FeaturizerConfig = FeaturizerConfig()) -> Data:
    """Featurises a sanitised rdkit molecule; the molecule itself is left unchanged.

    Hydrogens are added (with estimated coordinates when the molecule has a conformer) or
    removed according to ``config.explicit_hydrogens``. ``pos`` is set when the molecule
    has a 3D conformer.

    Shapes:
        x: ``[num_atoms, atom_feature_size(config)]``; edge_index: ``[2, num_edges]``;
        edge_attr: ``[num_edges, bond_feature_size(config)]``; pos: ``[num_atoms, 3]``.

    Raises:
        MoleculeError: the molecule has no atoms, has an unsupported bond type, or
            ``config.distances`` is set and it has no 3D coordinates.
    """
    if mol.GetNumAtoms() == 0:
        raise MoleculeError("the molecule has no atoms")
    with _rdkit_errors() as reason:
        try:
            if config.explicit_hydrogens:
                mol = Chem.AddHs(mol, addCoords=mol.GetNumConformers() > 0)
            else:
                mol = Chem.RemoveHs(mol, _REMOVE_HYDROGENS)
        except (RuntimeError, ValueError) as error:
            raise MoleculeError(
                f"cannot {'add' if config.explicit_hydrogens else 'remove'} hydrogens: {error}{reason()}"
            ) from error
    num_atoms = mol.GetNumAtoms()
    conformer = _conformer_3d(mol)
    if config.distances and conformer is None:
        raise MoleculeError("FeaturizerConfig(distances=True) needs 3D coordinates, and this molecule has none")

    x = torch.tensor([_atom_features(atom, config) for atom in mol.GetAtoms()], dtype=torch.float32)
    pos = None if conformer is None else torch.from_numpy(conformer.GetPositions()).to(torch.float32)

    width = bond_feature_size(config) - int(config.distances)
    if config.complete_graph:
        pair_features = torch.zeros(num_atoms, num_atoms, width)
        pair_features[:, :, len(_BOND_TYPES)] = 1.0  # "no bond" until a bond says otherwise
        for bond in mol.GetBonds():
            u, v = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            pair_features[u, v] = pair_features[v, u] = torch.tensor(_bond_features(bond, config))
        index = torch.arange(num_atoms)
        source, target = index.repeat_interleave(num_atoms), index.repeat(num_atoms)
        keep = source != target
        source, target = source[keep], target[keep]
        edge_attr = pair_features[source, target]
    else:
        sources, targets, rows = [], [], []
        for bond in mol.GetBonds():
            u, v = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            features = _bond_features(bond, config)
            sources += [u, v]
            targets += [v, u]
            rows += [features, features]
        source = torch.tensor(sources, dtype=torch.long)
        target = torch.tensor(targets, dtype=torch.long)
        edge_attr = torch.tensor(rows, dtype=torch.float32).reshape(-1, width)
    edge_index = torch.stack([source, target]).reshape(2, -1)
    if config.distances:
        distance = torch.linalg.vector_norm(pos[target] - pos[source], dim=1, keepdim=True)
        edge_attr = torch.cat([edge_attr, distance], dim=1)

    graph = Data(x=x, edge_index=edge_index, edge_attr=edge_attr)
    if pos is not None:
        graph.pos = pos
    return graph


# ---------------------------------------------------------------------------- rdkit messages
@contextlib.contextmanager
def _rdkit_errors() -> Iterator[Callable[..., str]]:
    """Silences rdkit's logger for the block and yields a function giving rdkit's error text.

    rdkit says why a parse failed only on its log, never in a return value or exception,
    so the error log is captured (``CaptureErrorLog``, in recent rdkit releases) to put the
    reason into our exception instead of onto stderr. ``BlockLogs`` restores the caller's
    log settings when the block ends, which ``RDLogger.DisableLog`` would not.
    """
    capture_type = getattr(rdBase, "CaptureErrorLog", None)
    with contextlib.ExitStack() as stack:
        stack.enter_context(rdBase.BlockLogs())
        capture = stack.enter_context(capture_type()) if capture_type is not None else None
        yield lambda echo="": _reason(capture.messages if capture is not None else "", echo)


_TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\]\s?")


def _reason(log: str, echo: str = "") -> str:
    """rdkit's log text as one clause: timestamps, repeats and rdkit's echo of ``echo`` removed."""
    lines: list[str] = []
    for raw in log.splitlines():
        line = _TIMESTAMP.sub("", raw).strip()
        if line and not set(line) <= set("~^ ") and line not in echo and line not in lines:
            lines.append(line)
    return f" (rdkit: {'; '.join(lines[:3])})" if lines else ""


# ---------------------------------------------------------------------------- SMILES and SDF
def _check_smiles_characters(smiles: str) -> None:
    """Refuses characters that make rdkit stop reading early and keep what it read so far.

    rdkit takes the text after whitespace as the molecule's name (or a CXSMILES extension)
    and stops at some non-ASCII characters without an error, so ``C CCCCCCCCCC`` would
    become methane and ``CCé`` ethane. SMILES are printable ASCII without spaces; anything
    else is an error here, so that a string is either read whole or refused.
    """
    for position, character in enumerate(smiles):
        if not "!" <= character <= "~":
            kind = "whitespace" if character.isspace() else "character"
            raise MoleculeError(
                f"SMILES {smiles!r} has {kind} {character!r} at position {position}: SMILES are printable "
                f"ASCII without spaces (rdkit would read only {smiles[:position]!r}, one molecule per field)"
            )


def mol_from_smiles(smiles: str) -> Chem.Mol:
    """Parses and sanitises a SMILES string, which must be read whole.

    Raises:
        MoleculeError: a character rdkit would stop at (whitespace, non-ASCII), or the
            SMILES cannot be parsed or sanitised, or has no atoms; the message contains
            the SMILES and rdkit's reason.
    """
    _check_smiles_characters(smiles)
    with _rdkit_errors() as reason:
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise MoleculeError(f"cannot parse SMILES {smiles!r}{reason(smiles)}")
    if mol.GetNumAtoms() == 0:
        raise MoleculeError(f"SMILES {smiles!r} has no atoms")
    return mol


def graph_from_smiles(smiles: str, config: FeaturizerConfig = FeaturizerConfig()) -> Data:
    """Featurises a SMILES string (no 3D coordinates, so ``config.distances`` must be off).

    Raises:
        MoleculeError: naming the SMILES.
    """
    mol = mol_from_smiles(smiles)
    try:
        return mol_to_graph(mol, config)
    except MoleculeError as error:
        raise MoleculeError(f"SMILES {smiles!r}: {error}") from error


def graphs_from_sdf(path: str | Path, config: FeaturizerConfig = FeaturizerConfig()) -> list[Data]:
    """Featurises every record of an SD file, keeping its coordinates (``pos`` when 3D).

    Raises:
        FileNotFoundError: no such file.
        MoleculeError: a record cannot be read or featurised; the message names the file
            and the record number (counting from 1).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no SD file at {path}")
    supplier = Chem.SDMolSupplier(str(path), sanitize=True, removeHs=not config.explicit_hydrogens)
    graphs = []
    with _rdkit_errors() as reason:
        for number, mol in enumerate(supplier, start=1):
            if mol is None:
                raise MoleculeError(f"{path}, record {number}: cannot read the molecule{reason()}")
            try:
                graphs.append(mol_to_graph(mol, config))
            except MoleculeError as error:
                raise MoleculeError(f"{path}, record {number}: {error}") from error
    return graphs


# ---------------------------------------------------------------------------- geometry
def _bonding_pairs(atomic_numbers: Sequence[int], positions: Tensor) -> Tensor:
    """``[n, n]`` bool: atoms within bonding distance of each other."""
    table = Chem.GetPeriodicTable()
    radii = torch.tensor([table.GetRcovalent(int(z)) for z in atomic_numbers], dtype=torch.float64)
    distance = torch.cdist(positions, positions)
    close = distance <= _BONDING_FACTOR * (radii[:, None] + radii[None, :])
    close.fill_diagonal_(False)
    return close


def _skeleton(atomic_numbers: Sequence[int], bonds: Sequence[tuple[int, int]]) -> Chem.Mol:
    """Elements and single bonds only, so that a substructure match ignores orders and charges."""
    skeleton = Chem.RWMol()
    for number in atomic_numbers:
        atom = Chem.Atom(int(number))
        atom.SetNoImplicit(True)
        skeleton.AddAtom(atom)
    for u, v in bonds:
        skeleton.AddBond(int(u), int(v), Chem.BondType.SINGLE)
    skeleton = skeleton.GetMol()
    skeleton.UpdatePropertyCache(strict=False)
    return skeleton


def mol_with_geometry(mol: Chem.Mol, atomic_numbers: Sequence[int], positions: Tensor) -> Chem.Mol:
    """The molecule with explicit hydrogens and a 3D conformer taken from a geometry.

    The bonds, bond orders and charges come from ``mol`` (for example parsed from a curated
    SMILES); only the coordinates come from the geometry, whose atoms may be listed in any
    order. The atoms are matched by element so that every bond of ``mol`` joins two atoms
    within bonding distance (1.3 times the sum of covalent radii) in the geometry.

    Shapes:
        atomic_numbers: ``[num_atoms]``; positions: ``[num_atoms, 3]`` in Angstrom.

    Raises:
        MoleculeError: the atom counts differ, or no such matching exists (the geometry is
            a different molecule, or it relaxed into a different bonding pattern).
    """
    mol = Chem.AddHs(mol)
    positions = torch.as_tensor(positions, dtype=torch.float64)
    numbers = [int(z) for z in atomic_numbers]
    num_atoms = mol.GetNumAtoms()
    if len(numbers) != num_atoms or tuple(positions.shape) != (num_atoms, 3):
        raise MoleculeError(
            f"the molecule has {num_atoms} atoms with hydrogens but the geometry has {len(numbers)} atoms "
            f"and positions of shape {tuple(positions.shape)}"
        )
    close = _bonding_pairs(numbers, positions)
    bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
    order: Sequence[int] = range(num_atoms)
    same_order = [a.GetAtomicNum() for a in mol.GetAtoms()] == numbers and all(bool(close[u, v]) for u, v in bonds)
    if not same_order:
        # The geometry lists the atoms in another order (QM9 does this for a few molecules,
        # hydrogens of charged atoms for example): find an order that maps bonds onto close pairs.
        target = _skeleton(numbers, torch.nonzero(torch.triu(close)).tolist())
        query = _skeleton([a.GetAtomicNum() for a in mol.GetAtoms()], bonds)
        order = target.GetSubstructMatch(query)
        if not order:
            raise MoleculeError(
                "the geometry does not match the molecule: no ordering of its atoms puts every bond "
                "between atoms within bonding distance"
            )
    conformer = Chem.Conformer(num_atoms)
    for k, source in enumerate(order):
        conformer.SetAtomPosition(k, Point3D(*positions[source].tolist()))
    conformer.Set3D(True)
    mol.RemoveAllConformers()
    mol.AddConformer(conformer, assignId=True)
    return mol


# ---------------------------------------------------------------------------- XYZ
_EXTXYZ_PAIR = re.compile(r'(\w+)=("[^"]*"|\S+)')


def _parse_xyz(text: str, source: str) -> list[XYZMolecule]:
    lines = text.splitlines()
    symbols_known = _symbol_to_atomic_number()
    table = Chem.GetPeriodicTable()
    molecules = []
    k = 0
    while k < len(lines):
        if not lines[k].strip():
            k += 1
            continue
        count_line = k + 1
        try:
            num_atoms = int(lines[k].split()[0])
        except ValueError:
            raise MoleculeError(f"{source}, line {count_line}: expected an atom count, got {lines[k]!r}") from None
        if num_atoms < 1 or k + 2 + num_atoms > len(lines):
            raise MoleculeError(
                f"{source}, line {count_line}: atom count {num_atoms}, but {max(len(lines) - k - 2, 0)} lines follow the comment"
            )
        comment = lines[k + 1]
        properties = {key: value.strip('"') for key, value in _EXTXYZ_PAIR.findall(comment)}
        layout = properties.get("Properties")
        if layout is not None and not layout.startswith("species:S:1:pos:R:3"):
            raise MoleculeError(
                f"{source}, line {k + 2}: extended-XYZ columns must start with species:S:1:pos:R:3, got {layout!r}"
            )
        symbols, coordinates = [], []
        for offset in range(num_atoms):
            number = k + 3 + offset
            fields = lines[k + 2 + offset].split()
            if len(fields) < 4:
                raise MoleculeError(f"{source}, line {number}: expected 'element x y z', got {lines[number - 1]!r}")
            symbol = fields[0]
            if symbol.isdigit() and 1 <= int(symbol) <= 118:
                symbol = table.GetElementSymbol(int(symbol))
            if symbol not in symbols_known:
                raise MoleculeError(f"{source}, line {number}: unknown element {fields[0]!r}")
            try:
                # QM9's original files write exponents the Mathematica way, as 1.2*^-6.
                coordinates.append([float(v.replace("*^", "e")) for v in fields[1:4]])
            except ValueError:
                raise MoleculeError(f"{source}, line {number}: coordinates {fields[1:4]} are not numbers") from None
            symbols.append(symbol)
        molecules.append(
            XYZMolecule(tuple(symbols), torch.tensor(coordinates, dtype=torch.float64), comment, properties, count_line)
        )
        k += 2 + num_atoms
    if not molecules:
        raise MoleculeError(f"{source}: no molecules")
    return molecules


def read_xyz_file(path: str | Path) -> list[XYZMolecule]:
    """Reads every molecule of an XYZ or extended-XYZ (multi-molecule) file.

    Raises:
        FileNotFoundError: no such file.
        MoleculeError: malformed content, naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no XYZ file at {path}")
    return _parse_xyz(path.read_text(), str(path))


def mol_from_xyz(molecule: XYZMolecule, charge: int = 0) -> Chem.Mol:
    """Bonds, bond orders and formal charges perceived from the geometry by rdkit's DetermineBonds.

    Bond perception from coordinates (the xyz2mol algorithm of Kim and Kim 2015) can fail
    on strained cages, where non-bonded atoms come within bonding distance; about 3% of QM9
    molecules fail this way, which is why :func:`structnets.chem.load_qm9` takes the bonds
    from the SMILES instead.

    Raises:
        MoleculeError: with rdkit's reason.
    """
    lookup = _symbol_to_atomic_number()
    mol = Chem.RWMol()
    for symbol in molecule.symbols:
        mol.AddAtom(Chem.Atom(lookup[symbol]))
    conformer = Chem.Conformer(len(molecule.symbols))
    for k, position in enumerate(molecule.positions.tolist()):
        conformer.SetAtomPosition(k, Point3D(*position))
    conformer.Set3D(True)
    mol.AddConformer(conformer, assignId=True)
    with _rdkit_errors() as reason:
        try:
            rdDetermineBonds.DetermineBonds(mol, charge=charge)
        except (RuntimeError, ValueError) as error:
            raise MoleculeError(f"bond perception failed: {error}{reason()}") from error
    return mol.GetMol()


def _graph_from_xyz_molecule(molecule: XYZMolecule, config: FeaturizerConfig, charge: int, where: str) -> Data:
    try:
        return mol_to_graph(mol_from_xyz(molecule, charge), config)
    except MoleculeError as error:
        raise MoleculeError(f"{where}: {error}") from error


def graph_from_xyz(
    xyz_block_or_path: str | Path, config: FeaturizerConfig = FeaturizerConfig(), charge: int = 0
) -> Data:
    """Featurises one molecule given as XYZ text or the path of a one-molecule XYZ file.

    A ``str`` with a line break is XYZ text; any other ``str`` or a ``Path`` is a file.

    Raises:
        MoleculeError: malformed XYZ, more than one molecule, or failed bond perception.
    """
    if isinstance(xyz_block_or_path, str) and "\n" in xyz_block_or_path:
        source, molecules = "XYZ block", _parse_xyz(xyz_block_or_path, "XYZ block")
    else:
        source, molecules = str(xyz_block_or_path), read_xyz_file(xyz_block_or_path)
    if len(molecules) != 1:
        raise MoleculeError(f"{source} holds {len(molecules)} molecules; use graphs_from_xyz_file for several")
    return _graph_from_xyz_molecule(molecules[0], config, charge, source)


def graphs_from_xyz_file(
    path: str | Path, config: FeaturizerConfig = FeaturizerConfig(), charge: int = 0
) -> list[Data]:
    """Featurises every molecule of an XYZ or extended-XYZ file (bonds by DetermineBonds).

    Raises:
        MoleculeError: naming the file, the molecule's number (from 1) and its line.
    """
    return [
        _graph_from_xyz_molecule(molecule, config, charge, f"{path}, molecule {number} (line {molecule.line})")
        for number, molecule in enumerate(read_xyz_file(path), start=1)
    ]
