"""Tests for the palindrome data (structnets.sequences.palindrome_data)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from structnets.sequences.palindrome_data import (
    PAD_TOKEN,
    generate,
    is_palindrome,
    sample_fixed_length,
    sample_training_batch,
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
        assert all(pad == PAD_TOKEN for pad in row[length:])
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
