import math

import numpy as np
import pytest
import torch
from rdkit import Chem, DataStructs
from rdkit.Chem import Descriptors, rdFingerprintGenerator

from structnets.chem.descriptors import (
    CLIP,
    FeatureScaler,
    FeatureSpec,
    MoleculeFeaturizer,
    features_for,
    molecule_features,
    rdkit_descriptor_names,
    read_descriptors,
    scaled_mask,
)
from structnets.chem.featurize import MoleculeError

SMILES = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "C[C@H](N)C(=O)O", "CCCCCCCCCC", "[NH4+].[Cl-]"]
BINARY, COUNT, RDKIT_2D, V1 = (
    MoleculeFeaturizer.MORGAN_BINARY,
    MoleculeFeaturizer.MORGAN_COUNT,
    MoleculeFeaturizer.RDKIT_2D,
    MoleculeFeaturizer.V1_RDKIT_2D_NORMALIZED,
)


# ---------------------------------------------------------------------------- featurizers
def test_featurizer_sizes_scaling_names_and_parsing():
    descriptor_count = len(Descriptors._descList)
    assert [f.size for f in MoleculeFeaturizer] == [2048, 2048, descriptor_count, descriptor_count]
    assert [f.scaled for f in MoleculeFeaturizer] == [False, True, True, True]
    assert BINARY.names()[:2] == ["morgan_binary_0", "morgan_binary_1"] and BINARY.names()[-1] == "morgan_binary_2047"
    assert COUNT.names(bits=16)[-1] == "morgan_count_15"
    assert RDKIT_2D.names() == [name for name, _ in Descriptors._descList] == V1.names()
    assert MoleculeFeaturizer.parse("Morgan-Binary") is BINARY
    with pytest.raises(ValueError, match="unknown molecule featurizer 'ecfp'.*morgan_count"):
        MoleculeFeaturizer.parse("ecfp")


def test_morgan_bits_match_rdkit_bit_vector_and_counts():
    features = molecule_features(SMILES, [BINARY, COUNT])
    assert features.shape == (len(SMILES), 4096) and features.dtype == np.float64
    binary, counts = features[:, :2048], features[:, 2048:]
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048, includeChirality=True)
    for row, smiles in zip(binary, SMILES):
        expected = np.zeros(2048)
        DataStructs.ConvertToNumpyArray(generator.GetFingerprint(Chem.MolFromSmiles(smiles)), expected)
        np.testing.assert_array_equal(row, expected)
        assert row.sum() > 0
    assert (counts >= binary).all()
    np.testing.assert_array_equal(binary, (counts > 0).astype(float))
    assert counts[SMILES.index("CCCCCCCCCC")].max() >= 6  # eight CH2 centres share one radius-0 bit


def test_morgan_options_change_what_they_should():
    left, right = "C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O"
    chiral = molecule_features([left, right], [BINARY])
    flat = molecule_features([left, right], [BINARY], include_chirality=False)
    assert not np.array_equal(chiral[0], chiral[1])
    np.testing.assert_array_equal(flat[0], flat[1])
    small = molecule_features(["CCO"], [COUNT], radius=1, bits=64)
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=1, fpSize=64, includeChirality=True)
    np.testing.assert_array_equal(small[0], generator.GetCountFingerprintAsNumPy(Chem.MolFromSmiles("CCO")))


def test_rdkit_2d_columns_values_and_order():
    features = molecule_features(["CCO", "c1ccccc1"], [RDKIT_2D])
    names = rdkit_descriptor_names()
    assert features.shape == (2, len(Descriptors._descList)) == (2, len(names))
    molwt = names.index("MolWt")
    assert features[0, molwt] == pytest.approx(Descriptors.MolWt(Chem.MolFromSmiles("CCO")))
    assert features[1, molwt] == pytest.approx(78.114, abs=1e-3)
    assert features[1, names.index("NumAromaticRings")] == 1
    # Columns follow the order the featurizers are given.
    both = molecule_features(["CCO"], [RDKIT_2D, BINARY])
    np.testing.assert_array_equal(both[0, : len(names)], features[0])
    np.testing.assert_array_equal(both[0, len(names) :], molecule_features(["CCO"], [BINARY])[0])


def test_missing_and_huge_descriptors_are_nan_in_the_raw_output():
    names = rdkit_descriptor_names()
    features = molecule_features(["[Na+].[Cl-]", "C" * 140, "CCO"], [RDKIT_2D])
    assert math.isnan(features[0, names.index("BCUT2D_MWHI")])  # rdkit gives NaN for lone ions
    assert Descriptors.Ipc(Chem.MolFromSmiles("C" * 140)) > 1e30
    assert math.isnan(features[1, names.index("Ipc")])  # beyond MISSING_ABOVE
    assert np.isfinite(features[2]).all()


