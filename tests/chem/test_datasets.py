import dataclasses
import gzip
import importlib.util
import logging
import math
import resource
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close
from torch_geometric.loader import DataLoader

from structnets.chem import (
    CHEMICAL_ACCURACY,
    HARTREE_TO_EV,
    QM9_TARGETS,
    FeaturizerConfig,
    MoleculeDataset,
    MoleculeError,
    QM9Source,
    SkippedRow,
    bond_feature_size,
    graph_from_smiles,
    load_esol,
    load_freesolv,
    load_lipophilicity,
    load_qm9,
    read_molecule_csv,
)
from structnets.chem import datasets as datasets_module


def write(tmp_path, text, name="mols.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_esol_loader_reads_all_molecules(data_dir):
    dataset = load_esol(data_dir)
    assert len(dataset) == 1128 and dataset.skipped == []
    assert dataset.target_names == ["measured log solubility in mols per litre"]
    # the first SMILES has a trailing space in the file
    assert dataset.smiles[0] == "OCC3OC(OCC2OC(OC(C#N)c1ccccc1)C(O)C(O)C2O)C(O)C(O)C3O"
    assert dataset.targets.shape == (1128, 1) and dataset.targets.dtype == torch.float32
    assert dataset.targets[0, 0].item() == pytest.approx(-0.77)
    assert dataset.rows[:3] == [2, 3, 4] and dataset.rows[-1] == 1129


def test_freesolv_loader_reads_all_molecules(data_dir):
    dataset = load_freesolv(data_dir)
    assert len(dataset) == 642 and dataset.target_names == ["expt"]
    assert dataset.smiles[0] == "CN(C)C(=O)c1ccc(cc1)OC"
    assert dataset.targets[0, 0].item() == pytest.approx(-11.01)


def test_missing_lipophilicity_names_the_canonical_url(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Lipophilicity\.csv.*deepchemdata.*Lipophilicity\.csv"):
        load_lipophilicity(tmp_path)


def test_lipophilicity_reads_the_moleculenet_layout(tmp_path):
    folder = tmp_path / "lipophilicity"
    folder.mkdir()
    write(
        folder,
        "CMPD_CHEMBLID,exp,smiles\nCHEMBL596271,3.54,Cn1c(CN2CCN(CC2)c3ccc(Cl)cc3)nc4ccccc14\nX,-1.18,CCO\n",
        "Lipophilicity.csv",
    )
    dataset = load_lipophilicity(tmp_path)
    assert dataset.target_names == ["exp"] and dataset.targets[:, 0].tolist() == pytest.approx([3.54, -1.18])


def test_items_carry_targets_and_stored_graphs_stay_unchanged(data_dir):
    dataset = load_freesolv(data_dir, limit=5)
    item = dataset[3]
    assert item.y.shape == (1, 1) and item.y.item() == dataset.targets[3, 0].item()
    assert "y" not in dataset.graphs[3]
    assert item.x is dataset.graphs[3].x  # a shallow copy: no feature tensors duplicated
    assert dataset[-1].y.item() == dataset.targets[4, 0].item()
    with pytest.raises(IndexError):
        dataset[5]
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch.y.shape == (4, 1) and batch.num_graphs == 4


def test_replaced_targets_stay_consistent(data_dir):
    dataset = load_qm9(data_dir, limit=3)
    gaps = dataclasses.replace(dataset, targets=dataset.targets[:, [4]], target_names=["gap"])
    assert gaps[0].y.shape == (1, 1) and gaps[0].y.item() == dataset.targets[0, 4].item()
    part = dataset.subset([2, 0])
    assert part.rows == [dataset.rows[2], dataset.rows[0]] and part[0].y.tolist() == dataset[2].y.tolist()


def test_dataset_checks_its_fields():
    graph = graph_from_smiles("C")
    with pytest.raises(ValueError, match="lengths"):
        MoleculeDataset(["C"], [graph], torch.zeros(2, 1), ["t"], [2])
    with pytest.raises(ValueError, match="target names"):
        MoleculeDataset(["C"], [graph], torch.zeros(1, 1), ["t", "u"], [2])
    with pytest.raises(ValueError, match="NaN"):
        MoleculeDataset(["C"], [graph], torch.full((1, 1), math.nan), ["t"], [2])
    MoleculeDataset(["C"], [graph], torch.full((1, 1), math.nan), ["t"], [2], allow_missing_targets=True)
    with pytest.raises(ValueError, match="infinity"):
        MoleculeDataset(["C"], [graph], torch.full((1, 1), math.inf), ["t"], [2], allow_missing_targets=True)


def test_csv_reader_reads_several_targets_in_the_order_asked(tmp_path):
    path = write(tmp_path, "name,smiles,a,b\nx,CCO,1.5,-2\n\ny,c1ccccc1,3,4e-1\n")
    dataset = read_molecule_csv(path, "smiles", ["b", "a"], FeaturizerConfig(explicit_hydrogens=True))
    assert dataset.target_names == ["b", "a"]
    assert_close(dataset.targets, torch.tensor([[-2.0, 1.5], [0.4, 3.0]]))
    assert dataset.rows == [2, 4]  # line numbers; the blank line 3 is not a molecule
    assert dataset.graphs[0].num_nodes == 9


def test_missing_column_lists_the_columns(tmp_path):
    path = write(tmp_path, "name,smiles,value\nx,CCO,1\n")
    with pytest.raises(ValueError, match=r"mols\.csv: no column 'target'; the columns are 'name', 'smiles', 'value'"):
        read_molecule_csv(path, "smiles", ["target"])
    with pytest.raises(TypeError, match="sequence"):
        read_molecule_csv(path, "smiles", "value")


@pytest.mark.parametrize(
    ("row", "error", "message"),
    [
        ("C1CC(,1.0", MoleculeError, r"line 3: cannot parse SMILES 'C1CC\('"),
        ("CCN(C)(C)(C)C,1.0", MoleculeError, r"line 3: cannot parse SMILES 'CCN\(C\)\(C\)\(C\)C'.*valence"),
        (",1.0", MoleculeError, "line 3: empty SMILES"),
        ("CCO,abc", ValueError, r"line 3: non-numeric target 'abc' in column 'y'"),
        ("CCO,nan", ValueError, r"line 3: NaN target 'nan' in column 'y'"),
        ("CCO,", ValueError, r"line 3: empty target in column 'y'"),
        ("CCO,-inf", ValueError, r"line 3: infinite target '-inf'"),
        ("CCO,1e40", ValueError, r"line 3: infinite target '1e40'.*float32"),
        ("CCO", ValueError, r"line 3: 1 fields, but the header has 2"),
    ],
)
def test_bad_rows_name_file_line_and_value(tmp_path, row, error, message):
    path = write(tmp_path, f"smiles,y\nCC,0.5\n{row}\nCCC,2\n")
    with pytest.raises(error, match=message) as raised:
        read_molecule_csv(path, "smiles", ["y"])
    assert str(path) in str(raised.value)


def test_skip_invalid_records_and_logs_every_skipped_row(tmp_path, caplog):
    path = write(tmp_path, "smiles,y\nCC,0.5\nC1CC(,1\nCCO,abc\nCCC,2\n")
    with caplog.at_level(logging.WARNING):
        dataset = read_molecule_csv(path, "smiles", ["y"], skip_invalid=True)
    assert dataset.smiles == ["CC", "CCC"] and dataset.rows == [2, 5]
    assert [(s.row, s.value) for s in dataset.skipped] == [(3, "C1CC("), (4, "abc")]
    assert isinstance(dataset.skipped[0], SkippedRow) and "cannot parse SMILES" in dataset.skipped[0].reason
    assert "non-numeric" in dataset.skipped[1].reason
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(logged) == 2 and "line 3" in logged[0] and "line 4" in logged[1]


def test_missing_targets_only_when_allowed(tmp_path):
    path = write(tmp_path, "smiles,a,b\nCC,,1\nCCO,nan,2\n")
    dataset = read_molecule_csv(path, "smiles", ["a", "b"], allow_missing_targets=True)
    assert torch.isnan(dataset.targets[:, 0]).all() and dataset.targets[:, 1].tolist() == [1.0, 2.0]


def test_empty_and_invalid_files(tmp_path):
    with pytest.raises(ValueError, match=r"empty\.csv is empty"):
        read_molecule_csv(write(tmp_path, "", "empty.csv"), "smiles", ["y"])
    with pytest.raises(ValueError, match="no data rows"):
        read_molecule_csv(write(tmp_path, "smiles,y\n", "header.csv"), "smiles", ["y"])
    with pytest.raises(ValueError, match=r"all 1 rows were invalid; the first, line 2"):
        read_molecule_csv(write(tmp_path, "smiles,y\nC1CC(,1\n", "bad.csv"), "smiles", ["y"], skip_invalid=True)
    with pytest.raises(FileNotFoundError):
        read_molecule_csv(tmp_path / "absent.csv", "smiles", ["y"])


def test_limit_reads_the_first_molecules(data_dir):
    assert load_esol(data_dir, limit=7).rows == list(range(2, 9))


def test_qm9_subset_targets_are_converted_to_ev(data_dir):
    dataset = load_qm9(data_dir, limit=20)
    assert list(dataset.target_names) == list(QM9_TARGETS) and len(dataset) == 20
    assert dataset.rows[:3] == [25, 29, 40] and dataset.smiles[0] == "N#CC#N"
    with np.load(data_dir / "qm9" / "qm9_subset5000.npz") as archive:
        names = [str(n) for n in archive["target_names"]]
        raw = torch.from_numpy(archive["targets"][:20, [names.index(t) for t in QM9_TARGETS]])
    hartree = [QM9_TARGETS[t] == "eV" for t in QM9_TARGETS]
    expected = torch.where(torch.tensor(hartree), raw * HARTREE_TO_EV, raw).float()
    assert_close(dataset.targets, expected)
    gap = list(QM9_TARGETS).index("gap")
    assert dataset.targets[0, gap].item() == pytest.approx(0.277 * 27.211386, rel=1e-6)
    # methane's gap from the MANIFEST: 0.5048 Hartree = 13.736 eV
    assert 0.5048 * HARTREE_TO_EV == pytest.approx(13.736, abs=5e-4)


def test_qm9_graphs_have_hydrogens_positions_and_distances(data_dir):
    dataset = load_qm9(data_dir, limit=3)
    graph = dataset.graphs[2]  # CCCO
    assert graph.num_nodes == 12 and graph.pos.shape == (12, 3)
    assert graph.edge_attr.shape == (22, bond_feature_size(FeaturizerConfig(distances=True)))
    source, target = graph.edge_index
    assert_close(graph.edge_attr[:, -1], (graph.pos[source] - graph.pos[target]).norm(dim=1))
    heavy = load_qm9(data_dir, FeaturizerConfig(), limit=3)
    assert heavy.graphs[2].num_nodes == 4


def test_qm9_target_selection_and_constants(data_dir):
    dataset = load_qm9(data_dir, targets=["u0", "mu"], limit=2)
    assert dataset.target_names == ["u0", "mu"] and dataset.targets.shape == (2, 2)
    with pytest.raises(ValueError, match="unknown QM9 target"):
        load_qm9(data_dir, targets=["energy"], limit=2)
    assert set(CHEMICAL_ACCURACY) == set(QM9_TARGETS) and len(QM9_TARGETS) == 12
    assert CHEMICAL_ACCURACY["zpve"] == pytest.approx(0.0012) and CHEMICAL_ACCURACY["gap"] == pytest.approx(0.043)


def test_qm9pack_missing_says_how_to_install(data_dir, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install qm9pack==1\.0\.3"):
        load_qm9(data_dir, source=QM9Source.QM9PACK, limit=1)


def test_installed_qm9pack_agrees_with_the_subset(data_dir):
    """The real package (installed by .ci/setup): the subset's first molecules, read from both."""
    from_pack = load_qm9(source=QM9Source.QM9PACK, limit=45)
    from_subset = load_qm9(data_dir, limit=3)
    assert from_subset.rows == [25, 29, 40]
    chosen = [from_pack.rows.index(r) for r in from_subset.rows]
    assert_close(from_pack.targets[chosen], from_subset.targets)
    for i, graph in zip(chosen, from_subset.graphs):
        assert_close(from_pack.graphs[i].pos, graph.pos)
        assert torch.equal(from_pack.graphs[i].edge_index, graph.edge_index)


def test_qm9_sample_is_seeded_ordered_and_parallel_featurisation_agrees(data_dir):
    # 600 molecules are 2,400 tensors: under a limit of 1,000 open files, enough to run out
    # of file descriptors if the workers sent tensors through torch's shared memory.
    serial = load_qm9(data_dir, sample=600, seed=3, workers=1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1000), hard))
    try:
        parallel = load_qm9(data_dir, sample=600, seed=3, workers=2)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(serial) == 600 and serial.rows == sorted(serial.rows) == parallel.rows
    assert serial.rows != load_qm9(data_dir, sample=600, seed=4, workers=1).rows
    assert_close(serial.targets, parallel.targets)
    for a, b in zip(serial.graphs, parallel.graphs):
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_attr, b.edge_attr)
    with pytest.raises(ValueError, match="sample must be between 1 and the 5000"):
        load_qm9(data_dir, sample=6000)


