"""SST sentiment with sequence models: the sentences of the trees, batching, training, the CLI, evaluation, bad input."""

import dataclasses
import json
import re

import pytest
import torch

from structnets.cli import build_parser, main
from structnets.core.cells import ChainCell
from structnets.graphs.trees import Vocabulary, batch_trees, parse_ptb, read_ptb
from structnets.models import SequenceClassifier
from structnets.text import classify, sentiment
from structnets.text.classify import (
    ClassifyConfig,
    batch_sentences,
    load_run,
    read_sentences,
    sentence_metrics,
    train,
)
from structnets.text.sst import root_metrics
from structnets.train.checkpoint import load_checkpoint
from structnets.train.config import from_dict

pytestmark = pytest.mark.usefixtures("one_thread")

DOUBLE = torch.float64
# The leaves of a bracketed line, read by a pattern instead of the tree reader: ``(label token)``.
_LEAF = re.compile(r"\(\d+ ([^()]+)\)")


def _first_lines(source, path, count):
    lines = [line for line in source.read_text().splitlines() if line.strip()][:count]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_sentence_is_the_tree_leaves_in_order(data_dir):
    path = data_dir / "sst" / "train.txt"
    trees = read_sentences(path, "train", None, 200)
    vocabulary = Vocabulary.build(trees)
    batch = batch_sentences(trees, vocabulary)
    lines = [line for line in path.read_text().splitlines() if line.strip()][:200]
    for row, (tree, line) in enumerate(zip(trees, lines)):
        ids = batch.tokens[row, : batch.lengths[row]].tolist()
        words = [vocabulary.tokens[i] for i in ids]
        assert words == tree.leaves == _LEAF.findall(line)
        assert batch.labels[row] == tree.labels[0] == int(line[1])
    assert batch.unknown_tokens == 0 and int(batch.tokens[~batch.mask].abs().sum()) == 0  # padding is 0
    # a token with a space ("8 1\/2") stays one word; words never seen in training are <unk> (0)
    tree = parse_ptb(r"(3 (2 (2 8 1\/2) (2 zzyzx)) (3 good))")
    one = batch_sentences([tree], Vocabulary.build([parse_ptb(r"(3 (2 8 1\/2) (3 good))")]))
    assert tree.leaves == [r"8 1\/2", "zzyzx", "good"] and one.tokens.tolist() == [[1, 0, 2]]
    assert one.unknown_tokens == 1 and one.labels.tolist() == [3]


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("cell", [ChainCell.LSTM, ChainCell.GRU])
def test_a_padded_batch_scores_each_sentence_as_alone(data_dir, cell, bidirectional):
    trees = read_sentences(data_dir / "sst" / "dev.txt", "dev", None, 12)
    vocabulary = Vocabulary.build(trees[:6])  # the other six have unknown words
    sizes = {"embedding_size": 6, "hidden_size": 5, "dropout": 0.5}  # dropout is off in eval mode
    config = ClassifyConfig(cell=cell, num_layers=2, bidirectional=bidirectional, **sizes)
    model = SequenceClassifier(config.model_config(len(vocabulary))).to(DOUBLE).eval()
    batch = batch_sentences(trees, vocabulary)
    assert len(set(batch.lengths.tolist())) > 3  # lengths differ: padding matters
    logits = model(batch.tokens, batch.lengths)
    for row, tree in enumerate(trees):
        alone = batch_sentences([tree], vocabulary)
        assert alone.tokens.shape[1] == batch.lengths[row]  # no padding
        torch.testing.assert_close(model(alone.tokens, alone.lengths), logits[row : row + 1], rtol=0, atol=1e-12)


