import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from structnets.chem import (
    SPLIT_NAMES,
    MoleculeError,
    load_esol,
    murcko_scaffold,
    random_split,
    read_split_json,
    scaffold_split,
    sized_split,
    write_split_json,
)

BENZENES = ["c1ccccc1O", "c1ccccc1N", "Cc1ccccc1", "c1ccccc1Cl", "c1ccccc1C(=O)O", "c1ccccc1"]
PYRIDINES = ["c1ccncc1", "Cc1ccncc1"]
SMALL = BENZENES[:3] + PYRIDINES[:1] + ["CCCC", "C1CCCCC1"] + BENZENES[3:] + PYRIDINES[1:]


def assert_partition(split, num):
    assert tuple(split) == SPLIT_NAMES
    everything = [i for name in SPLIT_NAMES for i in split[name]]
    assert sorted(everything) == list(range(num))


@settings(max_examples=50, deadline=None)
@given(num=st.integers(0, 300), seed=st.integers(0, 2**31), train=st.floats(0, 1), val_share=st.floats(0, 1))
def test_random_split_is_a_partition_with_the_asked_sizes(num, seed, train, val_share):
    val = (1 - train) * val_share
    fractions = (train, val, max(0.0, 1 - train - val))
    split = random_split(num, fractions, seed)
    assert_partition(split, num)
    assert abs(len(split["train"]) - train * num) <= 1 and abs(len(split["val"]) - val * num) <= 1


def test_random_split_depends_only_on_the_seed():
    assert random_split(100, seed=4) == random_split(100, seed=4)
    assert random_split(100, seed=4) != random_split(100, seed=5)
    assert [len(random_split(10, (0.7, 0.2, 0.1))[name]) for name in SPLIT_NAMES] == [7, 2, 1]


@pytest.mark.parametrize("fractions", [(0.8, 0.1), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1), (float("nan"), 0.5, 0.5)])
def test_bad_fractions_are_rejected(fractions):
    with pytest.raises(ValueError, match="fractions"):
        random_split(10, fractions)
    with pytest.raises(ValueError, match="fractions"):
        scaffold_split(["CCO"], fractions)


def test_murcko_scaffold():
    assert murcko_scaffold("Cc1ccccc1O") == "c1ccccc1"
    assert murcko_scaffold("CCCC") == ""
    with pytest.raises(MoleculeError, match="C1CC"):
        murcko_scaffold("C1CC(")


def test_scaffold_split_largest_first_is_deterministic():
    split = scaffold_split(SMALL, (0.6, 0.2, 0.2), balanced=False)
    assert [SMALL[i] for i in split["train"]] == BENZENES[:3] + BENZENES[3:]
    assert sorted(SMALL[i] for i in split["val"]) == sorted(PYRIDINES)
    assert sorted(SMALL[i] for i in split["test"]) == ["C1CCCCC1", "CCCC"]


def test_scaffold_split_keeps_each_scaffold_in_one_part(data_dir):
    smiles = load_esol(data_dir).smiles
    for seed in (0, 1):
        split = scaffold_split(smiles, (0.8, 0.1, 0.1), seed=seed)
        assert_partition(split, len(smiles))
        owner = {}
        for name in SPLIT_NAMES:
            for i in split[name]:
                assert owner.setdefault(murcko_scaffold(smiles[i]), name) == name
        assert len(split["train"]) <= 0.8 * len(smiles) and len(split["val"]) <= 0.1 * len(smiles)
        # the big scaffold families go to train: benzene and the acyclic molecules
        assert owner["c1ccccc1"] == owner[""] == "train"
    assert scaffold_split(smiles, seed=0) == scaffold_split(smiles, seed=0) != scaffold_split(smiles, seed=1)


def test_scaffold_split_names_a_bad_smiles():
    with pytest.raises(MoleculeError, match=r"molecule 1: cannot parse SMILES 'C1CC\('"):
        scaffold_split(["CCO", "C1CC("])


def test_split_json_round_trip(tmp_path):
    split = random_split(20, seed=2)
    path = tmp_path / "split.json"
    write_split_json(split, path)
    assert read_split_json(path, 20) == split
    assert json.loads(path.read_text()) == split
    assert path.read_text().count("\n") == 5  # one key per line


def test_chemprops_splits_file_of_one_split_is_read(tmp_path):
    split = random_split(20, seed=3)
    path = tmp_path / "chemprop_splits.json"
    path.write_text(json.dumps([split]))
    assert read_split_json(path, 20) == split


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"train": [0], "val": [1]}, "missing key 'test'"),
        ({"train": [0], "val": [1], "test": [2], "valid": []}, "unexpected key.*'valid'"),
        ({"train": [0, "3"], "val": [1], "test": [2]}, r"'train' holds '3', which is not an integer"),
        ({"train": [0, 1.5], "val": [1], "test": [2]}, r"'train' holds 1.5"),
        ({"train": [0, True], "val": [1], "test": [2]}, r"'train' holds True"),
        ({"train": [0], "val": [1], "test": [10]}, r"'test' holds index 10, out of range \(0..9 for 10 rows\)"),
        ({"train": [-1], "val": [1], "test": [2]}, r"'train' holds index -1, out of range"),
        ({"train": [0, 4], "val": [1, 4], "test": [2]}, r"index 4 appears in both 'train' and 'val'"),
        ({"train": [0, 0], "val": [1], "test": [2]}, r"index 0 appears twice in the same split"),
        ({"train": 0, "val": [1], "test": [2]}, r"'train' must be a list"),
        ([0, 1, 2], "a list of 3 splits"),
        ([[0, 1, 2]], "must be an object"),
    ],
)
def test_bad_split_json_names_key_and_value(tmp_path, content, message):
    path = tmp_path / "split.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message) as error:
        read_split_json(path, 10)
    assert str(path) in str(error.value)


def test_split_json_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_split_json(tmp_path / "absent.json", 3)
    path = tmp_path / "broken.json"
    path.write_text('{"train": [0,')
    with pytest.raises(ValueError, match="not valid JSON"):
        read_split_json(path, 3)
    with pytest.raises(ValueError, match="in both"):
        write_split_json({"train": [0], "val": [0], "test": []}, tmp_path / "out.json")


def test_sized_split_takes_exact_counts():
    split = sized_split(1000, 700, 200, seed=5)
    assert [len(split[k]) for k in ("train", "val", "test")] == [700, 200, 100]
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(1000))
    assert split == sized_split(1000, 700, 200, seed=5) != sized_split(1000, 700, 200, seed=6)
    with pytest.raises(ValueError, match="cannot take 900 training and 200 validation molecules out of 1000"):
        sized_split(1000, 900, 200)