def test_qm9pack_csv_layout_is_read(data_dir, tmp_path, monkeypatch):
    """A stand-in for qm9pack's files, in the layout its column help documents, built from the subset."""
    with np.load(data_dir / "qm9" / "qm9_subset5000.npz") as archive:
        names = [str(n) for n in archive["target_names"]]
        lines = []
        for i in range(3):
            start, end = archive["ptr"][i], archive["ptr"][i + 1]
            symbols = [{1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}[int(z)] for z in archive["z"][start:end]]
            xyz = [[float(v) for v in p] for p in archive["pos"][start:end]]
            values = [archive["targets"][i, names.index(t)] for t in QM9_TARGETS]
            lines.append(
                f'dsgdb9nsd_{archive["index"][i]:06d}.xyz,{archive["index"][i]},{archive["smiles"][i]},"{symbols}","{xyz}",'
                + ",".join(repr(float(v)) for v in values)
            )
    header = "XYZ_file,Index,SMILES,Elements,XYZ_Ang," + ",".join(
        datasets_module._QM9PACK_COLUMNS[t] for t in QM9_TARGETS
    )
    write(tmp_path, "\n".join([header, lines[0], lines[1]]) + "\n", "qm9_part1.csv")
    write(tmp_path, header + "\n", "qm9_part2.csv")
    write(tmp_path, "\n".join([header, lines[2]]) + "\n", "qm9_part3.csv")
    monkeypatch.setattr(datasets_module, "_qm9pack_folder", lambda: tmp_path)
    from_pack = load_qm9(source=QM9Source.QM9PACK)
    from_subset = load_qm9(data_dir, limit=3)
    assert from_pack.rows == from_subset.rows == [25, 29, 40]
    assert_close(from_pack.targets, from_subset.targets)
    assert_close(from_pack.graphs[2].pos, from_subset.graphs[2].pos)
    assert len(load_qm9(source=QM9Source.QM9PACK, limit=2)) == 2
    # A row that does not fill the header is refused at its line, not read in part.
    write(tmp_path, "\n".join([header, lines[2], lines[2].rsplit(",", 1)[0]]) + "\n", "qm9_part3.csv")
    with pytest.raises(ValueError, match=r"qm9_part3\.csv, line 3: 16 fields, but the header has 17"):
        load_qm9(source=QM9Source.QM9PACK)


