import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rdkit import Chem
from rdkit.Chem import AllChem
from torch.testing import assert_close

from structnets.chem import (
    FeaturizerConfig,
    MoleculeError,
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

ATOM = {name: k for k, name in enumerate(atom_feature_names())}
BOND = {name: k for k, name in enumerate(bond_feature_names())}
DISTANCES = FeaturizerConfig(explicit_hydrogens=True, distances=True)
COMPLETE = FeaturizerConfig(explicit_hydrogens=True, distances=True, complete_graph=True)


def hot(row: torch.Tensor, prefix: str) -> list[str]:
    """Names of the set one-hot slots of ``row`` whose name starts with ``prefix``."""
    return [name for name, k in ATOM.items() if name.startswith(prefix) and row[k] == 1]


def qm9_record(data_dir, index):
    with np.load(data_dir / "qm9" / "qm9_subset5000.npz") as archive:
        start, end = archive["ptr"][index], archive["ptr"][index + 1]
        return (
            str(archive["smiles"][index]),
            archive["z"][start:end].tolist(),
            torch.from_numpy(archive["pos"][start:end]),
        )


def test_feature_sizes_match_the_graphs():
    assert atom_feature_size() == 27
    assert [
        bond_feature_size(FeaturizerConfig(distances=d, complete_graph=c))
        for d, c in [(False, False), (True, False), (False, True), (True, True)]
    ] == [6, 7, 7, 8]
    assert atom_feature_size(FeaturizerConfig(elements=("C", "N", "O"))) == 20
    graph = graph_from_smiles("CC(=O)O")
    assert graph.x.shape[1] == atom_feature_size() and graph.edge_attr.shape[1] == bond_feature_size()


def test_unknown_or_repeated_elements_are_rejected():
    with pytest.raises(ValueError, match="Xx"):
        FeaturizerConfig(elements=("C", "Xx"))
    with pytest.raises(ValueError, match="twice"):
        FeaturizerConfig(elements=("C", "C"))


def test_ethanol_atom_features():
    graph = graph_from_smiles("CCO")
    assert graph.x.dtype == torch.float32 and graph.x.shape == (3, 27)
    carbon, methylene, oxygen = graph.x
    assert hot(carbon, "element") == ["element=C"] and hot(oxygen, "element") == ["element=O"]
    assert [hot(a, "hydrogens") for a in graph.x] == [["hydrogens=3"], ["hydrogens=2"], ["hydrogens=1"]]
    assert all(hot(a, "hybridisation") == ["hybridisation=SP3"] for a in graph.x)
    assert all(hot(a, "charge") == ["charge=0"] for a in graph.x)
    assert graph.x[:, ATOM["aromatic"]].sum() == 0 and graph.x[:, ATOM["in_ring"]].sum() == 0
    assert_close(graph.x[:, ATOM["atomic_number/100"]], torch.tensor([0.06, 0.06, 0.08]))
    # one slot set in each of the four one-hot groups, plus the scaled atomic number
    assert carbon.sum().item() == pytest.approx(4 + 0.06)


def test_ethanol_edges_both_directions():
    graph = graph_from_smiles("CCO")
    assert graph.edge_index.dtype == torch.int64
    assert graph.edge_index.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert graph.edge_attr.dtype == torch.float32
    assert (graph.edge_attr[:, BOND["bond=single"]] == 1).all()


@pytest.mark.parametrize("smiles", ["CCO", "c1ccccc1O", "C1CC1C#N", "OC(=O)C=CCl", "[NH4+].[Cl-]"])
def test_every_edge_has_its_reverse_with_the_same_features(smiles):
    graph = graph_from_smiles(smiles, FeaturizerConfig(explicit_hydrogens=True))
    edges = {(u, v): tuple(a) for (u, v), a in zip(graph.edge_index.t().tolist(), graph.edge_attr.tolist())}
    assert len(edges) == graph.edge_index.shape[1]
    assert all(edges[(v, u)] == attr for (u, v), attr in edges.items())
    assert graph.edge_index.shape[1] == 2 * Chem.AddHs(Chem.MolFromSmiles(smiles)).GetNumBonds()


def test_benzene_bonds_are_aromatic():
    graph = graph_from_smiles("c1ccccc1")
    assert graph.edge_index.shape == (2, 12)
    for name in ("bond=aromatic", "conjugated", "in_ring"):
        assert (graph.edge_attr[:, BOND[name]] == 1).all()
    assert graph.edge_attr[:, [BOND["bond=single"], BOND["bond=double"], BOND["bond=triple"]]].sum() == 0
    assert (graph.x[:, ATOM["aromatic"]] == 1).all()
    assert all(
        hot(a, "hybridisation") == ["hybridisation=SP2"] and hot(a, "hydrogens") == ["hydrogens=1"] for a in graph.x
    )


def test_explicit_hydrogens_methane_has_five_atoms():
    implicit = graph_from_smiles("C")
    explicit = graph_from_smiles("C", FeaturizerConfig(explicit_hydrogens=True))
    assert explicit.num_nodes == 5 and explicit.edge_index.shape == (2, 8)
    assert [hot(a, "element") for a in explicit.x] == [["element=C"]] + [["element=H"]] * 4
    # the carbon's hydrogen count does not depend on whether hydrogens are atoms
    assert_close(explicit.x[0], implicit.x[0])
    assert hot(explicit.x[0], "hydrogens") == ["hydrogens=4+"]
    assert all(hot(a, "hydrogens") == ["hydrogens=0"] for a in explicit.x[1:])


def test_single_atom_molecule():
    graph = graph_from_smiles("[Na+]")
    assert graph.x.shape == (1, 27)
    assert graph.edge_index.shape == (2, 0) and graph.edge_index.dtype == torch.int64
    assert graph.edge_attr.shape == (0, 6)
    assert hot(graph.x[0], "element") == ["element=other"] and hot(graph.x[0], "charge") == ["charge=+1"]


def test_hydrogen_defining_stereo_is_removed_too():
    mol = Chem.AddHs(Chem.MolFromSmiles("C/C=N/[H]"))
    assert mol_to_graph(mol).num_nodes == 3


def test_mol_to_graph_leaves_the_molecule_alone():
    mol = Chem.MolFromSmiles("CCO")
    mol_to_graph(mol, FeaturizerConfig(explicit_hydrogens=True))
    assert mol.GetNumAtoms() == 3


def test_bad_smiles_names_the_smiles_and_rdkit_reason_without_printing(capfd):
    with pytest.raises(MoleculeError, match=r"'N\(C\)\(C\)\(C\)\(C\)C'.*valence"):
        graph_from_smiles("N(C)(C)(C)(C)C")
    with pytest.raises(MoleculeError, match=r"cannot parse SMILES 'C1CC\('"):
        graph_from_smiles("C1CC(")
    with pytest.raises(MoleculeError, match="no atoms"):
        mol_from_smiles("")
    assert isinstance(MoleculeError("x"), ValueError)
    assert capfd.readouterr().err == ""


def test_distances_need_coordinates():
    with pytest.raises(MoleculeError, match=r"'CCO'.*3D"):
        graph_from_smiles("CCO", FeaturizerConfig(distances=True))


def test_distance_features_equal_position_differences(data_dir):
    smiles, numbers, positions = qm9_record(data_dir, 2)  # CCCO
    mol = mol_with_geometry(mol_from_smiles(smiles), numbers, positions)
    for config in (DISTANCES, COMPLETE, FeaturizerConfig(distances=True)):
        graph = mol_to_graph(mol, config)
        source, target = graph.edge_index
        assert_close(graph.edge_attr[:, -1], (graph.pos[source] - graph.pos[target]).norm(dim=1))
    assert_close(mol_to_graph(mol, DISTANCES).pos, positions)


def test_complete_graph_marks_non_bonded_pairs():
    mol = Chem.AddHs(Chem.MolFromSmiles("CC=O"))
    AllChem.Compute2DCoords(mol)
    mol.GetConformer().Set3D(True)
    sparse, complete = mol_to_graph(mol, DISTANCES), mol_to_graph(mol, COMPLETE)
    n = complete.num_nodes
    assert n == 7 and complete.edge_index.shape == (2, n * (n - 1))
    assert (complete.edge_index[0] != complete.edge_index[1]).all()
    names = bond_feature_names(COMPLETE)
    none = complete.edge_attr[:, names.index("bond=none")] == 1
    assert int((~none).sum()) == sparse.edge_index.shape[1]
    bonded = {tuple(e): a[:4] for e, a in zip(sparse.edge_index.t().tolist(), sparse.edge_attr.tolist())}
    for (u, v), attr in zip(complete.edge_index.t().tolist(), complete.edge_attr.tolist()):
        assert ((u, v) in bonded) == (attr[names.index("bond=none")] == 0)
        if (u, v) in bonded:
            assert attr[:4] == bonded[(u, v)]


def test_geometry_is_matched_to_the_smiles_whatever_the_atom_order(data_dir):
    smiles, numbers, positions = qm9_record(data_dir, 2)
    reference = mol_with_geometry(mol_from_smiles(smiles), numbers, positions)
    permutation = torch.randperm(len(numbers), generator=torch.Generator().manual_seed(3))
    shuffled = mol_with_geometry(mol_from_smiles(smiles), [numbers[i] for i in permutation], positions[permutation])

    def bond_lengths(mol):
        conformer = mol.GetConformer()
        return sorted(
            round(
                (
                    conformer.GetAtomPosition(b.GetBeginAtomIdx()) - conformer.GetAtomPosition(b.GetEndAtomIdx())
                ).Length(),
                5,
            )
            for b in mol.GetBonds()
        )

    assert bond_lengths(shuffled) == bond_lengths(reference)
    assert max(bond_lengths(shuffled)) < 1.6


def test_qm9_molecule_listed_in_another_order_is_matched(data_dir):
    # QM9 molecule 22195, a zwitterion whose geometry lists two hydrogens among the heavy atoms
    smiles, numbers, positions = qm9_record(data_dir, 840)
    mol = mol_with_geometry(mol_from_smiles(smiles), numbers, positions)
    assert [a.GetAtomicNum() for a in Chem.AddHs(mol_from_smiles(smiles)).GetAtoms()] != numbers
    graph = mol_to_graph(mol, DISTANCES)
    assert graph.edge_attr[:, -1].max() < 1.7


def test_geometry_of_another_molecule_is_rejected(data_dir):
    smiles, numbers, positions = qm9_record(data_dir, 2)
    with pytest.raises(MoleculeError, match="does not match"):
        mol_with_geometry(mol_from_smiles(smiles), numbers, positions * 3)
    with pytest.raises(MoleculeError, match="atoms"):
        mol_with_geometry(mol_from_smiles("CC"), numbers, positions)


@pytest.mark.parametrize("number", [0, 2, 6, 31])
def test_xyz_bond_perception_recovers_the_smiles(data_dir, number):
    molecule = read_xyz_file(data_dir / "qm9" / "qm9_subset1000.extxyz")[number]
    perceived = Chem.MolToSmiles(Chem.RemoveAllHs(mol_from_xyz(molecule)), isomericSmiles=False)
    expected = Chem.MolToSmiles(Chem.MolFromSmiles(molecule.properties["smiles"]), isomericSmiles=False)
    assert perceived == expected


def test_extended_xyz_file_is_read_with_its_properties(data_dir):
    molecules = read_xyz_file(data_dir / "qm9" / "qm9_subset1000.extxyz")
    assert len(molecules) == 1000
    first = molecules[0]
    assert first.symbols == ("N", "C", "C", "N") and first.positions.shape == (4, 3)
    assert first.properties["smiles"] == "N#CC#N" and first.properties["qm9_index"] == "25"
    assert (molecules[1].line, molecules[2].line) == (7, 19)


def test_graph_from_xyz_block_and_path(tmp_path):
    block = "3\nwater\nO 0.0 0.0 0.0\nH 0.9572 0.0 0.0\nH -0.2400 0.9266 0.0\n"
    graph = graph_from_xyz(block, FeaturizerConfig(explicit_hydrogens=True, distances=True))
    assert graph.num_nodes == 3 and graph.edge_index.shape == (2, 4)
    assert_close(graph.edge_attr[:2, -1], torch.tensor([0.9572, 0.9572]), atol=1e-3, rtol=0)
    path = tmp_path / "water.xyz"
    path.write_text(block)
    assert graph_from_xyz(path).num_nodes == 1
    path.write_text(block + block.replace("water", "again"))
    with pytest.raises(MoleculeError, match="2 molecules"):
        graph_from_xyz(str(path))
    assert len(graphs_from_xyz_file(path)) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x\n\nC 0 0 0\n", "line 1: expected an atom count"),
        ("2\n\nC 0 0 0\n", "line 1: atom count 2"),
        ("1\n\nQq 0 0 0\n", "line 3: unknown element 'Qq'"),
        ("1\n\nC 0 zero 0\n", "line 3: coordinates"),
        ("1\nProperties=pos:R:3:species:S:1\n0 0 0 C\n", "species:S:1:pos:R:3"),
    ],
)
def test_malformed_xyz_names_the_line(tmp_path, text, message):
    path = tmp_path / "bad.xyz"
    path.write_text(text)
    with pytest.raises(MoleculeError, match=message) as error:
        read_xyz_file(path)
    assert "bad.xyz" in str(error.value)


