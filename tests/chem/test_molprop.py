import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.testing import assert_close
from torch_geometric.data import Batch

from structnets.chem.descriptors import rdkit_descriptor_names
from structnets.chem.featurize import graph_from_smiles
from structnets.chem.molprop import MolpropConfig, predict, train, training
from structnets.chem.molprop_predict import load_run
from structnets.chem.scaling import Scaler, composition
from structnets.cli import main
from structnets.models import MPNN, MPNNConfig, MultiMPNN
from structnets.train.checkpoint import CheckpointError, RunDirectory, load_model
from structnets.train.engine import TrainConfig

TARGET = "measured log solubility in mols per litre"
SMALL = dict(hidden_size=16, edge_hidden_size=16, readout_hidden_size=32, rounds=2)


def _train(epochs=2, **kwargs) -> TrainConfig:
    return training(epochs=epochs, batch_size=16, progress=False, **kwargs)


def _csv(path, rows, header=("smiles", "y")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def esol_run(tmp_path_factory):
    """One small run shared by the tests that only read it (conftest's data_dir is per test)."""
    data_dir = os.environ.get("STRUCTNETS_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data")
    config = MolpropConfig(dataset="esol", data_dir=str(data_dir), limit=80, train=_train(), **SMALL)
    run = tmp_path_factory.mktemp("esol") / "run"
    metrics = train(config, run)
    return config, metrics, run


def test_train_writes_metrics_checkpoint_predictions_and_plot(esol_run):
    _, metrics, run = esol_run
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for split in ("train", "val", "test"):
        values = on_disk[split][TARGET]
        assert set(values) == {"rmse", "mae", "r2"}
        assert values["rmse"] >= values["mae"] > 0
    assert on_disk["num_molecules"] == {"train": 64, "val": 8, "test": 8}
    assert on_disk["epochs_run"] == 2 and 1 <= on_disk["best_epoch"] <= 2
    # Timings live apart from the results.
    assert "train_seconds" not in on_disk and json.loads((run / "timing.json").read_text())["steps"] == 2 * 4
    model, checkpoint = load_model(run, task="molprop")
    assert isinstance(model, MPNN) and checkpoint.extra["target_names"] == [TARGET]
    assert checkpoint.task_config["train"]["epochs"] == 2 and checkpoint.extra["featurizer"]["distances"] is False
    with (run / "predictions.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 80
    assert (run / "parity.png").stat().st_size > 1000
    assert json.loads((run / "run.json").read_text())["status"] == "complete"


def test_same_seed_same_metrics_file(esol_run, tmp_path):
    config, _, run = esol_run
    train(config, tmp_path / "again")
    assert (tmp_path / "again" / "metrics.json").read_bytes() == (run / "metrics.json").read_bytes()


def test_resume_continues_where_the_run_stopped(esol_run, tmp_path):
    config, first, run = esol_run
    straight = train(dataclasses.replace(config, train=_train(epochs=3)), tmp_path / "straight")
    resumed = train(dataclasses.replace(config, train=_train(epochs=3, resume=run)), tmp_path / "resumed")
    assert resumed["epochs_run"] == 3
    assert resumed["history"][: len(first["history"])] == first["history"]
    assert resumed["history"] == straight["history"]
    assert resumed["test"] == straight["test"]


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
    target = f"{TARGET}_pred"
    assert reader.fieldnames == [target, "error", "name", "smiles", "note"]
    assert [(r["name"], r["smiles"], r["note"]) for r in rows] == [
        ("a", "CCO", "x"),
        ("b", "not-a-smiles", ""),
        ("c", "c1ccccc1", "z"),
    ]
    assert rows[1]["error"] and "not-a-smiles" in rows[1]["error"]
    assert rows[0]["error"] == "" and rows[2]["error"] == ""
    assert all(-20 < float(r[target]) < 20 for r in (rows[0], rows[2]))
    assert rows[1][target] == ""
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # written through a rename


def test_predict_matches_the_reported_predictions(esol_run, tmp_path):
    _, _, run = esol_run
    reported = [r for r in csv.DictReader((run / "predictions.csv").open()) if r["split"] == "test"]
    data = _csv(tmp_path / "new.csv", [[r["smiles"]] for r in reported], header=("smiles",))
    assert main(["molprop", "predict", "--model", str(run), "--data", str(data), "--out", str(tmp_path / "o.csv")]) == 0
    again = list(csv.DictReader((tmp_path / "o.csv").open()))
    for old, new in zip(reported, again, strict=True):
        assert float(new[f"{TARGET}_pred"]) == pytest.approx(float(old[f"{TARGET}_pred"]), abs=1e-4)


def test_predict_refuses_to_overwrite_an_input_column(esol_run, tmp_path):
    _, _, run = esol_run
    data = _csv(tmp_path / "new.csv", [["CCO", "old"]], header=("smiles", "error"))
    with pytest.raises(ValueError, match=r"new.csv: the input already has column\(s\) \['error'\]"):
        predict(run, data, "smiles", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_predict_refuses_an_incomplete_run_and_another_tasks_run(tmp_path, capsys):
    data = _csv(tmp_path / "new.csv", [["CCO"]], header=("smiles",))
    RunDirectory.start(tmp_path / "interrupted", task="molprop")  # never finished
    with pytest.raises(CheckpointError, match="interrupted: the run is incomplete"):
        predict(tmp_path / "interrupted", data, "smiles", tmp_path / "out.csv")
    other = RunDirectory.start(tmp_path / "other", task="palindrome")
    other.save_model(MPNN(MPNNConfig(atom_features=4, bond_features=2)))
    other.finish()
    code = main(["molprop", "predict", "--model", str(tmp_path / "other"), "--data", str(data), "--out", "o.csv"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    assert "other: a run of task 'palindrome', but 'molprop' was expected" in error


def test_out_naming_a_file_fails_before_anything_is_read(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    code = main(["molprop", "train", "--dataset", "esol", "--data-dir", str(tmp_path / "nowhere")]
                + ["--out", str(tmp_path / "taken"), "--no-progress"])  # fmt: skip
    assert code == 2 and "taken is a file" in capsys.readouterr().err


def test_user_csv_with_invalid_rows(tmp_path, capsys):
    good = [["CCO", "1.0"], ["CCC", "2.0"], ["CCN", "0.5"], ["c1ccccc1", "3.0"], ["CC(=O)O", "1.5"]] * 4
    rows = good[:7] + [["C1CC", "1.0"]] + good[7:]
    data = _csv(tmp_path / "mols.csv", rows)
    flags = ["molprop", "train", "--data", str(data), "--target-column", "y", "--epochs", "1", "--no-progress"]
    code = main([*flags, "--out", str(tmp_path / "r")])
    assert code == 2
    assert "mols.csv" in capsys.readouterr().err
    code = main([*flags, "--skip-invalid", "--hidden-size", "8", "--ema-decay", "0", "--out", str(tmp_path / "r")])
    assert code == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert [row[0] for row in metrics["skipped_rows"]] == [9]  # line 9: header is line 1
    assert metrics["config"]["train"]["ema_decay"] is None  # --ema-decay 0: no average, as before
    assert "skipped row 9" in capsys.readouterr().out


def test_split_indices_file(tmp_path, data_dir):
    split = {"train": list(range(0, 30)), "val": list(range(30, 40)), "test": [40, 41, 42]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    config = MolpropConfig(
        dataset="freesolv",
        data_dir=str(data_dir),
        limit=50,
        split_indices=str(tmp_path / "split.json"),
        train=_train(),
        **SMALL,
    )
    metrics = train(config, tmp_path / "run")
    assert metrics["num_molecules"] == {"train": 30, "val": 10, "test": 3}


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
    # 32 training molecules, 16 per rank: one batch of 50 each.
    assert json.loads((tmp_path / "ddp" / "timing.json").read_text())["steps"] == 1


def test_qm9_run_with_baseline_sized_split_and_predict(tmp_path, data_dir):
    config = MolpropConfig(
        dataset="qm9-subset",
        data_dir=str(data_dir),
        sample=120,
        split_sizes=(80, 20),
        target_columns=("u0", "gap"),
        train=_train(),
        **SMALL,
    )
    assert config.uses_baseline
    metrics = train(config, tmp_path / "run")
    assert metrics["num_molecules"] == {"train": 80, "val": 20, "test": 20}
    # Total energies span ~10,000 eV; with the composition baseline two epochs get within a few eV.
    assert metrics["test"]["u0"]["mae"] < 5.0
    data = _csv(tmp_path / "new.csv", [["CCO"], ["C1CC1"]], header=("smiles",))
    assert predict(tmp_path / "run", data, "smiles", tmp_path / "out.csv") == 0
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    # Ethanol's U0 is -154.9 Hartree (-4,214 eV); cyclopropane's -117.9 Hartree (-3,208 eV).
    assert abs(float(rows[0]["u0_pred"]) + 4214) < 30 and abs(float(rows[1]["u0_pred"]) + 3208) < 30


def test_predict_refuses_a_3d_model(tmp_path, data_dir):
    config = MolpropConfig(
        dataset="qm9-subset", data_dir=str(data_dir), limit=40, distances=True, train=_train(), **SMALL
    )
    train(config, tmp_path / "run")
    data = _csv(tmp_path / "new.csv", [["CCO"]], header=("smiles",))
    with pytest.raises(ValueError, match="trained on 3D inputs"):
        predict(tmp_path / "run", data, "smiles", tmp_path / "out.csv")


def test_time_budget_stops_once_spent_and_keeps_the_best(tmp_path, data_dir):
    config = MolpropConfig(
        dataset="esol", data_dir=str(data_dir), limit=60, train=_train(epochs=5, max_seconds=1e-3), **SMALL
    )
    metrics = train(config, tmp_path / "run")
    assert metrics["epochs_run"] == 1 and metrics["stopped_by_time_budget"] is True
    assert metrics["best_epoch"] == 1 and json.loads((tmp_path / "run" / "timing.json").read_text())["steps"] == 1
    with pytest.raises(ValueError, match="max_seconds must be a positive number"):
        MolpropConfig(dataset="esol", train=TrainConfig(epochs=1, max_seconds=0))


def test_weight_average_is_what_gets_kept(tmp_path, data_dir):
    config = MolpropConfig(dataset="esol", data_dir=str(data_dir), limit=60, train=_train(ema_decay=0.9), **SMALL)
    metrics = train(config, tmp_path / "run")
    plain = train(dataclasses.replace(config, train=_train()), tmp_path / "plain")
    assert metrics["test"] != plain["test"]
    # The checkpoint holds the averaged weights: reloaded, they give the reported predictions.
    reported = [r for r in csv.DictReader((tmp_path / "run" / "predictions.csv").open()) if r["split"] == "test"]
    data = _csv(tmp_path / "new.csv", [[r["smiles"]] for r in reported], header=("smiles",))
    predict(tmp_path / "run", data, "smiles", tmp_path / "out.csv")
    again = list(csv.DictReader((tmp_path / "out.csv").open()))
    for old, new in zip(reported, again, strict=True):
        assert float(new[f"{TARGET}_pred"]) == pytest.approx(float(old[f"{TARGET}_pred"]), abs=1e-4)
    with pytest.raises(ValueError, match="ema_decay"):
        MolpropConfig(dataset="esol", train=TrainConfig(epochs=1, ema_decay=1.0))


def test_a_model_file_of_the_old_schema_is_refused_with_one_line(tmp_path):
    (tmp_path / "old").mkdir()
    torch.save({"state_dict": {}, "config": {}}, tmp_path / "old" / "model.pt")
    with pytest.raises(CheckpointError, match="not a structnets run directory"):
        predict(tmp_path / "old", tmp_path / "none.csv", "smiles", tmp_path / "out.csv")


def _predict_records(run, tmp_path, raw: bytes):
    data = tmp_path / "in.csv"
    data.write_bytes(raw)
    failed = predict(run, data, "smiles", tmp_path / "out.csv")
    with (tmp_path / "out.csv").open(newline="") as handle:
        return failed, list(csv.reader(handle))


def test_predict_reproduces_its_input(esol_run, tmp_path):
    _, _, run = esol_run
    raw = "\ufeff id , smiles ,id\r\na,CCO,1\r\n\r\nb,C CCCCCCCCCC,2\r\nc,CC\r\nd,c1ccccc1,4,extra\r\ne,CCN,5\r\n"
    failed, records = _predict_records(run, tmp_path, raw.encode())
    added = len(records[0]) - 3
    assert records[0][added:] == [" id ", " smiles ", "id"]  # duplicate and padded names kept as written
    assert [r[added:] for r in records[1:]] == [
        ["a", "CCO", "1"],
        [],  # the blank line stays
        ["b", "C CCCCCCCCCC", "2"],
        ["c", "CC"],
        ["d", "c1ccccc1", "4", "extra"],
        ["e", "CCN", "5"],
    ]
    errors = {r[added:][0]: r[added - 1] for r in records[1:] if r}
    assert failed == 3 and errors["a"] == errors["e"] == ""
    assert "whitespace" in errors["b"] and "2 fields, but the header has 3" in errors["c"]
    assert "4 fields" in errors["d"]
    assert records[1][0] != "" and records[3][0] == ""  # a prediction only where the row was read


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.lists(st.sampled_from(["id", "smiles", "note", " x"]), min_size=1, max_size=4),
    rows=st.lists(st.lists(st.sampled_from(["CCO", "C", "bad(", "", "a b", '"q,x"', "é"]), max_size=5), max_size=5),
)
def test_predict_output_minus_added_columns_is_the_input(esol_run, header, rows):
    _, _, run = esol_run
    if "smiles" not in header:
        header = [*header, "smiles"]
    if header.count("smiles") > 1:
        return  # an ambiguous SMILES column is refused (tested above)
    text = "\r\n".join([",".join(header)] + [",".join(r) for r in rows]) + "\r\n"
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "in.csv"
        data.write_text(text, newline="")
        predict(run, data, "smiles", Path(folder) / "out.csv")
        with (Path(folder) / "out.csv").open(newline="") as handle:
            output = list(csv.reader(handle))
    expected = list(csv.reader(io.StringIO(text, newline="")))
    added = len(output[0]) - len(expected[0])
    assert added == 2 and [r[added:] for r in output] == expected


def test_predict_refuses_a_duplicated_smiles_column_and_its_own_input_as_out(esol_run, tmp_path):
    _, _, run = esol_run
    data = _csv(tmp_path / "in.csv", [["CC", "CC"]], header=("smiles", "smiles"))
    with pytest.raises(ValueError, match=r"in\.csv: the header names 'smiles' 2 times \(columns \[1, 2\]\)"):
        predict(run, data, "smiles", tmp_path / "out.csv")
    data = _csv(tmp_path / "one.csv", [["CC"]], header=("smiles",))
    with pytest.raises(ValueError, match="is the input file"):
        predict(run, data, "smiles", data)


def _small_csv(tmp_path, values):
    smiles = ["CCO", "CCC", "CCN", "c1ccccc1", "CC(=O)O", "CCCl", "CO", "CCCC", "OCCO", "CC#N"]
    return _csv(tmp_path / "mols.csv", [[s, v] for s, v in zip(smiles, values)])


TINY = ["--hidden-size", "8", "--ema-decay", "0", "--epochs", "1", "--no-progress"]


def test_classification_on_continuous_targets_is_refused(tmp_path, capsys):
    data = _small_csv(tmp_path, ["0", "1", "0.5", "1", "0", "1", "0", "1", "0", "1"])
    flags = ["molprop", "train", "--data", str(data), "--target-column", "y", "--task", "classification", *TINY]
    assert main([*flags, "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert "needs 0/1 targets, but row 4 has 0.5 in 'y'" in error and "--task regression" in error
    assert not (tmp_path / "r").exists()


def test_same_target_column_twice_is_refused_by_the_cli(tmp_path, capsys):
    data = _small_csv(tmp_path, [str(v) for v in range(10)])
    flags = ["molprop", "train", "--data", str(data), "--target-column", "y", "--target-column", "y", *TINY]
    assert main([*flags, "--out", str(tmp_path / "r")]) == 2
    assert "--target-column 'y' is given more than once" in capsys.readouterr().err


def test_split_indices_with_an_empty_test_split_is_refused(tmp_path, capsys):
    data = _small_csv(tmp_path, [str(v) for v in range(10)])
    (tmp_path / "split.json").write_text(json.dumps({"train": list(range(8)), "val": [8, 9], "test": []}))
    flags = ["molprop", "train", "--data", str(data), "--target-column", "y", *TINY]
    assert main([*flags, "--split-indices", str(tmp_path / "split.json"), "--out", str(tmp_path / "r")]) == 2
    assert "split.json: the split leaves no molecules in 'test'" in capsys.readouterr().err


def test_split_indices_refer_to_csv_rows_whatever_is_skipped(tmp_path, caplog):
    rows = [["CCO", "1"], ["C1CC", "2"], ["CCC", "3"], ["CCN", "4"], ["c1ccccc1", "5"], ["CO", "6"], ["CCCC", "7"]]
    data = _csv(tmp_path / "mols.csv", rows)
    (tmp_path / "split.json").write_text(json.dumps({"train": [0, 1, 2, 3], "val": [4], "test": [5, 6]}))
    config = MolpropConfig(
        data=str(data),
        target_columns=("y",),
        skip_invalid=True,
        split_indices=str(tmp_path / "split.json"),
        train=_train(epochs=1),
        **SMALL,
    )
    with caplog.at_level("WARNING"):
        metrics = train(config, tmp_path / "run")
    assert metrics["num_molecules"] == {"train": 3, "val": 1, "test": 2}  # row 1 (line 3) was skipped
    assert "left out of the split (1 from train)" in caplog.text
    written = list(csv.DictReader((tmp_path / "run" / "predictions.csv").open()))
    assert {(r["split"], r["smiles"]) for r in written} == {
        ("train", "CCO"), ("train", "CCC"), ("train", "CCN"), ("val", "c1ccccc1"), ("test", "CO"), ("test", "CCCC")
    }  # fmt: skip


def test_split_indices_cannot_be_combined_with_sample():
    with pytest.raises(ValueError, match="cannot be combined with --sample"):
        MolpropConfig(dataset="esol", sample=10, split_indices="split.json")


# ---------------------------------------------------------------- ensembles, uncertainty, features, several molecules
TINY_SIZES = dict(hidden_size=8, edge_hidden_size=8, readout_hidden_size=16, rounds=2)
ESOL_CSV = "esol/delaney-processed.csv"


@contextlib.contextmanager
def _one_thread():
    """One intra-op thread while training (tests/conftest.py's one_thread, for module-scoped fixtures)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _data_dir() -> Path:
    return Path(os.environ.get("STRUCTNETS_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))


def _tiny(**fields) -> MolpropConfig:
    """ESOL's first 60 molecules (48/6/6), a tiny model, 2 epochs."""
    fields.setdefault("train", _train())
    return MolpropConfig(dataset="esol", data_dir=str(_data_dir()), limit=60, **TINY_SIZES, **fields)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Trains each named config once for the module: ``tiny_runs(name, config) -> (metrics, run_dir)``."""
    done: dict[str, tuple[dict, Path]] = {}
    root = tmp_path_factory.mktemp("tiny")

    def run(name: str, config: MolpropConfig) -> tuple[dict, Path]:
        if name not in done:
            with _one_thread():
                done[name] = (train(config, root / name), root / name)
        return done[name]

    return run


def _rows(run: Path, split: str | None = None) -> list[dict[str, str]]:
    with (run / "predictions.csv").open(newline="") as handle:
        return [r for r in csv.DictReader(handle) if split is None or r["split"] == split]


def _column(rows, name) -> torch.Tensor:
    return torch.tensor([float(r[name]) for r in rows], dtype=torch.float64)


def _member_predictions(run: Path, smiles: list[str]) -> list[torch.Tensor]:
    """Each member's prediction of ``smiles`` in the target's units, computed here from its weights."""
    trained = load_run(run)
    graphs = [graph_from_smiles(s, trained.featurizer) for s in smiles]
    scaler = Scaler.from_state_dict(trained.extra["scaler"])
    counts = composition(graphs, trained.featurizer)
    batch = Batch.from_data_list(graphs)
    with torch.no_grad():
        return [scaler.inverse(member(batch).double(), counts)[:, 0] for member in trained.members]


def test_an_ensemble_of_one_is_the_single_model(tiny_runs):
    _, single = tiny_runs("single", _tiny())
    one, run = tiny_runs("one", _tiny(ensemble_size=1, uncertainty_method="none"))
    assert (run / "predictions.csv").read_bytes() == (single / "predictions.csv").read_bytes()
    assert one["test"] == json.loads((single / "metrics.json").read_text())["test"]
    assert not (run / "model_1.pt").exists() and "members" not in one and one["uncertainty_method"] == "none"


def test_an_ensembles_first_member_is_the_single_run_and_the_prediction_their_mean(tiny_runs):
    _, single = tiny_runs("single", _tiny())
    metrics, run = tiny_runs("ensemble", _tiny(ensemble_size=2))
    assert metrics["ensemble_size"] == 2 and metrics["uncertainty_method"] == "ensemble"
    assert len(metrics["members"]) == 2 and (run / "model_1.pt").is_file()
    first, _ = load_model(run / "model.pt", task="molprop")
    second, checkpoint = load_model(run / "model_1.pt", task="molprop")
    alone, _ = load_model(single, task="molprop")
    assert checkpoint.extra["member"] == 1 and checkpoint.extra["ensemble_size"] == 2
    assert first.state_dict().keys() == alone.state_dict().keys()
    for key, value in alone.state_dict().items():
        assert torch.equal(first.state_dict()[key], value), key  # same seed, same weights
    assert not all(torch.equal(second.state_dict()[k], v) for k, v in first.state_dict().items())
    rows = _rows(run)
    assert [(r["split"], r["smiles"]) for r in rows] == [(r["split"], r["smiles"]) for r in _rows(single)]
    p0, p1 = _member_predictions(run, [r["smiles"] for r in rows])
    close = dict(rtol=1e-5, atol=1e-5)
    assert_close(p0, _column(_rows(single), f"{TARGET}_pred"), **close)  # member 0 predicts as the single run
    assert_close(_column(rows, f"{TARGET}_pred"), (p0 + p1) / 2, **close)
    # The population std of two values is half their distance.
    assert_close(_column(rows, f"{TARGET}_std"), (p0 - p1).abs() / 2, **close)
    assert bool((_column(rows, f"{TARGET}_std") > 0).all())


@pytest.mark.parametrize("method", ["mve", "evidential-total", "dropout"])
def test_uncertainty_methods_give_a_positive_std_and_its_metrics(tiny_runs, method, tmp_path):
    metrics, run = tiny_runs(method, _tiny(uncertainty_method=method))
    assert metrics["uncertainty_method"] == method
    rows = _rows(run)
    std = _column(rows, f"{TARGET}_std")
    assert bool(torch.isfinite(std).all()) and bool((std > 0).all())
    written = json.loads((run / "metrics.json").read_text())
    for split in ("val", "test"):
        values = written[split][TARGET]
        assert {"rmse", "nll", "miscalibration_area", "ence", "spearman"} <= set(values)
        assert all(math.isfinite(values[k]) for k in ("nll", "miscalibration_area", "ence", "spearman"))
        assert 0 <= values["miscalibration_area"] <= 0.5
    # predict gives the run's own numbers back, std included (dropout: the same seeded passes).
    test = _rows(run, "test")
    data = _csv(tmp_path / "test.csv", [[r["smiles"]] for r in test], header=("smiles",))
    predict(run, data, "smiles", tmp_path / "out.csv")
    again = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert list(again[0])[:3] == [f"{TARGET}_pred", f"{TARGET}_std", "error"]
    for name in (f"{TARGET}_pred", f"{TARGET}_std"):
        assert_close(_column(again, name), _column(test, name), rtol=1e-5, atol=1e-6)


def test_dropout_spread_comes_from_the_dropout_passes(tiny_runs):
    """With Monte Carlo dropout the mean of the passes is not the deterministic prediction."""
    _, run = tiny_runs("dropout", _tiny(uncertainty_method="dropout"))
    rows = _rows(run, "test")
    (deterministic,) = _member_predictions(run, [r["smiles"] for r in rows])
    assert not torch.allclose(_column(rows, f"{TARGET}_pred"), deterministic, rtol=1e-4, atol=1e-4)


def test_zscaling_rescales_the_std_by_the_validation_fit(tiny_runs):
    plain, mve = tiny_runs("mve", _tiny(uncertainty_method="mve"))
    metrics, run = tiny_runs("zscaling", _tiny(uncertainty_method="mve", calibration_method="zscaling"))
    calibration = json.loads((run / "metrics.json").read_text())["calibration"]
    assert calibration["method"] == "zscaling" and len(calibration["scale"]) == 1
    scale = calibration["scale"][0]
    # The same weights as the uncalibrated run: its metrics are the "uncalibrated" entry.
    assert metrics["uncalibrated"]["test"] == plain["test"]
    assert metrics["test"][TARGET]["rmse"] == plain["test"][TARGET]["rmse"]
    assert metrics["test"][TARGET]["nll"] != plain["test"][TARGET]["nll"]
    before, after = _rows(mve), _rows(run)
    assert_close(_column(after, f"{TARGET}_pred"), _column(before, f"{TARGET}_pred"), rtol=0, atol=0)
    assert_close(_column(after, f"{TARGET}_std"), scale * _column(before, f"{TARGET}_std"), rtol=2e-5, atol=1e-6)
    # The scale is the root mean squared z-score on the validation split.
    val = _rows(mve, "val")
    z = (_column(val, f"{TARGET}_true") - _column(val, f"{TARGET}_pred")) / _column(val, f"{TARGET}_std")
    assert scale == pytest.approx(float(z.square().mean().sqrt()), rel=1e-4)
    assert load_model(run, task="molprop")[1].extra["calibration"] == calibration


def test_conformal_calibration_adds_intervals_and_their_coverage(tiny_runs, tmp_path):
    metrics, run = tiny_runs(
        "conformal",
        _tiny(uncertainty_method="mve", calibration_method="conformal-regression", calibration_coverage=0.8),
    )
    calibration = metrics["calibration"]
    assert calibration["method"] == "conformal-regression" and calibration["coverage"] == 0.8
    quantile = calibration["quantile"][0]
    assert quantile is not None and quantile > 0  # 6 validation molecules suffice for 0.8
    rows = _rows(run)
    pred, std = _column(rows, f"{TARGET}_pred"), _column(rows, f"{TARGET}_std")
    lower, upper = _column(rows, f"{TARGET}_lower"), _column(rows, f"{TARGET}_upper")
    assert_close(upper - pred, quantile * std, rtol=1e-4, atol=1e-4)  # normalised by the std
    assert_close(pred - lower, quantile * std, rtol=1e-4, atol=1e-4)
    test = _rows(run, "test")
    inside = [float(r[f"{TARGET}_lower"]) <= float(r[f"{TARGET}_true"]) <= float(r[f"{TARGET}_upper"]) for r in test]
    values = metrics["test"][TARGET]
    assert values["coverage"] == pytest.approx(sum(inside) / len(inside))
    assert values["interval_width"] == pytest.approx(float((upper - lower)[-len(test) :].mean()), rel=1e-4)
    assert "uncalibrated" in metrics and "coverage" not in metrics["uncalibrated"]["test"][TARGET]
    data = _csv(tmp_path / "test.csv", [[r["smiles"]] for r in test], header=("smiles",))
    predict(run, data, "smiles", tmp_path / "out.csv")
    again = list(csv.DictReader((tmp_path / "out.csv").open()))
    names = [f"{TARGET}_{part}" for part in ("pred", "std", "lower", "upper")]
    assert list(again[0]) == [*names, "error", "smiles"]
    for name in names:
        assert_close(_column(again, name), _column(test, name), rtol=1e-5, atol=1e-5)


def test_conformal_calibration_without_an_uncertainty_gives_plain_intervals(tiny_runs, tmp_path):
    metrics, run = tiny_runs("plain-conformal", _tiny(calibration_method="conformal", calibration_coverage=0.8))
    assert metrics["calibration"]["normalized"] is False
    rows = _rows(run)
    assert f"{TARGET}_std" not in rows[0] and f"{TARGET}_lower" in rows[0]
    half = _column(rows, f"{TARGET}_upper") - _column(rows, f"{TARGET}_pred")
    assert_close(half, torch.full_like(half, metrics["calibration"]["quantile"][0]), rtol=1e-4, atol=1e-4)
    assert set(metrics["test"][TARGET]) == {"rmse", "mae", "r2", "coverage", "interval_width"}
    data = _csv(tmp_path / "new.csv", [["CCO"]], header=("smiles",))
    predict(run, data, "smiles", tmp_path / "out.csv")
    assert next(csv.reader((tmp_path / "out.csv").open())) == [
        f"{TARGET}_pred", f"{TARGET}_lower", f"{TARGET}_upper", "error", "smiles"
    ]  # fmt: skip


def _esol_smiles(count: int, start: int = 0) -> list[tuple[str, str]]:
    """ESOL's SMILES and measured solubility, rows start .. start + count."""
    with (_data_dir() / ESOL_CSV).open(newline="") as handle:
        rows = list(csv.DictReader(handle))[start : start + count]
    return [(r["smiles"].strip(), r[TARGET]) for r in rows]


@pytest.fixture(scope="module")
def featured(tmp_path_factory):
    """A 40-row CSV, 2 random descriptors per row, and a run with morgan bits, rdkit 2D descriptors and them."""
    folder = tmp_path_factory.mktemp("featured")
    data = _csv(folder / "mols.csv", _esol_smiles(40))
    values = torch.randn(40, 2, generator=torch.Generator().manual_seed(3)).tolist()
    descriptors = _csv(folder / "descriptors.csv", [[f"{a:.6f}", f"{b:.6f}"] for a, b in values], header=("d1", "d2"))
    config = MolpropConfig(
        data=str(data),
        target_columns=("y",),
        molecule_featurizers=("morgan_binary", "rdkit_2d"),
        descriptors_path=str(descriptors),
        train=_train(),
        **TINY_SIZES,
    )
    with _one_thread():
        metrics = train(config, folder / "run")
    return config, metrics, folder


def test_computed_and_user_features_train_and_predict(featured, tmp_path, one_thread):
    config, metrics, folder = featured
    run, data, descriptors = folder / "run", folder / "mols.csv", folder / "descriptors.csv"
    width = 2048 + len(rdkit_descriptor_names()) + 2
    assert metrics["features"]["count"] == width
    model, checkpoint = load_model(run, task="molprop")
    assert model.config.extra_features == width and checkpoint.extra["feature_names"][-2:] == ["d1", "d2"]
    assert math.isfinite(metrics["test"]["y"]["rmse"])
    # predict, given the rows' descriptors, gives the run's predictions of the same rows.
    assert predict(run, data, "smiles", tmp_path / "out.csv", descriptors_path=descriptors) == 0
    again = list(csv.DictReader((tmp_path / "out.csv").open()))
    reported = {int(r["row"]): float(r["y_pred"]) for r in _rows(run)}
    for line, row in enumerate(again, start=2):
        assert float(row["y_pred"]) == pytest.approx(reported[line], rel=1e-5, abs=1e-5)
    # The descriptors are used: other values, other predictions.
    values = torch.randn(40, 2).tolist()
    other = _csv(tmp_path / "other.csv", [[f"{a:.3f}", f"{b:.3f}"] for a, b in values], header=("d1", "d2"))
    predict(run, data, "smiles", tmp_path / "other_out.csv", descriptors_path=other)
    changed = list(csv.DictReader((tmp_path / "other_out.csv").open()))
    assert [r["y_pred"] for r in changed] != [r["y_pred"] for r in again]
    with pytest.raises(ValueError, match="trained with user descriptors .* give this file's with --descriptors-path"):
        predict(run, data, "smiles", tmp_path / "none.csv")
    short = _csv(tmp_path / "short.csv", values[:10], header=("d1", "d2"))
    with pytest.raises(ValueError, match="10 data rows of descriptors, but the data file has 40"):
        predict(run, data, "smiles", tmp_path / "none.csv", descriptors_path=short)


def test_a_nan_user_descriptor_is_refused_naming_its_line(featured, tmp_path):
    config, _, folder = featured
    lines = (folder / "descriptors.csv").read_text().splitlines()
    lines[4] = "nan,0.5"  # the fourth data row, line 5
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 5, column 1 \('d1'\): 'nan' is not a finite number"):
        train(dataclasses.replace(config, descriptors_path=str(tmp_path / "bad.csv")), tmp_path / "run")
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """40 rows ``solute,solvent,y`` of ESOL molecules, and a run on them per encoder setting."""
    folder = tmp_path_factory.mktemp("pairs")
    first, second = _esol_smiles(40), _esol_smiles(40, start=40)
    rows = [[a, b, f"{float(y) - 0.05 * len(b):.3f}"] for (a, y), (b, _) in zip(first, second)]
    data = _csv(folder / "pairs.csv", rows, header=("solute", "solvent", "y"))
    runs = {}
    for shared in (False, True):
        config = MolpropConfig(
            data=str(data),
            smiles_columns=("solute", "solvent"),
            shared_encoder=shared,
            target_columns=("y",),
            train=_train(),
            **TINY_SIZES,
        )
        with _one_thread():
            runs[shared] = (train(config, folder / f"shared-{shared}"), folder / f"shared-{shared}")
    return data, rows, runs


@pytest.mark.parametrize("shared", [False, True])
def test_rows_of_two_molecules_train_and_predict_in_order(pairs, shared, tmp_path, one_thread):
    data, rows, runs = pairs
    metrics, run = runs[shared]
    model, _ = load_model(run, task="molprop")
    assert isinstance(model, MultiMPNN) and len(model.encoders) == (1 if shared else 2)
    assert math.isfinite(metrics["test"]["y"]["rmse"])
    written = _rows(run)
    assert list(written[0])[:4] == ["split", "row", "smiles", "smiles_2"]
    assert {(r["smiles"], r["smiles_2"]) for r in written} == {(a, b) for a, b, _ in rows}
    # predict reads the same columns: every row back, in order, other columns kept.
    new = [["p", rows[3][0], rows[3][1]], ["q", "CCO", "O"], ["r", rows[0][0], rows[0][1]]]
    _csv(tmp_path / "new.csv", new, header=("id", "solute", "solvent"))
    assert predict(run, tmp_path / "new.csv", None, tmp_path / "out.csv") == 0
    out = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert [(r["id"], r["solute"], r["solvent"]) for r in out] == [tuple(r) for r in new]
    reported = {(r["smiles"], r["smiles_2"]): float(r["y_pred"]) for r in written}
    assert float(out[0]["y_pred"]) == pytest.approx(reported[(rows[3][0], rows[3][1])], rel=1e-5, abs=1e-5)
    assert float(out[2]["y_pred"]) == pytest.approx(reported[(rows[0][0], rows[0][1])], rel=1e-5, abs=1e-5)
    with pytest.raises(ValueError, match=r"reads 2 molecule\(s\) a row .* names 1: \['solute'\]"):
        predict(run, tmp_path / "new.csv", "solute", tmp_path / "one.csv")


def test_a_bad_second_molecule_is_an_error_row(pairs, tmp_path):
    _, rows, runs = pairs
    _, run = runs[False]
    new = [[rows[0][0], rows[0][1]], ["CCO", "C1CC"], ["CCO", "CC"]]
    _csv(tmp_path / "new.csv", new, header=("solute", "solvent"))
    assert predict(run, tmp_path / "new.csv", ["solute", "solvent"], tmp_path / "out.csv") == 1
    out = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert [(r["solute"], r["solvent"]) for r in out] == [tuple(r) for r in new]
    assert out[0]["error"] == out[2]["error"] == "" and out[1]["y_pred"] == ""
    assert "C1CC" in out[1]["error"]


def test_a_bad_second_molecule_error_names_its_column(pairs, tmp_path):
    _, _, runs = pairs
    _csv(tmp_path / "new.csv", [["CCO", "C1CC"]], header=("solute", "solvent"))
    predict(runs[False][1], tmp_path / "new.csv", None, tmp_path / "out.csv")
    (row,) = csv.DictReader((tmp_path / "out.csv").open())
    assert "solvent" in row["error"]  # as training's error does: "... (column 'solvent')"


def test_replicates_write_a_summary_of_their_metrics(tmp_path, one_thread):
    summary = train(_tiny(num_replicates=2, train=_train(epochs=1)), tmp_path / "runs")
    assert json.loads((tmp_path / "runs" / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["num_replicates"] == 2 and summary["seeds"] == [0, 1]
    runs = [json.loads((tmp_path / "runs" / f"replicate_{k}" / "metrics.json").read_text()) for k in range(2)]
    assert [r["config"]["train"]["seed"] for r in runs] == [0, 1]
    rmse = summary["test"][TARGET]["rmse"]
    assert rmse["values"] == [r["test"][TARGET]["rmse"] for r in runs]
    assert rmse["mean"] == pytest.approx(sum(rmse["values"]) / 2)
    assert rmse["std"] == pytest.approx(abs(rmse["values"][0] - rmse["values"][1]) / math.sqrt(2))  # ddof 1
    tests = [{r["smiles"] for r in _rows(tmp_path / "runs" / f"replicate_{k}", "test")} for k in range(2)]
    assert tests[0] != tests[1]  # a new random split per replicate


def test_uncertainty_config_errors():
    with pytest.raises(ValueError, match="ensemble needs --ensemble-size 2 or more"):
        _tiny(uncertainty_method="ensemble")
    with pytest.raises(ValueError, match="--uncertainty-method mve is for regression"):
        _tiny(uncertainty_method="mve", task="classification")
    with pytest.raises(ValueError, match="zscaling rescales a predicted standard deviation"):
        _tiny(calibration_method="zscaling")
    with pytest.raises(ValueError, match="--num-replicates draws a new random split per replicate"):
        _tiny(num_replicates=2, split_indices="split.json")
    with pytest.raises(ValueError, match="--ensemble-size must be at least 1, got 0"):
        _tiny(ensemble_size=0)
    with pytest.raises(ValueError, match="--shared-encoder shares one encoder"):
        _tiny(shared_encoder=True)