def test_smiles_read_only_in_part_names_file_row_and_value(tmp_path, caplog):
    path = write(tmp_path, "smiles,y\nCC,0.5\nC CCCCCCCCCC,1.0\nCCé,2\nCCC,2\n", "partial.csv")
    with pytest.raises(MoleculeError, match=r"partial\.csv, line 3: SMILES 'C CCCCCCCCCC' has whitespace"):
        read_molecule_csv(path, "smiles", ["y"])
    with caplog.at_level(logging.WARNING):
        dataset = read_molecule_csv(path, "smiles", ["y"], skip_invalid=True)
    assert dataset.smiles == ["CC", "CCC"]
    assert [(s.row, s.value) for s in dataset.skipped] == [(3, "C CCCCCCCCCC"), (4, "CCé")]
    assert "line 4" in caplog.text and "'é'" in caplog.text


def test_duplicate_header_names_are_refused(tmp_path):
    path = write(tmp_path, "smiles,y,y\nCC,0.5,1\n")
    with pytest.raises(
        ValueError, match=r"mols\.csv: the header names a column more than once \('y' at columns \[2, 3\]\)"
    ):
        read_molecule_csv(path, "smiles", ["y"])
    # names are compared without their surrounding spaces
    with pytest.raises(ValueError, match="more than once"):
        read_molecule_csv(write(tmp_path, "smiles, y,y \nCC,0.5,1\n"), "smiles", ["y"])