def test_failed_bond_perception_names_file_and_molecule(data_dir):
    # QM9 molecule 25 of the extxyz file is a strained cage that DetermineBonds cannot read
    with pytest.raises(MoleculeError, match=r"qm9_subset1000.extxyz, molecule 25 \(line 335\): bond perception"):
        graphs_from_xyz_file(data_dir / "qm9" / "qm9_subset1000.extxyz")


def test_sdf_records_are_read_and_a_bad_one_is_named(tmp_path):
    phenol = Chem.MolFromSmiles("c1ccccc1O")
    AllChem.Compute2DCoords(phenol)
    good = Chem.MolToMolBlock(phenol) + "$$$$\n"
    path = tmp_path / "two.sdf"
    path.write_text(good + good)
    graphs = graphs_from_sdf(path)
    assert [g.num_nodes for g in graphs] == [7, 7] and "pos" not in graphs[0]  # 2D coordinates are not positions
    assert graphs_from_sdf(path, FeaturizerConfig(explicit_hydrogens=True))[0].num_nodes == 13
    pentavalent = Chem.MolToMolBlock(Chem.MolFromSmiles("C(C)(C)(C)(C)C", sanitize=False), kekulize=False)
    path.write_text(good + pentavalent + "$$$$\n")
    with pytest.raises(MoleculeError, match=r"two.sdf, record 2: .*valence"):
        graphs_from_sdf(path)


