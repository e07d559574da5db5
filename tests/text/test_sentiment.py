"""SST sentiment with the Tree-LSTM classifier through the engine: training, evaluation, the CLI, runs."""

import dataclasses
import json
import re
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from structnets.cli import main
from structnets.models import TreeClassifier
from structnets.text.sentiment import SentimentConfig, evaluate, load_run, train
from structnets.train.checkpoint import CheckpointError, RunDirectory, load_checkpoint
from structnets.train.config import from_dict
from structnets.train.engine import NonFiniteLossError, seed_everything

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
    # only neutral roots: no binary accuracy, written as null (JSON has no NaN) and shown as n/a
    (tmp_path / "neutral.txt").write_text("(2 (2 a) (2 b))\n")
    neutral = ["trees", "evaluate", "--model", run, "--data", str(tmp_path / "neutral.txt")]
    assert main([*neutral, "--out", str(tmp_path / "ev3")]) == 0
    assert "binary n/a (no polar root) (0 trees)" in capsys.readouterr().out
    assert json.loads((tmp_path / "ev3" / "metrics.json").read_text())["binary_accuracy"] is None


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


def _vectors_file(path, bad_value):
    rows = ["the 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8", f", 0 0 0 {bad_value} 0 0 0 0", ". 1 1 1 1 1 1 1 1"]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_sentiment_train_with_non_finite_vectors_exits_2_naming_the_file(tmp_path, data_dir, capsys, value):
    vectors = _vectors_file(tmp_path / "glove.txt", value)
    common = ["--data-dir", str(data_dir), "--limit", "30", "--epochs", "1", "--no-progress"]
    sizes = ["--embedding-size", "8", "--hidden-size", "8", "--vectors", str(vectors)]
    assert main(["trees", "train", *common, *sizes, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("structnets trees: error: ")
    assert f"{vectors}:2: the vector of ',' holds '{value}' (number 4 of 8); word vectors must be finite" in err
    assert not (tmp_path / "run").exists()  # refused before the run directory was started


def test_pretrained_vectors_start_the_embeddings(tmp_path, data_dir):
    vectors = _vectors_file(tmp_path / "glove.txt", "0")
    config = dataclasses.replace(
        _config(data_dir, epochs=1), embedding_lr_scale=1e-6, embedding_size=8, vectors=vectors
    )
    train(config, tmp_path / "run")
    model, vocabulary = load_run(tmp_path / "run")
    weights = model.embedding.weight
    assert weights[vocabulary.id("the")].tolist() == pytest.approx([0.1 * k for k in range(1, 9)], abs=1e-4)
    # a word whose vector is all zeros gets those zeros, not a random start
    assert weights[vocabulary.id(",")].abs().max() < 1e-4
    (tmp_path / "other.txt").write_text("zzyzx 1 2 3 4 5 6 7 8\n")
    with pytest.raises(ValueError, match=r"other.txt: none of its words is in the training vocabulary of \d+"):
        train(dataclasses.replace(config, vectors=tmp_path / "other.txt"), tmp_path / "run2")


def test_a_non_finite_loss_in_the_sentiment_task_stops_with_the_step_named(tmp_path, data_dir, monkeypatch):
    from structnets.text import sentiment

    losses = iter([1.0, float("nan")])
    monkeypatch.setattr(sentiment, "_node_loss", lambda model, batch: model(batch).sum() * 0 + next(losses))
    with pytest.raises(NonFiniteLossError, match=r"trees: the training loss is nan at step 2; nothing was saved"):
        train(_config(data_dir), tmp_path / "run")
    assert not (tmp_path / "run" / "model.pt").exists()


def test_a_diverging_sentiment_train_exits_2(tmp_path, data_dir, capsys):
    # At lr 1e30 the loss stayed finite for both steps here, but the last update broke the
    # weights: the dev trees' outputs are checked before any accuracy is reported. (Elsewhere
    # the loss may turn first; either way the run stops with exit 2 and nothing saved.)
    common = ["--data-dir", str(data_dir), "--limit", "30", "--epochs", "1", "--no-progress", "--lr", "1e30"]
    assert main(["trees", "train", *common, "--embedding-size", "8", "--hidden-size", "8", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "try a lower --lr" in err
    assert "dev.txt:1: the model's outputs are not finite on this tree" in err or "the training loss is" in err
    assert not (tmp_path / "model.pt").exists()


def test_a_model_with_non_finite_outputs_is_not_scored(tmp_path):
    from structnets.graphs.trees import Vocabulary, batch_trees, read_ptb
    from structnets.text import sentiment

    (tmp_path / "t.txt").write_text("(2 (1 a) (3 b))\n(4 (4 c) (2 a))\n")
    trees = read_ptb(tmp_path / "t.txt")
    vocabulary = Vocabulary.build(trees)
    model = TreeClassifier(SentimentConfig(embedding_size=4, hidden_size=4).model_config(len(vocabulary)))
    with torch.no_grad():
        model.embedding.weight[vocabulary.id("c")] = float("nan")  # only the second tree reads it
    with pytest.raises(ValueError, match=r"t.txt:2: the model's outputs are not finite on this tree \(2 of 6 nodes"):
        sentiment._evaluate(model.eval(), batch_trees(trees, vocabulary), trees)


def test_sst_labels_outside_0_to_4_are_named(tmp_path, data_dir):
    (tmp_path / "nine.txt").write_text("(2 (2 a) (2 b))\n(2 (9 a) (2 b))\n")
    with pytest.raises(ValueError, match=r"nine.txt:2: SST labels must be integers 0-4 at every node, got 9"):
        train(SentimentConfig(data=tmp_path / "nine.txt", dev=data_dir / "sst" / "dev.txt"), tmp_path / "r")


_SST_LINES = ["(3 (2 It) (4 (2 is) (3 good)))", "(1 (1 (2 Not) (1 bad)) (2 .))", r"(2 (2 8 1\/2) (2 .))"]


@st.composite
def _sst_line(draw) -> str:
    """A real-looking SST line with up to three characters replaced, dropped or added."""
    text = draw(st.sampled_from(_SST_LINES))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        noise = draw(st.sampled_from("()0123456789x -"))
        text = draw(
            st.sampled_from(
                [text[:at] + noise + text[at + 1 :], text[:at] + text[at + 1 :], text[:at] + noise + text[at:]]
            )
        )
    return text


@settings(max_examples=100, deadline=None)
@given(st.lists(_sst_line(), min_size=1, max_size=3))
def test_sst_trees_are_read_right_or_refused_naming_file_and_line(lines):
    from structnets.models.tree_lstm import TreeCell
    from structnets.text.sentiment import _read

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "train.txt"
        path.write_text("".join(line + "\n" for line in lines))
        try:
            trees = _read(path, "train", None, TreeCell.NARY, None)
        except ValueError as error:
            assert re.match(rf"{re.escape(str(path))}(:\d+(:\d+)?)?: ", str(error)), str(error)
            return
    # read: every label is an SST class and no node has more than the binary cell's two children
    assert all(0 <= label <= 4 for tree in trees for label in tree.labels)
    assert all(tree.max_children <= 2 for tree in trees)
