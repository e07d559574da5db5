"""Using a trained run: learned fingerprints row for row, and the CLI under chemprop's flag names."""

import contextlib
import csv
import json
import os
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from torch_geometric.data import Batch

from structnets.chem.featurize import graph_from_smiles
from structnets.chem.molprop import MolpropConfig, train, training
from structnets.chem.molprop_predict import fingerprint, load_run
from structnets.cli import main
from structnets.models import MultiMPNN

TINY = dict(hidden_size=8, edge_hidden_size=8, readout_hidden_size=16, rounds=2)
TARGET = "measured log solubility in mols per litre"
TINY_FLAGS = ["--hidden-size", "8", "--edge-hidden-size", "8", "--readout-hidden-size", "16", "--rounds", "2"]
TINY_FLAGS += ["--epochs", "1", "--batch-size", "16", "--no-progress"]
CLOSE = dict(rtol=1e-5, atol=1e-6)  # the CSV keeps 6 significant digits


def _data_dir() -> Path:
    return Path(os.environ.get("STRUCTNETS_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))


@contextlib.contextmanager
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _esol(count: int, start: int = 0) -> list[tuple[str, str]]:
    with (_data_dir() / "esol" / "delaney-processed.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))[start : start + count]
    return [(r["smiles"].strip(), r[TARGET]) for r in rows]


def _write(path: Path, rows, header) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _records(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A one-model run and an ensemble of two on ESOL's first 60 molecules."""
    root = tmp_path_factory.mktemp("runs")
    schedule = training(epochs=2, batch_size=16, progress=False)
    config = MolpropConfig(dataset="esol", data_dir=str(_data_dir()), limit=60, train=schedule, **TINY)
    with _one_thread():
        train(config, root / "single")
        train(MolpropConfig(**{**config.__dict__, "ensemble_size": 2}), root / "ensemble")
    return root / "single", root / "ensemble"


def _fingerprints(model, smiles: list[str]) -> torch.Tensor:
    graphs = [graph_from_smiles(s) for s in smiles]
    with torch.no_grad():
        return model.fingerprint(Batch.from_data_list(graphs))


def test_fingerprint_keeps_every_record_and_writes_the_models_read_out(runs, tmp_path, capsys):
    single, _ = runs
    raw = 'id,smiles,note\r\na,CCO,x\r\nb,not-a-smiles,y\r\n\r\nc,c1ccccc1O,"q,z"\r\nd,CC(=O)N,w\r\n'
    (tmp_path / "in.csv").write_bytes(raw.encode())
    code = main(["molprop", "fingerprint", "--model", str(single), "--data", str(tmp_path / "in.csv")]
                + ["--out", str(tmp_path / "fp.csv")])  # fmt: skip
    assert code == 0 and "1 row(s) could not be featurised" in capsys.readouterr().out
    model = load_run(single).members[0]
    width = model.config.fingerprint_size
    assert width == 6 * 8  # Set2Set's 4 d and the summed 2 d
    given, written = _records(tmp_path / "in.csv"), _records(tmp_path / "fp.csv")
    assert len(written) == len(given)
    assert written[0] == [f"fp_{k}" for k in range(width)] + ["error"] + given[0]
    assert [r[width + 1 :] for r in written[1:]] == given[1:]  # every input field, the blank line too
    by_id = {r[width + 1]: r[: width + 1] for r in written[1:] if r}
    assert by_id["b"][:width] == [""] * width and "not-a-smiles" in by_id["b"][width]
    expected = _fingerprints(model, ["CCO", "c1ccccc1O", "CC(=O)N"])
    for k, name in enumerate("acd"):
        assert by_id[name][width] == ""
        values = torch.tensor([float(v) for v in by_id[name][:width]], dtype=torch.float64)
        assert_close(values, expected[k].double(), **CLOSE)


def test_fingerprint_of_a_chosen_ensemble_member(runs, tmp_path, capsys):
    _, ensemble = runs
    data = _write(tmp_path / "in.csv", [["CCO"], ["CCCN"]], ["smiles"])
    members = load_run(ensemble).members
    read = []
    for member in (0, 1):
        out = tmp_path / f"fp{member}.csv"
        assert fingerprint(ensemble, data, out, member=member) == 0
        read.append(torch.tensor([[float(v) for v in r[:-2]] for r in _records(out)[1:]], dtype=torch.float64))
        assert_close(read[member], _fingerprints(members[member], ["CCO", "CCCN"]).double(), **CLOSE)
    assert not torch.allclose(read[0], read[1])
    code = main(["molprop", "fingerprint", "--model", str(ensemble), "--data", str(data), "--out", "x.csv"]
                + ["--member", "2"])  # fmt: skip
    assert code == 2 and "--member 2: the run has 2 member(s), 0 .. 1" in capsys.readouterr().err


def test_fingerprint_refuses_its_own_columns_and_its_input_as_out(runs, tmp_path):
    single, _ = runs
    data = _write(tmp_path / "in.csv", [["CCO", "1"]], ["smiles", "fp_0"])
    with pytest.raises(ValueError, match=r"already has column\(s\) \['fp_0'\]"):
        fingerprint(single, data, tmp_path / "out.csv")
    with pytest.raises(ValueError, match="is the input file"):
        fingerprint(single, data, data)
    assert not (tmp_path / "out.csv").exists()


def test_fingerprint_of_rows_of_two_molecules_joins_each_encoders(tmp_path, one_thread):
    pairs = [[a, b, y] for (a, y), (b, _) in zip(_esol(30), _esol(30, start=30))]
    data = _write(tmp_path / "pairs.csv", pairs, ["solute", "solvent", "y"])
    config = MolpropConfig(
        data=str(data), smiles_columns=("solute", "solvent"), target_columns=("y",),
        train=training(epochs=1, batch_size=16, progress=False), **TINY,
    )  # fmt: skip
    train(config, tmp_path / "run")
    model = load_run(tmp_path / "run").members[0]
    assert isinstance(model, MultiMPNN)
    new = _write(tmp_path / "new.csv", [["CCO", "O"], ["CC", "bad("], ["c1ccccc1", "CCl"]], ["solute", "solvent"])
    assert fingerprint(tmp_path / "run", new, tmp_path / "fp.csv") == 1
    written = _records(tmp_path / "fp.csv")
    width = model.config.fingerprint_size
    assert width == 2 * model.config.encoder.fingerprint_size and written[0][width:] == ["error", "solute", "solvent"]
    assert written[2][:width] == [""] * width and written[2][width]
    got = torch.tensor([[float(v) for v in written[k][:width]] for k in (1, 3)], dtype=torch.float64)
    solutes, solvents = model.encoders[0], model.encoders[1]
    expected = torch.cat([_fingerprints(solutes, ["CCO", "c1ccccc1"]), _fingerprints(solvents, ["O", "CCl"])], -1)
    assert_close(got, expected.double(), **CLOSE)


def test_predict_under_chemprops_flag_names_writes_the_same_file(runs, tmp_path):
    single, ensemble = runs
    data = _write(tmp_path / "in.csv", [["CCO", "a"], ["bad(", "b"], ["c1ccccc1", "c"]], ["smiles", "name"])
    for run in (single, ensemble):
        ours = ["molprop", "predict", "--model", str(run), "--data", str(data), "--out", str(tmp_path / "ours.csv")]
        chemprop = ["molprop", "predict", "--model-paths", str(run), "--test-path", str(data)]
        chemprop += ["--preds-path", str(tmp_path / "theirs.csv"), "--smiles-columns", "smiles"]
        assert main(ours) == 0 and main(chemprop) == 0
        assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "theirs.csv").read_bytes()
        header = _records(tmp_path / "ours.csv")[0]
        std = [f"{TARGET}_std"] if run == ensemble else []
        assert header == [f"{TARGET}_pred", *std, "error", "smiles", "name"]


def test_train_under_chemprops_flag_names(tmp_path, one_thread):
    data = _write(tmp_path / "mols.csv", [list(r) for r in _esol(30)], ["smiles", "y"])
    chemprop = ["molprop", "train", "--data-path", str(data), "--smiles-columns", "smiles"]
    chemprop += ["--target-columns", "y", "--output-dir", str(tmp_path / "theirs"), *TINY_FLAGS]
    ours = ["molprop", "train", "--data", str(data), "--smiles-column", "smiles", "--target-column", "y"]
    ours += ["--out", str(tmp_path / "ours"), *TINY_FLAGS]
    assert main(chemprop) == 0 and main(ours) == 0
    theirs = json.loads((tmp_path / "theirs" / "metrics.json").read_text())
    assert theirs["config"]["data"] == str(data) and theirs["config"]["target_columns"] == ["y"]
    assert theirs["config"]["smiles_columns"] == ["smiles"] and theirs["num_molecules"]["train"] == 24
    assert theirs["test"] == json.loads((tmp_path / "ours" / "metrics.json").read_text())["test"]
    assert json.loads((tmp_path / "theirs" / "run.json").read_text())["status"] == "complete"