def test_a_few_steps_reduce_the_loss(data_dir):
    trees = read_sentences(None, "train", data_dir, 25)
    vocabulary = Vocabulary.build(trees)
    config = ClassifyConfig(embedding_size=8, hidden_size=8, dropout=0.0)
    model = SequenceClassifier(config.model_config(len(vocabulary)))
    batch = batch_sentences(trees, vocabulary)
    optimizer = sentiment.adagrad(model, config)(model.parameters())
    losses = []
    for _ in range(15):
        loss = classify._loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_the_metrics_are_the_tree_lstm_root_metrics(data_dir):
    trees = read_sentences(None, "dev", data_dir, 80)
    forest = batch_trees(trees, Vocabulary.build(trees))
    logits = torch.randn(forest.num_nodes, 5, generator=torch.Generator().manual_seed(0))
    theirs = root_metrics(logits, forest)
    ours = sentence_metrics(logits[forest.roots], forest.y[forest.roots])
    assert ours == {k: theirs[k] for k in ("fine_accuracy", "binary_accuracy", "trees", "binary_trees")}
    neutral = sentence_metrics(torch.randn(3, 5), torch.tensor([2, 2, 2]))
    assert neutral["binary_accuracy"] is None and neutral["binary_trees"] == 0


def test_command_line_trains_and_evaluate_reproduces_the_dev_metrics(tmp_path, data_dir, capsys):
    train_file = _first_lines(data_dir / "sst" / "train.txt", tmp_path / "train.txt", 40)
    dev_file = _first_lines(data_dir / "sst" / "dev.txt", tmp_path / "dev.txt", 30)
    run = tmp_path / "run"
    sizes = ["--embedding-size", "8", "--hidden-size", "6", "--num-layers", "2", "--cell", "gru"]
    common = ["--data", str(train_file), "--dev", str(dev_file), "--epochs", "2", "--log-every", "1", "--no-progress"]
    assert main(["text", "classify", "train", *common, *sizes, "--out", str(run)]) == 0
    assert "dev: fine" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    dev = metrics["dev"]
    assert 0 <= dev["fine_accuracy"] <= 1 and 0 <= dev["binary_accuracy"] <= 1 and dev["trees"] == 30
    validations = [h for h in metrics["history"] if "dev_fine_accuracy" in h]
    assert len(validations) == 2 and dev["fine_accuracy"] == max(h["dev_fine_accuracy"] for h in validations)
    assert [h["train_loss"] for h in metrics["history"] if "train_loss" in h]  # the curves
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    config = from_dict(ClassifyConfig, load_checkpoint(run, task=classify.TASK).task_config)
    assert config.cell is ChainCell.GRU and config.num_layers == 2 and config.bidirectional
    # the Tree-LSTM's vocabulary: built from the same training trees, the same words unknown on dev
    model, vocabulary = load_run(run)
    trees = read_ptb(train_file)
    assert vocabulary.tokens == Vocabulary.build(trees).tokens
    assert dev["unknown_tokens"] == batch_trees(read_ptb(dev_file), vocabulary).unknown_tokens > 0
    assert isinstance(model.head[0], torch.nn.Linear) and len(model.head) == 1  # Tai et al.'s linear softmax
    # evaluate on the dev file gives train's dev metrics
    evaluate = ["text", "classify", "evaluate", "--model", str(run), "--data", str(dev_file)]
    assert main([*evaluate, "--out", str(tmp_path / "ev")]) == 0
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert evaluated.pop("data") == str(dev_file) and evaluated == dev
    assert "binary" in capsys.readouterr().out
    # the evaluation is not written into the run it scores
    assert main([*evaluate, "--out", str(run)]) == 2
    assert "is the run directory itself" in capsys.readouterr().err


def test_bad_input_errors_name_the_file_and_line(tmp_path, data_dir, capsys):
    dev = data_dir / "sst" / "dev.txt"
    missing = tmp_path / "missing.txt"
    out = ["--dev", str(dev), "--out", str(tmp_path / "r")]
    assert main(["text", "classify", "train", "--data", str(missing), *out]) == 2
    assert f"structnets text: error: no tree file at {missing}" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("(3 (2 It) (3 good))\nnot a tree\n")
    assert main(["text", "classify", "train", "--data", str(bad), *out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{bad}:2:1: 'not' outside any brackets" in err
    assert not (tmp_path / "r").exists()  # refused before the run directory was started
    (tmp_path / "nine.txt").write_text("(2 (2 a) (2 b))\n(2 (9 a) (2 b))\n")
    with pytest.raises(ValueError, match=r"nine.txt:2: SST labels must be integers 0-4 at every node, got 9"):
        read_sentences(tmp_path / "nine.txt", "train", None, None)
    with pytest.raises(ValueError, match=r"unclosed.txt:1:1: '\(' never closed"):
        (tmp_path / "unclosed.txt").write_text("(2 (2 a) (2 b)\n")
        read_sentences(tmp_path / "unclosed.txt", "train", None, None)


def _tiny(data, **train):
    config = ClassifyConfig(data=data, dev=data, embedding_size=4, hidden_size=4)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, progress=False, **train))


