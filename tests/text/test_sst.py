"""SST: its reader, word vectors, and root accuracies."""

import math

import pytest
import torch

from structnets.graphs.trees import Vocabulary, batch_trees, parse_ptb
from structnets.text.sst import load_sst, read_vectors, root_metrics


def test_load_sst_reads_the_data_directory(data_dir, tmp_path):
    dev = load_sst("dev", data_dir)
    assert len(dev) == 1101 and all(0 <= label <= 4 for label in dev[0].labels)
    assert [t.leaves for t in load_sst("dev", data_dir, limit=3)] == [t.leaves for t in dev[:3]]
    with pytest.raises(ValueError, match="SST split must be train, dev or test"):
        load_sst("valid", data_dir)
    with pytest.raises(FileNotFoundError, match="trainDevTestTrees_PTB.zip"):
        load_sst("train", tmp_path)


def test_vectors_file(tmp_path):
    vocabulary = Vocabulary(["<unk>", "good", "bad"])
    (tmp_path / "v.txt").write_text("2 3\ngood 1 2 3\nugly 0 0 1\n")
    vectors, found = read_vectors(tmp_path / "v.txt", vocabulary, 3)
    assert found == 1 and vectors[1].tolist() == [1, 2, 3] and vectors[2].abs().sum() == 0
    (tmp_path / "bad.txt").write_text("good 1 2\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected a word and 3 numbers, got 2"):
        read_vectors(tmp_path / "bad.txt", vocabulary, 3)


def test_root_metrics_by_hand():
    # roots labelled 0 (negative), 2 (neutral) and 4 (positive); 2 + 1 + 1 nodes
    trees = [parse_ptb("(0 (1 a))"), parse_ptb("(2 b)"), parse_ptb("(4 c)")]
    batch = batch_trees(trees, Vocabulary.build(trees))
    logits = torch.full((4, 5), -10.0)
    logits[0, 1] = 0.0  # root 0: predicts class 1 (wrong fine, right binary: negative)
    logits[1, 1] = 0.0  # its leaf, labelled 1: right
    logits[2, 2] = 0.0  # neutral root: right fine, dropped from binary
    logits[3, 3], logits[3, 4] = 0.0, -0.5  # root labelled 4: wrong fine, right binary
    metrics = root_metrics(logits, batch)
    assert metrics["fine_accuracy"] == pytest.approx(1 / 3)
    assert metrics["binary_accuracy"] == 1.0 and metrics["binary_trees"] == 2 and metrics["trees"] == 3
    assert metrics["node_fine_accuracy"] == pytest.approx(2 / 4)
    neutral = batch_trees([trees[1]], Vocabulary.build(trees))
    assert math.isnan(root_metrics(torch.zeros(1, 5), neutral)["binary_accuracy"])
