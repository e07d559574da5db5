"""SST sentiment with the Tree-LSTM classifier through the engine: training, evaluation, the CLI, runs."""

import dataclasses
import json

import pytest

from structnets.cli import main
from structnets.models import TreeClassifier
from structnets.text.sentiment import SentimentConfig, evaluate, load_run, train
from structnets.train.checkpoint import CheckpointError, RunDirectory, load_checkpoint
from structnets.train.config import from_dict
from structnets.train.engine import seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(data_dir, *, limit=60, **train):
    base = SentimentConfig().train
    train = {"epochs": 2, "progress": False, "log_every": 2, **train}
    return SentimentConfig(
        data_dir=data_dir, limit=limit, embedding_size=12, hidden_size=12, train=dataclasses.replace(base, **train)
    )


def test_sst_training_learns_and_evaluates(tmp_path, data_dir):
    config = _config(data_dir, limit=200, epochs=3)
    metrics = train(config, tmp_path / "run")
    assert from_dict(SentimentConfig, load_checkpoint(tmp_path / "run", task="trees").task_config) == config
    losses = [h["train_loss"] for h in metrics["history"] if "train_loss" in h]
    assert losses[-1] < losses[0]
    dev_fine = [h["dev_fine_accuracy"] for h in metrics["history"] if "dev_fine_accuracy" in h]
    assert len(dev_fine) == 3 and metrics["dev"]["fine_accuracy"] == pytest.approx(max(dev_fine))
    assert dev_fine.index(max(dev_fine)) + 1 == metrics["best_epoch"]  # the best dev epoch is kept
    assert set(metrics["dev"]) >= {"fine_accuracy", "binary_accuracy", "unknown_tokens"}
    assert load_checkpoint(tmp_path / "run", task="trees").extra["vocabulary"][0] == "<unk>"
    assert "train_seconds" in json.loads((tmp_path / "run" / "timing.json").read_text())
    result = evaluate(tmp_path / "run", data_dir / "sst" / "dev.txt", tmp_path / "eval")
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk["trees"] == 1101 and on_disk["binary_trees"] == 872
    assert 0 <= result["fine_accuracy"] <= 1 and result["unknown_tokens"] > 0
    with pytest.raises(ValueError, match="is the run directory itself"):
        evaluate(tmp_path / "run", data_dir / "sst" / "dev.txt", tmp_path / "run")


def test_the_embeddings_learn_at_their_own_rate(tmp_path, data_dir):
    config = dataclasses.replace(_config(data_dir, epochs=1), embedding_lr_scale=1e-6)
    train(config, tmp_path / "run")
    model, _ = load_run(tmp_path / "run")
    seed_everything(config.train.seed)
    initial = TreeClassifier(model.config)
    assert (model.embedding.weight - initial.embedding.weight).abs().max() < 1e-5
    assert (model.output.weight - initial.output.weight).abs().max() > 1e-3


def test_labels_and_arity_are_checked(tmp_path, data_dir):
    (tmp_path / "wide.txt").write_text("(2 (2 a) (2 b) (2 c))\n")
    (tmp_path / "label.txt").write_text("(7 (2 a) (2 b))\n")
    dev = data_dir / "sst" / "dev.txt"
    with pytest.raises(ValueError, match="wide.txt:1: a node has 3 children; the binary Tree-LSTM takes 2"):
        train(SentimentConfig(data=tmp_path / "wide.txt", dev=dev), tmp_path / "r")
    with pytest.raises(ValueError, match="label.txt:1: SST labels must be integers 0-4"):
        train(SentimentConfig(data=tmp_path / "label.txt", dev=dev), tmp_path / "r")
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="is a file"):
        train(SentimentConfig(data=tmp_path / "label.txt", dev=dev), tmp_path / "file")


def test_same_seed_same_metrics_and_resume_continues(tmp_path, data_dir):
    train(_config(data_dir), tmp_path / "a")
    train(_config(data_dir), tmp_path / "b")
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    first = train(_config(data_dir, epochs=1), tmp_path / "c")
    resumed = train(_config(data_dir, epochs=2, resume=tmp_path / "c"), tmp_path / "c")
    whole = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert first["epochs"] == 1 and resumed["epochs"] == 2
    # the resumed run goes on from the first epoch's state: the same second epoch as the whole run
    validations = [[h for h in m["history"] if "dev_fine_accuracy" in h] for m in (resumed, whole)]
    assert len(validations[0]) == 2 and validations[0] == validations[1]
    assert resumed["dev"] == whole["dev"]


def test_trees_command_line(tmp_path, data_dir, capsys):
    common = ["--data-dir", str(data_dir), "--limit", "30", "--epochs", "1", "--no-progress"]
    run = str(tmp_path / "run")
    assert main(["trees", "train", *common, "--embedding-size", "8", "--hidden-size", "8", "--out", run]) == 0
    dev = str(data_dir / "sst" / "dev.txt")
    assert main(["trees", "evaluate", "--model", run, "--data", dev, "--out", str(tmp_path / "ev")]) == 0
    assert "binary" in capsys.readouterr().out
    (tmp_path / "bad.txt").write_text("(2 (2 a) (2 b)\n")
    bad = ["trees", "evaluate", "--model", run, "--data", str(tmp_path / "bad.txt")]
    assert main([*bad, "--out", str(tmp_path / "ev2")]) == 2
    assert "bad.txt:1:1: '(' never closed" in capsys.readouterr().err


def test_evaluate_refuses_an_incomplete_run_and_another_task(tmp_path, data_dir, capsys):
    dev = str(data_dir / "sst" / "dev.txt")
    RunDirectory.start(tmp_path / "interrupted", task="trees")  # never finished
    assert main(["trees", "evaluate", "--model", str(tmp_path / "interrupted"), "--data", dev, "--out", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted: the run is incomplete" in err
    other = RunDirectory.start(tmp_path / "other", task="charlm")
    other.finish()
    assert main(["trees", "evaluate", "--model", str(tmp_path / "other"), "--data", dev, "--out", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "other: a run of task 'charlm', but 'trees' was expected" in err
    with pytest.raises(CheckpointError):
        load_run(tmp_path / "other")
