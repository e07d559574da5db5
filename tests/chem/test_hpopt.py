import argparse
import dataclasses
import json
import os
from pathlib import Path

import pytest

from structnets.chem import hpopt
from structnets.chem.hpopt import SearchSpace, register_hpopt, search, validation_score
from structnets.chem.metrics import Task
from structnets.chem.molprop_config import MolpropConfig, training
from structnets.train.checkpoint import load_model, open_run
from structnets.train.config import add_arguments, from_args, from_dict
from structnets.train.engine import NonFiniteLossError

DATA_DIR = os.environ.get("STRUCTNETS_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))
SPACE = SearchSpace()


def _base(**changes) -> MolpropConfig:
    config = MolpropConfig(
        dataset="esol",
        limit=60,
        hidden_size=8,
        edge_hidden_size=8,
        readout_hidden_size=16,
        train=training(epochs=1, batch_size=16, progress=False),
        data_dir=DATA_DIR,
    )
    return dataclasses.replace(config, **changes)


def _in_space(params: dict) -> bool:
    return (
        set(params) == {"hidden_size", "rounds", "dropout", "lr"}
        and params["hidden_size"] in SPACE.hidden_size
        and SPACE.rounds[0] <= params["rounds"] <= SPACE.rounds[1]
        and isinstance(params["rounds"], int)
        and SPACE.dropout[0] <= params["dropout"] <= SPACE.dropout[1]
        and SPACE.lr[0] <= params["lr"] <= SPACE.lr[1]
    )


class FakeTrain:
    """Stands in for molprop's train: writes a run directory and returns made-up metrics.

    ``val`` and ``test`` map a trial's params to its scores; by default the validation RMSE
    falls with dropout and the test RMSE rises with it, so the two disagree on the best trial.
    """

    def __init__(self, val=None, test=None, fail=None):
        self.val = val or (lambda config: 1.0 - config.dropout)
        self.test = test or (lambda config: config.dropout)
        self.fail = fail or (lambda call: None)
        self.calls = []

    def __call__(self, config, out_dir):
        self.calls.append(config)
        error = self.fail(len(self.calls) - 1)
        if error is not None:
            Path(out_dir).mkdir(parents=True)
            raise error
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "model.pt").write_bytes(b"fake")
        metrics = {
            "val": {"a": {"rmse": self.val(config)}, "b": {"rmse": 2 * self.val(config)}},
            "test": {"a": {"rmse": self.test(config)}, "b": {"rmse": self.test(config)}},
        }
        (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics))
        return metrics


@pytest.fixture(scope="module")
def esol_search(tmp_path_factory):
    """One real search (ESOL, 60 molecules, 3 trials of 1 epoch) shared by the tests that read it."""
    out = tmp_path_factory.mktemp("hpopt") / "search"
    result = search(_base(), out, 3, seed=0)
    return out, result