def test_featurizer_argument_errors():
    with pytest.raises(TypeError, match="MoleculeFeaturizer.parse"):
        molecule_features(["C"], ["morgan_binary"])
    with pytest.raises(ValueError, match="given twice: morgan_binary"):
        molecule_features(["C"], [BINARY, BINARY])
    with pytest.raises(ValueError, match="same RDKit descriptors"):
        molecule_features(["C"], [RDKIT_2D, V1])
    assert molecule_features([], [BINARY, RDKIT_2D]).shape == (0, 2048 + len(rdkit_descriptor_names()))


@pytest.mark.parametrize("bad", ["C1CC", "not_a_smiles", "C C"])
def test_invalid_smiles_raise_molecule_error_naming_it(bad):
    with pytest.raises(MoleculeError, match=f"molecule 1 .*{bad!r}"):
        molecule_features(["CCO", bad], [BINARY])


# ---------------------------------------------------------------------------- scaler
def _train_and_mask():
    generator = np.random.default_rng(0)
    train = np.column_stack(
        [
            generator.normal(5.0, 3.0, 41),  # scaled
            generator.integers(0, 2, 41).astype(float),  # binary: left alone
            generator.exponential(1e6, 41),  # scaled, skewed
            np.full(41, 0.3),  # constant; numpy's std of it is 5.6e-17, not 0
        ]
    )
    return train, np.array([True, False, True, True])


def test_scaler_standardises_training_rows_and_leaves_binary_columns():
    train, mask = _train_and_mask()
    scaler = FeatureScaler.fit(train, mask)
    out = scaler.transform(train)
    assert out.dtype == np.float32 and out.shape == train.shape
    np.testing.assert_allclose(out[:, [0, 2]].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out[:, [0, 2]].std(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out[:, 1], train[:, 1])
    assert scaler.std[3] == 1.0  # a constant column: std 1, not 5.6e-17
    assert scaler.transform(train[:1] + [0.0, 0.0, 0.0, 1.0])[0, 3] == pytest.approx(1.0)
    assert scaler.count_imputed(train) == 0


def test_scaler_imputes_the_training_median_and_clips():
    train = np.array([[1.0, 0.0], [2.0, 1.0], [np.nan, 1.0], [10.0, np.inf]])
    scaler = FeatureScaler.fit(train, np.array([True, False]))
    assert scaler.median.tolist() == [2.0, 1.0]  # of the finite values: (1, 2, 10) and (0, 1, 1)
    imputed = np.array([1.0, 2.0, 2.0, 10.0])  # mean and std are of the imputed training column
    assert scaler.mean[0] == pytest.approx(3.75) and scaler.std[0] == pytest.approx(imputed.std())
    test = np.array([[np.nan, np.nan], [-np.inf, 0.0], [1e9, 1.0], [-1e9, 0.0]])
    assert scaler.count_imputed(test) == 3
    out = scaler.transform(test)
    assert out[0, 0] == pytest.approx((2.0 - 3.75) / imputed.std(), rel=1e-6)
    assert out[0, 1] == 1.0 and out[1, 0] == out[0, 0]  # unscaled column: the raw median
    assert out[2, 0] == CLIP and out[3, 0] == -CLIP
    assert np.isfinite(out).all()


def test_scaler_all_missing_column_and_shape_errors():
    scaler = FeatureScaler.fit(np.array([[np.nan, 1.0], [np.nan, 3.0]]), np.array([True, True]))
    assert scaler.median[0] == 0.0 and scaler.transform(np.array([[np.nan, 2.0]])).tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match=r"expected \[n, 2\]"):
        scaler.transform(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="must be"):
        FeatureScaler.fit(np.zeros((3, 2)), np.array([True]))


def test_scaler_state_dict_round_trips_with_weights_only(tmp_path):
    train, mask = _train_and_mask()
    scaler = FeatureScaler.fit(train, mask, clip=5.0)
    path = tmp_path / "scaler.pt"
    torch.save({"scaler": scaler.state_dict()}, path)
    loaded = FeatureScaler.from_state_dict(torch.load(path, weights_only=True)["scaler"])
    assert loaded.clip == 5.0 and loaded.scaled.dtype == bool
    test = train[:5] * 3.0
    test[0, 0] = np.nan
    np.testing.assert_array_equal(loaded.transform(test), scaler.transform(test))


