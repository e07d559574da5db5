import pytest

from structnets.chem.molprop_config import MolpropConfig
from structnets.chem.sources import MoleculeSet, SplitKind, load_molecules, make_split, subsample

TARGET = "measured log solubility in mols per litre"


def test_a_named_dataset_limited_and_sampled_in_file_order(data_dir):
    full = load_molecules(MolpropConfig(dataset="esol", data_dir=str(data_dir), limit=40))
    assert len(full) == 40 and full.target_names == [TARGET]
    drawn = load_molecules(MolpropConfig(dataset="esol", data_dir=str(data_dir), limit=40, sample=10))
    assert len(drawn) == 10 and drawn.rows == sorted(drawn.rows)
    assert set(drawn.smiles) <= set(full.smiles)
    with pytest.raises(ValueError, match="cannot sample 50 molecules out of the 40"):
        subsample(full, 50, seed=0)


def test_qm9_targets_are_chosen_and_a_missing_one_named(data_dir):
    config = MolpropConfig(dataset=MoleculeSet.QM9_SUBSET, data_dir=str(data_dir), limit=12, target_columns=("gap",))
    assert load_molecules(config).targets.shape == (12, 1)
    with pytest.raises(ValueError, match="esol has no target 'gap'"):
        load_molecules(MolpropConfig(dataset="esol", data_dir=str(data_dir), limit=5, target_columns=("gap",)))


def test_a_csv_file(tmp_path):
    (tmp_path / "m.csv").write_text("name,smi,y\na,CCO,1\nb,CCC,2\nc,CCN,3\n")
    dataset = load_molecules(
        MolpropConfig(data=str(tmp_path / "m.csv"), smiles_columns=("smi",), target_columns=("y",))
    )
    assert dataset.smiles == ["CCO", "CCC", "CCN"] and dataset.targets.view(-1).tolist() == [1, 2, 3]


def test_splits_follow_the_config(data_dir):
    dataset = load_molecules(MolpropConfig(dataset="esol", data_dir=str(data_dir), limit=50))
    config = MolpropConfig(dataset="esol")
    random = make_split(config, dataset)
    assert [len(random[n]) for n in ("train", "val", "test")] == [40, 5, 5]
    sized = make_split(MolpropConfig(dataset="esol", split_sizes=(30, 10)), dataset)
    assert [len(sized[n]) for n in ("train", "val", "test")] == [30, 10, 10]
    scaffold = make_split(MolpropConfig(dataset="esol", split=SplitKind.SCAFFOLD), dataset)
    assert sorted(scaffold["train"] + scaffold["val"] + scaffold["test"]) == list(range(50))
    with pytest.raises(ValueError, match="cannot be combined with --split scaffold"):
        make_split(MolpropConfig(dataset="esol", split_sizes=(30, 10), split=SplitKind.SCAFFOLD), dataset)