def test_search_records_every_trial_within_the_space(esol_search):
    out, result = esol_search
    on_disk = json.loads((out / "hpopt.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert on_disk["num_trials"] == 3 and len(on_disk["trials"]) == 3
    assert on_disk["direction"] == "minimize" and "rmse" in on_disk["metric"]
    for trial in on_disk["trials"]:
        assert trial["state"] == "COMPLETE" and _in_space(trial["params"])
    assert _in_space(on_disk["best_params"])


def test_best_score_is_the_lowest_validation_rmse(esol_search):
    out, result = esol_search
    # The score of a trial is its mean validation RMSE over targets (ESOL has one).
    for trial in result["trials"]:
        assert trial["score"] == pytest.approx(sum(trial["val"].values()) / len(trial["val"]))
    scores = [t["score"] for t in result["trials"]]
    assert result["best_score"] == min(scores)
    assert result["trials"][result["best_trial"]]["params"] == result["best_params"]
    # ... and it is the kept run's own validation RMSE.
    metrics = json.loads((out / "best" / "metrics.json").read_text())
    assert result["best_score"] == pytest.approx(validation_score(metrics, Task.REGRESSION))


def test_best_config_round_trips_and_holds_the_best_params(esol_search):
    out, result = esol_search
    config = from_dict(MolpropConfig, json.loads((out / "best_config.json").read_text()))
    best = result["best_params"]
    assert (config.hidden_size, config.rounds, config.dropout, config.train.lr) == (
        best["hidden_size"],
        best["rounds"],
        best["dropout"],
        best["lr"],
    )
    assert config == hpopt.apply(_base(), best)
    # The kept run was trained with that config.
    assert json.loads((out / "best" / "metrics.json").read_text())["config"] == json.loads(
        (out / "best_config.json").read_text()
    )


def test_only_the_best_run_is_kept_and_it_is_a_usable_model(esol_search):
    out, result = esol_search
    assert (out / "best" / "model.pt").is_file()
    assert not (out / "trials").exists()
    open_run(out / "best", task="molprop")
    model, _ = load_model(out / "best", task="molprop")
    assert model.config.hidden_size == result["best_params"]["hidden_size"]


def test_an_out_dir_with_a_finished_search_is_refused(esol_search):
    out, _ = esol_search
    with pytest.raises(ValueError, match="hpopt.json exists"):
        search(_base(), out, 1)


def test_the_score_is_the_validation_metric_never_the_test_metric(monkeypatch, tmp_path):
    fake = FakeTrain()
    monkeypatch.setattr(hpopt, "train", fake)
    result = search(_base(), tmp_path / "s", 4, seed=1)
    dropouts = [t["params"]["dropout"] for t in result["trials"]]
    val_best = max(range(4), key=lambda k: dropouts[k])  # validation RMSE falls with dropout
    assert result["best_trial"] == val_best != min(range(4), key=lambda k: dropouts[k])
    # Mean over the two targets of the validation RMSE.
    assert result["best_score"] == pytest.approx(1.5 * (1.0 - dropouts[val_best]))
    assert [c.train.lr for c in fake.calls] == [t["params"]["lr"] for t in result["trials"]]
    # The other three runs are gone, the best one is `best`.
    assert json.loads((tmp_path / "s" / "best" / "metrics.json").read_text())["val"]["a"]["rmse"] == pytest.approx(
        1.0 - dropouts[val_best]
    )
    assert not (tmp_path / "s" / "trials").exists()


def test_classification_maximises_the_validation_roc_auc(monkeypatch, tmp_path):
    def fake(config, out_dir):
        Path(out_dir).mkdir(parents=True)
        auc = config.dropout
        # Target b has one class in the validation split: no ROC-AUC, left out of the mean.
        return {"val": {"a": {"roc_auc": auc}, "b": {"roc_auc": float("nan")}}, "test": {"a": {"roc_auc": 1 - auc}}}

    monkeypatch.setattr(hpopt, "train", fake)
    result = search(_base(task=Task.CLASSIFICATION), tmp_path / "s", 3, seed=2)
    assert result["direction"] == "maximize" and "roc_auc" in result["metric"]
    assert result["best_score"] == max(t["params"]["dropout"] for t in result["trials"])


def test_the_same_seed_samples_the_same_params(monkeypatch, tmp_path):
    monkeypatch.setattr(hpopt, "train", FakeTrain())
    runs = [search(_base(), tmp_path / name, 3, seed=seed) for name, seed in (("a", 7), ("b", 7), ("c", 8))]
    params = [[t["params"] for t in run["trials"]] for run in runs]
    assert params[0] == params[1] != params[2]
    assert all(_in_space(p) for p in params[0] + params[2])


def test_keep_runs_keeps_every_trial(monkeypatch, tmp_path):
    monkeypatch.setattr(hpopt, "train", FakeTrain())
    result = search(_base(), tmp_path, 3, keep_runs=True)
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == ["trial_0", "trial_1", "trial_2"]
    assert (tmp_path / "best" / "metrics.json").read_bytes() == (
        tmp_path / "trials" / f"trial_{result['best_trial']}" / "metrics.json"
    ).read_bytes()


def test_a_non_finite_loss_prunes_the_trial_and_the_search_goes_on(monkeypatch, tmp_path):
    fake = FakeTrain(fail=lambda call: NonFiniteLossError("the loss is nan at step 3") if call == 1 else None)
    monkeypatch.setattr(hpopt, "train", fake)
    result = search(_base(), tmp_path, 3)
    states = [t["state"] for t in result["trials"]]
    assert states == ["COMPLETE", "PRUNED", "COMPLETE"]
    pruned = result["trials"][1]
    assert "NonFiniteLossError" in pruned["reason"] and "nan at step 3" in pruned["reason"]
    assert pruned["score"] is None and _in_space(pruned["params"])
    assert result["best_trial"] != 1 and not (tmp_path / "trials").exists()


def test_no_completed_trial_is_an_error_that_gives_the_reasons(monkeypatch, tmp_path):
    monkeypatch.setattr(hpopt, "train", FakeTrain(fail=lambda call: NonFiniteLossError("diverged")))
    with pytest.raises(ValueError, match="no trial completed.*trial 1: NonFiniteLossError: diverged"):
        search(_base(), tmp_path, 2)
    assert not (tmp_path / "hpopt.json").exists()


def test_other_errors_stop_the_search(monkeypatch, tmp_path):
    monkeypatch.setattr(hpopt, "train", FakeTrain(fail=lambda call: RuntimeError("out of memory") if call else None))
    with pytest.raises(RuntimeError, match="out of memory"):
        search(_base(), tmp_path, 3)
    assert not (tmp_path / "hpopt.json").exists()


@pytest.mark.parametrize("num_trials", [0, -1])
def test_fewer_than_one_trial_is_refused(tmp_path, num_trials):
    with pytest.raises(ValueError, match="at least one trial"):
        search(_base(), tmp_path, num_trials)
    assert not any(tmp_path.iterdir())


def test_resuming_and_a_file_as_out_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--resume"):
        search(_base(train=training(epochs=1, resume=tmp_path)), tmp_path / "s", 1)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        search(_base(), tmp_path / "file", 1)


@pytest.mark.parametrize(
    "changes", [{"hidden_size": ()}, {"rounds": (0, 3)}, {"rounds": (4, 3)}, {"dropout": (0.0, 1.0)}, {"lr": (0, 1)}]
)
def test_a_bad_space_is_refused(changes):
    with pytest.raises(ValueError):
        SearchSpace(**changes)


def _parser() -> argparse.ArgumentParser:
    """A tiny molprop: its train flags from the config (what molprop's helpers do), and hpopt."""
    defaults = _base()

    def add_train_flags(parser):
        parser.add_argument("--dataset", default="esol", help="a named dataset")
        add_arguments(parser, MolpropConfig, defaults=defaults, exclude=("schedule", "warmup_steps", "min_lr_ratio"))

    def config_from_args(args):
        return from_args(MolpropConfig, args, defaults=defaults, dataset=args.dataset)

    parser = argparse.ArgumentParser(prog="structnets molprop")
    actions = parser.add_subparsers(dest="action", required=True)
    register_hpopt(actions, add_train_flags, config_from_args)
    return parser


def test_cli_runs_the_search_and_prints_the_best_params(monkeypatch, tmp_path, capsys):
    fake = FakeTrain()
    monkeypatch.setattr(hpopt, "train", fake)
    args = _parser().parse_args(
        ["hpopt", "--num-trials", "2", "--search-seed", "3", "--limit", "40", "--out", str(tmp_path)]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "hpopt.json").read_text())
    assert len(result["trials"]) == 2 and result["seed"] == 3
    assert {c.limit for c in fake.calls} == {40}
    assert f"best trial {result['best_trial']} of 2" in printed and "hidden_size" in printed
    assert str(tmp_path / "hpopt.json") in printed


def test_cli_flags_all_have_help_and_the_defaults():
    parser = _parser()
    hpopt_parser = parser._subparsers._group_actions[0].choices["hpopt"]
    for action in hpopt_parser._actions:
        assert action.help, action.option_strings
    args = parser.parse_args(["hpopt", "--out", "x"])
    assert args.num_trials == 10 and args.search_seed == 0 and args.keep_runs is False
    with pytest.raises(SystemExit):
        parser.parse_args(["hpopt"])  # --out is required
