import csv
import io

import pytest
import torch

from structnets.chem import FeaturizerConfig, graph_from_smiles
from structnets.chem.datasets import MoleculeDataset
from structnets.chem.metrics import Task
from structnets.chem.outputs import parity_figure, predicted_columns, predicted_csv, predictions_csv
from structnets.train.data import read_csv


def _dataset() -> MoleculeDataset:
    smiles = ["CCO", "C", "CCN", "c1ccccc1"]
    graphs = [graph_from_smiles(s, FeaturizerConfig()) for s in smiles]
    return MoleculeDataset(smiles, graphs, torch.tensor([[1.0], [2.0], [3.0], [4.0]]), ["y"], [2, 3, 4, 5])


def test_predictions_csv_lists_every_molecule_by_split():
    split = {"train": [2, 0], "val": [3], "test": [1]}
    predictions = {"train": torch.tensor([[3.5], [1.25]]), "val": torch.tensor([[4.0]]), "test": torch.tensor([[0.1]])}
    rows = list(csv.DictReader(io.StringIO(predictions_csv(_dataset(), split, predictions, ["y"]))))
    assert [(r["split"], r["row"], r["smiles"], r["y_true"], r["y_pred"]) for r in rows] == [
        ("train", "4", "CCN", "3", "3.5"),
        ("train", "2", "CCO", "1", "1.25"),
        ("val", "5", "c1ccccc1", "4", "4"),
        ("test", "3", "C", "2", "0.1"),
    ]


def test_predicted_csv_keeps_rows_columns_and_order(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,smiles,id\na,CCO,1\n\nb,bad\nc,C,3,extra\n")
    table = read_csv(path)
    text = predicted_csv(table, [[1.5, 2.0], None, None], ["", "2 fields", "4 fields"], ["u", "v"])
    records = list(csv.reader(io.StringIO(text)))
    assert (
        records[0]
        == predicted_columns("uv") + ["id", "smiles", "id"]
        == ["u_pred", "v_pred", "error", "id", "smiles", "id"]
    )
    assert records[1:] == [
        ["1.5", "2", "", "a", "CCO", "1"],
        [],
        ["", "", "2 fields", "b", "bad"],
        ["", "", "4 fields", "c", "C", "3", "extra"],
    ]
    with pytest.raises(ValueError):
        predicted_csv(table, [None], [""], ["u", "v"])  # fewer predictions than rows


def test_parity_figure_has_one_panel_per_target():
    truths = {"train": torch.randn(5, 3), "val": torch.randn(2, 3), "test": torch.zeros(0, 3)}
    figure = parity_figure(truths, truths, ["a", "b", "c"], Task.REGRESSION)
    axes = figure.get_axes()
    assert [ax.get_xlabel() for ax in axes] == ["true a", "true b", "true c"]
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert buffer.getvalue().startswith(b"\x89PNG")