@pytest.mark.parametrize(
    ("smiles", "message"),
    [
        ("C CCCCCCCCCC", r"whitespace ' ' at position 1.*would read only 'C'"),
        ("CCé", r"character 'é' at position 2.*would read only 'CC'"),
        ("CC\tO", r"whitespace '\\t' at position 2"),
        ("c1ccccc1 benzene", r"at position 8"),
        ("CC\x00C", r"character '\\x00' at position 2"),
    ],
)
def test_smiles_read_only_in_part_is_refused(smiles, message):
    with pytest.raises(MoleculeError, match=message):
        graph_from_smiles(smiles)


# A SMILES tokenizer (the atom, bond, branch and ring-closure tokens of OpenSMILES) for the
# property test: a string rdkit accepted was read whole when the tokens cover it exactly and
# rdkit's unsanitised molecule has one atom per atom token.
_TOKEN = re.compile(r"\[[^\[\]]+\]|Br|Cl|[BCNOSPFI]|[bcnosp]|\*|%\d\d|\d|[()=#\-+\\/:~@?>.$]")
_ATOM = re.compile(r"\[[^\[\]]+\]|Br|Cl|[BCNOSPFI]|[bcnosp]|\*")
_VALID = ["CCO", "c1ccccc1", "C(=O)O", "[NH4+]", "CC(C)(C)Br", "Cl/C=C/Cl", "[H]C([H])([H])[H]", "C%10CC%10",
          "[13CH4]", "CC.O", "*CC", "[Na+].[Cl-]", "OC[C@H](N)C(=O)O"]  # fmt: skip
_PIECES = st.sampled_from(list("CNOcnos()[]=#+-123@H%./\\ :*~|$?>!é\t\x00") + ["Cl", "Br", " name", "\u2013"])


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.lists(_PIECES, max_size=12).map("".join),
        st.tuples(st.sampled_from(_VALID), st.integers(0, 20), st.lists(_PIECES, max_size=3).map("".join)).map(
            lambda v: v[0][: v[1]] + v[2] + v[0][v[1] :]
        ),
        st.text(max_size=10),
    )
)
def test_every_string_is_read_whole_or_refused(smiles):
    try:
        mol = mol_from_smiles(smiles)
    except MoleculeError:
        return  # refused: fine, and nothing else may be raised
    tokens = _TOKEN.findall(smiles)
    assert "".join(tokens) == smiles, f"{smiles!r} was accepted but holds characters that are not SMILES"
    params = Chem.SmilesParserParams()
    params.removeHs, params.sanitize = False, False
    raw = Chem.MolFromSmiles(smiles, params)
    assert raw.GetNumAtoms() == sum(1 for t in tokens if _ATOM.fullmatch(t)), f"{smiles!r} was read in part"
    assert mol.GetNumHeavyAtoms() == raw.GetNumHeavyAtoms()
