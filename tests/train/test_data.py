"""The data directory and the finite check shared by every reader."""

import pytest
import torch

from structnets.train.data import check_finite, data_dir, dataset_path


def test_check_finite_names_rows():
    values = torch.zeros(6, 2)
    check_finite(values, "ok.csv")
    values[4, 1] = float("nan")
    values[2, 0] = float("inf")
    with pytest.raises(ValueError, match=r"data.csv: NaN and infinity in row\(s\) 2, 4"):
        check_finite(values, "data.csv")


def test_the_data_directory_setting_and_a_missing_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("STRUCTNETS_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path and data_dir("/elsewhere").as_posix() == "/elsewhere"
    with pytest.raises(FileNotFoundError, match="Download esol from https://example.org"):
        dataset_path("esol", "x.csv", "https://example.org")
    (tmp_path / "esol").mkdir()
    (tmp_path / "esol" / "x.csv").write_text("smiles\n")
    assert dataset_path("esol", "x.csv", "https://example.org") == tmp_path / "esol" / "x.csv"