def test_row_with_an_extra_field_is_refused(tmp_path):
    path = write(tmp_path, "smiles,y\nCC,0.5\nCCO,1.0,7\n")
    with pytest.raises(ValueError, match=r"mols\.csv, line 3: 3 fields, but the header has 2"):
        read_molecule_csv(path, "smiles", ["y"])
    dataset = read_molecule_csv(path, "smiles", ["y"], skip_invalid=True)
    assert dataset.smiles == ["CC"] and dataset.skipped[0].row == 3


def test_same_target_column_twice_is_refused(tmp_path):
    path = write(tmp_path, "smiles,y\nCC,0.5\n")
    with pytest.raises(ValueError, match=r"\['y'\] asked for more than once"):
        read_molecule_csv(path, "smiles", ["y", "y"])


def test_non_utf8_and_gzipped_csv_are_refused(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("smiles,name\nCC,ok\nCCO,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.csv, line 3: not UTF-8 text \(byte 0xe9"):
        read_molecule_csv(latin, "smiles", ["name"])
    packed = tmp_path / "packed.csv.gz"
    packed.write_bytes(gzip.compress(b"smiles,y\nCC,1\n"))
    with pytest.raises(ValueError, match=r"packed\.csv\.gz is gzip-compressed; decompress it first"):
        read_molecule_csv(packed, "smiles", ["y"])


def test_bom_and_space_padded_header_are_read(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf smiles , y\r\nCC,0.5\r\n\r\nCCO,1\r\n")
    dataset = read_molecule_csv(path, "smiles", ["y"])
    assert dataset.smiles == ["CC", "CCO"] and dataset.rows == [2, 4] and dataset.positions == [0, 1]
    assert dataset.target_names == ["y"] and dataset.source_rows == 2


_FIELDS = st.sampled_from(
    ["CC", "CCO", "c1ccccc1", "1.5", "-2", "", "nan", "inf", "x", "C C", "CCé", '"q,uoted"', " 3 "]
)


@settings(max_examples=150, deadline=None)
@given(
    header=st.lists(st.sampled_from(["smiles", "y", "z", " y", "id"]), min_size=1, max_size=4),
    rows=st.lists(st.lists(_FIELDS, max_size=5), max_size=6),
    noise=st.sampled_from(["", "\n", "\x00", "\ufeff", '"', "\xe9"]),
    encoding=st.sampled_from(["utf-8", "latin-1"]),
)
def test_molecule_csv_fuzz_parses_or_names_the_file(header, rows, noise, encoding):
    text = ",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows) + noise
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.csv"
        path.write_bytes(text.encode(encoding, errors="replace"))
        try:
            dataset = read_molecule_csv(path, "smiles", ["y"], skip_invalid=bool(len(rows) % 2))
        except ValueError as error:
            assert str(path) in str(error)
            return
    # Read: the header is unique and every molecule kept is one of the rows, whole.
    names = [h.strip() for h in header]
    assert len(set(names)) == len(names)
    data_rows = [r for r in text.split("\n")[1:] if r]
    for smiles, row, position in zip(dataset.smiles, dataset.rows, dataset.positions):
        assert smiles in {"CC", "CCO", "c1ccccc1"} and row >= 2 and 0 <= position < len(data_rows)