# ---------------------------------------------------------------------------- user descriptors
def _write_csv(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_descriptors_csv_round_trip(tmp_path):
    path = _write_csv(tmp_path / "d.csv", ["SMILES,logp, mw", "CCO,0.5,46.07", "", "C,1e-3,16"])
    values, names = read_descriptors(path, 2, smiles=["CCO", "C"])
    assert names == ["logp", "mw"]
    np.testing.assert_array_equal(values, [[0.5, 46.07], [1e-3, 16.0]])
    with pytest.raises(ValueError, match=r"line 4: SMILES 'C', but data row 1 is 'CC'"):
        read_descriptors(path, 2, smiles=["CCO", "CC"])
    values, names = read_descriptors(path, 2, skip_columns=("smiles", "mw"))
    assert names == ["logp"] and values.shape == (2, 1)


def test_read_descriptors_npz_and_npy_round_trip(tmp_path):
    array = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.savez(tmp_path / "a.npz", other=np.zeros((3, 5)), descriptors=array)
    values, names = read_descriptors(tmp_path / "a.npz", 3)
    np.testing.assert_array_equal(values, array)
    assert values.dtype == np.float64 and names == ["descriptor_0", "descriptor_1"]
    np.savez(tmp_path / "b.npz", array)  # unnamed: arr_0, the first array
    np.testing.assert_array_equal(read_descriptors(tmp_path / "b.npz", 3)[0], array)
    np.save(tmp_path / "c.npy", array.astype(np.int64))
    np.testing.assert_array_equal(read_descriptors(tmp_path / "c.npy", 3)[0], array)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("CCO,nan,1", r"d\.csv, line 3, column 2 \('a'\): 'nan' is not a finite number"),
        ("CCO,1,inf", r"d\.csv, line 3, column 3 \('b'\): 'inf' is not a finite number"),
        ("CCO,1,heavy", r"d\.csv, line 3, column 3 \('b'\): non-numeric value 'heavy'"),
        ("CCO,,1", r"d\.csv, line 3, column 2 \('a'\): empty value"),
        ("CCO,1", r"d\.csv, line 3: 2 fields, but the header has 3"),
    ],
)
def test_read_descriptors_csv_errors_name_line_and_column(tmp_path, row, message):
    path = _write_csv(tmp_path / "d.csv", ["smiles,a,b", "C,1,2", row])
    with pytest.raises(ValueError, match=message):
        read_descriptors(path, 2)


def test_read_descriptors_row_count_and_array_errors(tmp_path):
    path = _write_csv(tmp_path / "d.csv", ["smiles,a", "C,1", "CC,2"])
    with pytest.raises(ValueError, match=r"d\.csv: 2 data rows of descriptors, but the data file has 3 data rows"):
        read_descriptors(path, 3)
    with pytest.raises(ValueError, match="no descriptor columns"):
        read_descriptors(path, 2, skip_columns=("smiles", "a"))
    np.save(tmp_path / "flat.npy", np.ones(4))
    with pytest.raises(ValueError, match=r"flat\.npy: a 1-D array.*reshape\(-1, 1\)"):
        read_descriptors(tmp_path / "flat.npy", 4)
    bad = np.ones((4, 3))
    bad[2, 1] = np.nan
    np.savez(tmp_path / "bad.npz", X=bad)
    with pytest.raises(ValueError, match=r"bad\.npz: nan at row 2, column 1"):
        read_descriptors(tmp_path / "bad.npz", 4)
    with pytest.raises(ValueError, match=r"bad\.npz: 4 rows of descriptors, but the data file has 5"):
        read_descriptors(tmp_path / "bad.npz", 5)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        read_descriptors(tmp_path / "missing.npz", 4)
    (tmp_path / "d.txt").write_text("1\n")
    with pytest.raises(ValueError, match=r"\.npz, \.npy or \.csv"):
        read_descriptors(tmp_path / "d.txt", 1)


# ---------------------------------------------------------------------------- the whole feature vector
def test_feature_spec_builds_the_matrix_and_mask_and_round_trips(tmp_path):
    spec = FeatureSpec((BINARY, RDKIT_2D), descriptors_path=str(tmp_path / "d.csv"), bits=256)
    descriptors = np.array([[1.0, 2.0], [3.0, 4.0]])
    features = spec.features(["CCO", "c1ccccc1"], descriptors)
    count = len(rdkit_descriptor_names())
    assert features.shape == (2, spec.size(2)) == (2, 256 + count + 2)
    np.testing.assert_array_equal(features[:, -2:], descriptors)
    np.testing.assert_array_equal(
        features, features_for(["CCO", "c1ccccc1"], [BINARY, RDKIT_2D], descriptors, bits=256)
    )
    mask = spec.scaled_mask(2)
    assert mask.dtype == bool and mask.shape == (features.shape[1],)
    assert not mask[:256].any() and mask[256:].all()
    assert scaled_mask([COUNT], 1).tolist() == [True] * 2049
    assert spec.names(["a", "b"])[-3:] == [rdkit_descriptor_names()[-1], "a", "b"]
    with pytest.raises(ValueError, match="pass the descriptors"):
        spec.features(["CCO"])
    path = tmp_path / "spec.pt"
    torch.save(spec.to_dict(), path)
    assert FeatureSpec.from_dict(torch.load(path, weights_only=True)) == spec
    assert not FeatureSpec().enabled and FeatureSpec((COUNT,)).enabled
