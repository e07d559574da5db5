"""The data directory, the finite check and the CSV reader shared by every reader."""

import gzip

import pytest
import torch

from structnets.train.data import CsvRecord, check_finite, data_dir, dataset_path, read_csv, read_text


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


def test_csv_table_keeps_every_record_as_written(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b'\xef\xbb\xbf\n id , smiles,id\r\na,CC,1\r\n\r\nb\r\nc,"C,C",3,x\r\n')
    table = read_csv(path)
    assert table.header == [" id ", " smiles", "id"] and table.names == ["id", "smiles", "id"]
    assert table.blank_lines_before_header == 1 and table.duplicates() == ["id"]
    assert table.records == [
        CsvRecord(3, 0, ["a", "CC", "1"]),
        CsvRecord(4, None, []),
        CsvRecord(5, 1, ["b"]),
        CsvRecord(6, 2, ["c", "C,C", "3", "x"]),
    ]
    assert [table.width_error(r) for r in table.rows] == [
        None,
        "1 fields, but the header has 3",
        "4 fields, but the header has 3",
    ]
    assert table.column("smiles") == 1
    with pytest.raises(ValueError, match=r"t\.csv: the header names 'id' 2 times \(columns \[1, 3\]\)"):
        table.column("id")
    with pytest.raises(ValueError, match=r"t\.csv: no column 'y'; the columns are 'id', 'smiles', 'id'"):
        table.column("y")
    with pytest.raises(ValueError, match=r"t\.csv: the header names a column more than once"):
        table.check_unique()


def test_csv_reader_names_the_file_for_what_it_cannot_read(tmp_path):
    cases = {
        "empty.csv": (b"\n\n", r"empty\.csv is empty"),
        "latin.csv": (b"a\nok\ncaf\xe9\n", r"latin\.csv, line 3: not UTF-8 text \(byte 0xe9 at offset 8\)"),
        "packed.csv": (gzip.compress(b"a\n1\n"), r"packed\.csv is gzip-compressed"),
        "quote.csv": (b'a\n"open\n', r"quote\.csv, line 2: not valid CSV"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=message):
            read_csv(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        read_csv(tmp_path / "absent.csv")
    assert read_text(tmp_path / "latin.csv".replace("latin", "empty")) == "\n\n"
