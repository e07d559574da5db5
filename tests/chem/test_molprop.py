import csv
import dataclasses
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from structnets.chem import FeaturizerConfig, graph_from_smiles
from structnets.chem.molprop import MolpropConfig, Scaler, Task, _roc_auc, composition, predict, train
from structnets.cli import main

SMALL = dict(epochs=2, batch_size=16, hidden_size=16, edge_hidden_size=16, readout_hidden_size=32, rounds=2)


def _csv(path, rows, header=("smiles", "y")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def esol_run(tmp_path, data_dir):
    config = MolpropConfig(dataset="esol", data_dir=str(data_dir), limit=80, **SMALL)
    metrics = train(config, tmp_path / "run", progress=False)
    return config, metrics, tmp_path / "run"


def test_train_writes_metrics_checkpoint_predictions_and_plot(esol_run):
    _, metrics, run = esol_run
    on_disk = json.loads((run / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        values = on_disk[split]["measured log solubility in mols per litre"]
        assert set(values) == {"rmse", "mae", "r2"}
        assert values["rmse"] >= values["mae"] > 0
    assert on_disk["num_molecules"] == {"train": 64, "val": 8, "test": 8}
    checkpoint = torch.load(run / "model.pt", weights_only=True)
    assert checkpoint["target_names"] == ["measured log solubility in mols per litre"]
    with (run / "predictions.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 80
    assert (run / "parity.png").stat().st_size > 1000


def test_same_seed_same_numbers(esol_run, tmp_path):
    config, metrics, _ = esol_run
    again = train(config, tmp_path / "again", progress=False)
    assert again["test"] == metrics["test"]


def test_predict_keeps_every_row_and_column_in_order(esol_run, tmp_path):
    _, _, run = esol_run
    data = _csv(
        tmp_path / "new.csv",
        [["a", "CCO", "x"], ["b", "not-a-smiles", ""], ["c", "c1ccccc1", "z"]],
        header=("name", "smiles", "note"),
    )
    failed = predict(run, data, "smiles", tmp_path / "out.csv")
    assert failed == 1
    with (tmp_path / "out.csv").open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    target = "measured log solubility in mols per litre_pred"
    assert reader.fieldnames == ["name", "smiles", "note", target, "error"]
    assert [(r["name"], r["smiles"], r["note"]) for r in rows] == [
        ("a", "CCO", "x"),
        ("b", "not-a-smiles", ""),
        ("c", "c1ccccc1", "z"),
    ]
    assert rows[1]["error"] and "not-a-smiles" in rows[1]["error"]
    assert rows[0]["error"] == "" and rows[2]["error"] == ""
    assert all(-20 < float(r[target]) < 20 for r in (rows[0], rows[2]))
    assert rows[1][target] == ""


def test_predict_refuses_to_overwrite_an_input_column(esol_run, tmp_path):
    _, _, run = esol_run
    data = _csv(tmp_path / "new.csv", [["CCO", "old"]], header=("smiles", "error"))
    with pytest.raises(ValueError, match=r"new.csv: the input already has column\(s\) \['error'\]"):
        predict(run, data, "smiles", tmp_path / "out.csv")


def test_user_csv_with_invalid_rows(tmp_path, capsys):
    good = [["CCO", "1.0"], ["CCC", "2.0"], ["CCN", "0.5"], ["c1ccccc1", "3.0"], ["CC(=O)O", "1.5"]] * 4
    rows = good[:7] + [["C1CC", "1.0"]] + good[7:]
    data = _csv(tmp_path / "mols.csv", rows)
    code = main(
        [
            "molprop",
            "train",
            "--data",
            str(data),
            "--target-column",
            "y",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    assert code == 2
    assert "mols.csv" in capsys.readouterr().err
    code = main(
        [
            "molprop",
            "train",
            "--data",
            str(data),
            "--target-column",
            "y",
            "--epochs",
            "1",
            "--skip-invalid",
            "--hidden-size",
            "8",
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert [row[0] for row in metrics["skipped_rows"]] == [9]  # line 9: header is line 1
    assert "skipped row 9" in capsys.readouterr().out


def test_split_indices_file(tmp_path, data_dir):
    split = {"train": list(range(0, 30)), "val": list(range(30, 40)), "test": [40, 41, 42]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    config = MolpropConfig(
        dataset="freesolv", data_dir=str(data_dir), limit=50, split_indices=str(tmp_path / "split.json"), **SMALL
    )
    metrics = train(config, tmp_path / "run", progress=False)
    assert metrics["num_molecules"] == {"train": 30, "val": 10, "test": 3}


def test_config_errors():
    with pytest.raises(ValueError, match="exactly one"):
        MolpropConfig()
    with pytest.raises(ValueError, match="target-column"):
        MolpropConfig(data="x.csv")
    with pytest.raises(ValueError, match="unknown dataset"):
        MolpropConfig(dataset="tox21")


def test_roc_auc_matches_pairwise_count():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.4])
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])
    pairs = [(p, n) for p in scores[labels == 1] for n in scores[labels == 0]]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert _roc_auc(scores, labels) == pytest.approx(expected)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_distributed_training_with_gloo(tmp_path, data_dir):
    """Two processes under torchrun train one model (DistributedDataParallel, gloo)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "structnets",
        "molprop",
        "train",
        "--dataset",
        "esol",
        "--data-dir",
        str(data_dir),
        "--limit",
        "40",
        "--epochs",
        "1",
        "--hidden-size",
        "8",
        "--out",
        str(tmp_path / "ddp"),
        "--no-progress",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and "test" in metrics


@pytest.mark.parametrize("explicit", [False, True])
def test_composition_counts_every_atom_hydrogens_included(explicit):
    config = FeaturizerConfig(explicit_hydrogens=explicit)
    graphs = [graph_from_smiles(s, config) for s in ("CCO", "C", "c1ccccc1Cl", "[NH4+]")]
    counts = composition(graphs, config)
    # Slots: H C N O F S Cl Br I P other, then the column of ones.
    assert counts[:, :11].tolist() == [
        [6, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        [4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [5, 6, 0, 0, 0, 0, 1, 0, 0, 0, 0],
        [4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    ]
    assert counts[:, -1].tolist() == [1, 1, 1, 1]


def test_composition_baseline_round_trips_and_absorbs_linear_targets():
    generator = torch.Generator().manual_seed(0)
    heavy = torch.randint(0, 9, (200, 3), generator=generator).to(torch.float64)
    counts = torch.cat([heavy, torch.ones(200, 1, dtype=torch.float64)], 1)
    per_atom = torch.tensor([[-0.5, 10.0], [-38.0, 3.0], [-75.0, -1.0], [2.0, 0.0]], dtype=torch.float64)
    noise = 0.1 * torch.randn(200, 2, generator=generator)
    targets = (counts @ per_atom).float() + noise
    scaler = Scaler.fit(targets, Task.REGRESSION, counts)
    # The composition part (spread over hundreds) is gone: what is left is the noise.
    assert (scaler.inverse(torch.zeros(200, 2), counts) - targets).abs().max() < 0.5
    torch.testing.assert_close(scaler.inverse(scaler.transform(targets, counts), counts), targets)
    with pytest.raises(ValueError, match="composition"):
        scaler.transform(targets)


def test_qm9_run_with_baseline_sized_split_and_predict(tmp_path, data_dir):
    config = MolpropConfig(
        dataset="qm9-subset",
        data_dir=str(data_dir),
        sample=120,
        split_sizes=(80, 20),
        target_columns=("u0", "gap"),
        **SMALL,
    )
    assert config.uses_baseline
    metrics = train(config, tmp_path / "run", progress=False)
    assert metrics["num_molecules"] == {"train": 80, "val": 20, "test": 20}
    # Total energies span ~10,000 eV; with the composition baseline two epochs get within a few eV.
    assert metrics["test"]["u0"]["mae"] < 5.0
    data = _csv(tmp_path / "new.csv", [["CCO"], ["C1CC1"]], header=("smiles",))
    assert predict(tmp_path / "run", data, "smiles", tmp_path / "out.csv") == 0
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    # Ethanol's U0 is -154.9 Hartree (-4,214 eV); cyclopropane's -117.9 Hartree (-3,208 eV).
    assert abs(float(rows[0]["u0_pred"]) + 4214) < 30 and abs(float(rows[1]["u0_pred"]) + 3208) < 30


def test_predict_refuses_a_3d_model(tmp_path, data_dir):
    config = MolpropConfig(dataset="qm9-subset", data_dir=str(data_dir), limit=40, distances=True, **SMALL)
    train(config, tmp_path / "run", progress=False)
    data = _csv(tmp_path / "new.csv", [["CCO"]], header=("smiles",))
    with pytest.raises(ValueError, match="trained on 3D inputs"):
        predict(tmp_path / "run", data, "smiles", tmp_path / "out.csv")


def test_time_budget_stops_after_the_epoch_that_spends_it(tmp_path, data_dir):
    config = MolpropConfig(dataset="esol", data_dir=str(data_dir), limit=60, max_seconds=1e-3, **{**SMALL, "epochs": 5})
    metrics = train(config, tmp_path / "run", progress=False)
    assert metrics["epochs_run"] == 1 and metrics["stopped_by_time_budget"] is True
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        MolpropConfig(dataset="esol", max_seconds=0)


def test_weight_average_is_what_gets_kept(tmp_path, data_dir):
    config = MolpropConfig(dataset="esol", data_dir=str(data_dir), limit=60, ema_decay=0.9, **SMALL)
    metrics = train(config, tmp_path / "run", progress=False)
    plain = train(dataclasses.replace(config, ema_decay=0.0), tmp_path / "plain", progress=False)
    assert metrics["test"] != plain["test"]
    # The checkpoint holds the averaged weights: reloaded, they give the reported predictions.
    target = "measured log solubility in mols per litre"
    reported = [r for r in csv.DictReader((tmp_path / "run" / "predictions.csv").open()) if r["split"] == "test"]
    data = _csv(tmp_path / "new.csv", [[r["smiles"]] for r in reported], header=("smiles",))
    predict(tmp_path / "run", data, "smiles", tmp_path / "out.csv")
    again = list(csv.DictReader((tmp_path / "out.csv").open()))
    for old, new in zip(reported, again, strict=True):
        assert float(new[f"{target}_pred"]) == pytest.approx(float(old[f"{target}_pred"]), abs=1e-4)
    with pytest.raises(ValueError, match="ema_decay"):
        MolpropConfig(dataset="esol", ema_decay=1.0)
