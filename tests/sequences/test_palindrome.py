"""Tests for the palindrome benchmark (structnets.tasks.palindrome); all run in seconds."""

import argparse
import dataclasses
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from structnets.core.cells import GRUCell
from structnets.sequences import palindrome
from structnets.sequences.palindrome import (
    PalindromeClassifier,
    PalindromeConfig,
    TrainingLog,
    evaluate,
    generate,
    is_palindrome,
    load_model,
    run,
    sample_fixed_length,
    sample_training_batch,
    train,
)

# Small enough that a full run (train + evaluate 1..12 + plot) takes well under a second.
TINY = PalindromeConfig(
    hidden_size=16,
    embedding_size=8,
    mlp_hidden_size=16,
    batch_size=32,
    steps=20,
    warmup_steps=2,
    max_eval_length=12,
    eval_per_length=40,
    loss_log_every=5,
)


def _mismatched_pairs(sequence: list[int]) -> int:
    length = len(sequence)
    return sum(sequence[i] != sequence[length - 1 - i] for i in range(length // 2))


def test_training_labels_match_brute_force_palindrome_check():
    tokens, lengths, labels = sample_training_batch(2000, 10, 10, torch.Generator().manual_seed(1))
    assert tokens.shape == (2000, int(lengths.max()))
    assert set(lengths.tolist()) == set(range(1, 11))
    for row, length, label in zip(tokens.tolist(), lengths.tolist(), labels.tolist()):
        assert is_palindrome(row[:length]) == bool(label)
        assert all(0 <= digit < 10 for digit in row)
        assert all(pad == palindrome.PAD_TOKEN for pad in row[length:])
    # Label 1 is a fair coin at lengths >= 2, so the positive rate there is near 1/2.
    assert abs(labels[lengths >= 2].mean().item() - 0.5) < 0.05


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(1, 40),
    count=st.integers(1, 60),
    vocab_size=st.integers(2, 12),
    seed=st.integers(0, 2**31),
)
def test_fixed_length_sets_are_balanced_and_negatives_are_near_misses(length, count, vocab_size, seed):
    tokens, lengths, labels = sample_fixed_length(length, count, vocab_size, torch.Generator().manual_seed(seed))
    assert tokens.shape == (count, length)
    assert bool((lengths == length).all())
    if length == 1:
        assert bool((labels == 1).all())  # Every length-1 sequence is a palindrome.
    else:
        assert labels.sum().item() == math.ceil(count / 2)
    for row, label in zip(tokens.tolist(), labels.tolist()):
        assert all(0 <= digit < vocab_size for digit in row)
        # Positives: no broken pair. Negatives: exactly one mirrored pair broken.
        assert _mismatched_pairs(row) == (0 if label else 1)


def test_generate_rejects_a_negative_of_length_one():
    with pytest.raises(ValueError, match="length-1"):
        generate(torch.tensor([1, 3]), torch.tensor([0, 0]), 10, torch.Generator().manual_seed(0))


def test_generator_seed_determines_the_data():
    first = sample_training_batch(64, 10, 10, torch.Generator().manual_seed(5))
    second = sample_training_batch(64, 10, 10, torch.Generator().manual_seed(5))
    other = sample_training_batch(64, 10, 10, torch.Generator().manual_seed(6))
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], other[0])


def test_config_accepts_cell_names_and_classes():
    assert PalindromeConfig(cell=GRUCell).to_dict()["cell"] == "gru"
    assert PalindromeConfig(cell="GRU").cell_class is GRUCell
    with pytest.raises(ValueError, match="unknown cell"):
        PalindromeConfig(cell="transformer")
    with pytest.raises(ValueError, match="steps"):
        PalindromeConfig(steps=0)
    restored = PalindromeConfig.from_dict(json.loads(json.dumps(TINY.to_dict())))
    assert restored == TINY


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_scores_a_mixed_length_batch(cell, bidirectional):
    config = dataclasses.replace(TINY, cell=cell, bidirectional=bidirectional, num_layers=2)
    model = PalindromeClassifier(config)
    tokens, lengths, _ = sample_training_batch(7, 10, 10, torch.Generator().manual_seed(0))
    logits = model(tokens, lengths)
    assert logits.shape == (7,)
    # Padding must not leak into the summary: scoring one sequence alone gives the same logit.
    alone = model(tokens[2:3, : lengths[2]], lengths[2:3])
    torch.testing.assert_close(alone, logits[2:3])


def test_a_few_dozen_steps_lower_the_loss():
    # Lengths 1-3 leave the initial plateau within a few dozen steps; lengths up to 10
    # take a few hundred, too slow for a unit test.
    config = dataclasses.replace(
        TINY,
        max_train_length=3,
        hidden_size=32,
        embedding_size=16,
        mlp_hidden_size=32,
        batch_size=64,
        steps=60,
        lr=1e-2,
        warmup_steps=5,
        loss_log_every=10,
    )
    log = TrainingLog()
    train(config, progress=False, log=log)
    assert log.steps == 60 and len(log.loss_curve) == 6
    assert log.loss_curve[-1] < log.loss_curve[0] - 0.15


def test_evaluate_covers_every_length(tmp_path):
    model = train(TINY, progress=False)
    accuracy = evaluate(model, TINY)["accuracy_by_length"]
    assert list(accuracy) == [str(length) for length in range(1, 13)]
    assert all(0.0 <= value <= 1.0 for value in accuracy.values())


def test_run_writes_metrics_plot_and_checkpoint(tmp_path):
    config = dataclasses.replace(TINY, max_eval_length=40, eval_per_length=10)
    metrics = run(config, tmp_path, progress=False)

    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    accuracy = written["accuracy_by_length"]
    assert list(accuracy) == [str(length) for length in range(1, 41)]
    assert all(0.0 <= value <= 1.0 for value in accuracy.values())
    assert written["config"]["cell"] == "lstm"
    assert written["train_seconds"] > 0
    assert written["train_steps"] == config.steps
    assert len(written["train_loss_curve"]) == config.steps // config.loss_log_every

    assert (tmp_path / "accuracy_by_length.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(checkpoint) == {"state_dict", "config"}
    assert PalindromeConfig.from_dict(checkpoint["config"]) == config
    reloaded = load_model(tmp_path / "model.pt")
    assert evaluate(reloaded, config) == {"accuracy_by_length": accuracy}


def test_same_seed_gives_identical_metrics(tmp_path):
    first = run(TINY, tmp_path / "a", progress=False)
    second = run(TINY, tmp_path / "b", progress=False)
    assert first["accuracy_by_length"] == second["accuracy_by_length"]
    assert first["train_loss_curve"] == second["train_loss_curve"]
    other = run(dataclasses.replace(TINY, seed=1), tmp_path / "c", progress=False)
    assert other["train_loss_curve"] != first["train_loss_curve"]


def test_register_adds_a_working_subcommand(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    palindrome.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "run"
    args = parser.parse_args(
        [
            "palindrome",
            "--cell",
            "gru",
            "--bidirectional",
            "--out",
            str(out),
            "--steps",
            "3",
            "--hidden-size",
            "8",
            "--seed",
            "3",
            "--eval-per-length",
            "10",
            "--max-eval-length",
            "12",
            "--no-progress",
        ]
    )
    config = palindrome.config_from_args(args)
    assert (config.cell, config.bidirectional, config.steps, config.hidden_size, config.seed) == ("gru", True, 3, 8, 3)
    assert config.batch_size == PalindromeConfig().batch_size  # Options left out keep the defaults.
    assert args.func(args) == 0
    assert "| L=1 |" in capsys.readouterr().out
    assert (out / "metrics.json").is_file()
