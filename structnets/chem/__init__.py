"""Chemistry: molecules as graphs, molecule property datasets and their splits.

* :mod:`~structnets.chem.featurize`: atom and bond features after Gilmer et al. (2017),
  from SMILES, SD files and XYZ geometries, as torch_geometric ``Data``.
* :mod:`~structnets.chem.datasets`: a CSV reader, ESOL, FreeSolv, Lipophilicity and QM9.
* :mod:`~structnets.chem.splits`: random and scaffold splits, and split files.

It needs rdkit, which the ``[chem]`` extra installs (``pip install 'structnets[chem]'``).
"""

try:
    import rdkit  # noqa: F401
except ImportError as error:  # the core install has no rdkit: say which extra brings it
    raise ImportError(
        "structnets.chem needs rdkit, which the [chem] extra installs: pip install 'structnets[chem]'",
        name="rdkit",
    ) from error

from .datasets import (
    CHEMICAL_ACCURACY,
    ESOL_URL,
    FREESOLV_URL,
    HARTREE_TO_EV,
    LIPOPHILICITY_URL,
    QM9_CONFIG,
    QM9_TARGETS,
    QM9_URL,
    QM9PACK_REQUIREMENT,
    MoleculeDataset,
    QM9Source,
    SkippedRow,
    load_esol,
    load_freesolv,
    load_lipophilicity,
    load_qm9,
    read_molecule_csv,
    write_qm9_npz,
)
from .featurize import (
    DEFAULT_ELEMENTS,
    FeaturizerConfig,
    MoleculeError,
    XYZMolecule,
    atom_feature_names,
    atom_feature_size,
    bond_feature_names,
    bond_feature_size,
    graph_from_smiles,
    graph_from_xyz,
    graphs_from_sdf,
    graphs_from_xyz_file,
    mol_from_smiles,
    mol_from_xyz,
    mol_to_graph,
    mol_with_geometry,
    read_xyz_file,
)
from .splits import (
    SPLIT_NAMES,
    murcko_scaffold,
    random_split,
    read_split_json,
    scaffold_split,
    sized_split,
    write_split_json,
)

__all__ = [
    # featurize
    "DEFAULT_ELEMENTS",
    "FeaturizerConfig",
    "MoleculeError",
    "XYZMolecule",
    "atom_feature_names",
    "atom_feature_size",
    "bond_feature_names",
    "bond_feature_size",
    "graph_from_smiles",
    "graph_from_xyz",
    "graphs_from_sdf",
    "graphs_from_xyz_file",
    "mol_from_smiles",
    "mol_from_xyz",
    "mol_to_graph",
    "mol_with_geometry",
    "read_xyz_file",
    # datasets
    "CHEMICAL_ACCURACY",
    "ESOL_URL",
    "FREESOLV_URL",
    "HARTREE_TO_EV",
    "LIPOPHILICITY_URL",
    "QM9_CONFIG",
    "QM9_TARGETS",
    "QM9_URL",
    "QM9PACK_REQUIREMENT",
    "MoleculeDataset",
    "QM9Source",
    "SkippedRow",
    "load_esol",
    "load_freesolv",
    "load_lipophilicity",
    "load_qm9",
    "write_qm9_npz",
    "read_molecule_csv",
    # splits
    "SPLIT_NAMES",
    "murcko_scaffold",
    "random_split",
    "sized_split",
    "read_split_json",
    "scaffold_split",
    "write_split_json",
]