def test_same_seed_same_metrics_and_resume_continues(tmp_path, data_dir):
    train_file = _first_lines(data_dir / "sst" / "train.txt", tmp_path / "train.txt", 30)
    train(_tiny(train_file, epochs=2), tmp_path / "a")
    train(_tiny(train_file, epochs=2), tmp_path / "b")
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    train(_tiny(train_file, epochs=1), tmp_path / "c")
    resumed = train(_tiny(train_file, epochs=2, resume=tmp_path / "c"), tmp_path / "c")
    whole = json.loads((tmp_path / "a" / "metrics.json").read_text())
    # the resumed run goes on from the first epoch's state: the same second epoch as the whole run
    validations = [[h for h in m["history"] if "dev_fine_accuracy" in h] for m in (resumed, whole)]
    assert len(validations[0]) == 2 and validations[0] == validations[1] and resumed["dev"] == whole["dev"]
    kept = [load_run(tmp_path / name)[0].state_dict() for name in ("a", "c")]
    assert all(torch.equal(kept[0][k], kept[1][k]) for k in kept[0])


def test_evaluate_names_a_bad_line_and_a_model_with_non_finite_outputs(tmp_path, data_dir, capsys):
    train_file = _first_lines(data_dir / "sst" / "train.txt", tmp_path / "train.txt", 20)
    train(_tiny(train_file, epochs=1), tmp_path / "run")
    (tmp_path / "bad.txt").write_text("(3 (2 It) (3 good))\n\n(2 (2 a) (2 b)\n")
    evaluate = ["text", "classify", "evaluate", "--model", str(tmp_path / "run"), "--data", str(tmp_path / "bad.txt")]
    assert main([*evaluate, "--out", str(tmp_path / "ev")]) == 2
    assert f"{tmp_path / 'bad.txt'}:3:1: '(' never closed" in capsys.readouterr().err
    model, vocabulary = load_run(tmp_path / "run")
    trees = read_ptb(train_file)
    word = trees[3].leaves[0]
    first = next(k for k, tree in enumerate(trees) if word in tree.leaves)
    with torch.no_grad():
        model.embedding.weight[vocabulary.id(word)] = float("nan")
    message = rf"train.txt:{first + 1}: the model's outputs are not finite on this sentence"
    with pytest.raises(ValueError, match=message):
        classify._evaluate(model, [batch_sentences(trees, vocabulary)], trees)


def test_text_is_the_field_group_and_trees_keeps_working():
    parser = build_parser()
    args = parser.parse_args(["text", "classify", "train", "--out", "x", "--cell", "gru", "--no-bidirectional"])
    assert args.func is classify._train_cli and args.cell is ChainCell.GRU and args.bidirectional is False
    assert parser.parse_args(["trees", "train", "--out", "x"]).func is sentiment._train_cli
    assert parser.parse_args(["text", "trees", "train", "--out", "x"]).func is sentiment._train_cli
    help_text = parser._subparsers._group_actions[0].choices["text"].format_help()
    assert "classify" in help_text and "charlm" in help_text


def test_config_checks_sizes_and_dropout():
    with pytest.raises(ValueError, match="dropout must be a number in"):
        ClassifyConfig(dropout=1.0)
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        ClassifyConfig(num_layers=0)
    head = SequenceClassifier(ClassifyConfig(mlp_hidden_size=7, hidden_size=4).model_config(3)).head
    assert [layer.out_features for layer in head if isinstance(layer, torch.nn.Linear)] == [7, 5]
