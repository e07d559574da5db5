"""Palindromes and near misses: the data of the palindrome benchmark.

* **Positives** are uniformly random palindromes of the given length.
* **Negatives** are "near misses": a random palindrome in which exactly one mirrored
  pair is broken (position ``i`` in the first half is changed to a different digit,
  so ``seq[i] != seq[L - 1 - i]``). Because only one pair differs, looking at the
  ends of the sequence is not enough; a model has to compare every pair.

Every sequence of length 1 is a palindrome, so at length 1 only positives exist. At every
length >= 2 the labels are 50/50. Every function draws from the generator it is given and
from nothing else, so a seed fixes the data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["PAD_TOKEN", "generate", "sample_training_batch", "sample_fixed_length", "is_palindrome"]

# Pad value for token tensors. Padded positions are never read by the RNN (it
# receives the true lengths), so any valid index works.
PAD_TOKEN = 0


def generate(
    lengths: Tensor,
    labels: Tensor,
    vocab_size: int,
    generator: torch.Generator,
) -> Tensor:
    """Generates palindromes (label 1) and near-miss non-palindromes (label 0).

    Args:
        lengths: LongTensor ``[B]`` of sequence lengths, each at least 1.
        labels: Tensor ``[B]`` of 0/1 labels. Label 0 requires length >= 2, because
            every length-1 sequence is a palindrome.
        vocab_size: Digits are drawn from ``0..vocab_size - 1``.
        generator: Source of randomness (CPU generator).

    Returns:
        LongTensor ``[B, max(lengths)]`` of digits, padded with :data:`PAD_TOKEN`.

    Raises:
        ValueError: If a negative is requested at length 1 or a length is < 1.
    """
    lengths = lengths.to(torch.long).cpu()
    labels = labels.to(torch.long).cpu()
    if lengths.numel() == 0:
        return torch.zeros(0, 0, dtype=torch.long)
    if int(lengths.min()) < 1:
        raise ValueError("sequence lengths must be at least 1")
    if bool(((labels == 0) & (lengths < 2)).any()):
        raise ValueError("length-1 sequences are always palindromes; cannot make a negative")
    batch, max_len = lengths.numel(), int(lengths.max())

    # Position t mirrors L-1-t; reading a random row at min(t, L-1-t) makes the
    # sequence symmetric by construction.
    base = torch.randint(vocab_size, (batch, max_len), generator=generator)
    positions = torch.arange(max_len).expand(batch, max_len)
    mirror = lengths.unsqueeze(1) - 1 - positions
    source = torch.minimum(positions, mirror).clamp(min=0)
    tokens = base.gather(1, source)

    # Near miss: change one digit in the first half to a *different* digit (a
    # nonzero shift modulo vocab_size), breaking exactly that mirrored pair.
    half = lengths // 2
    broken = torch.floor(torch.rand(batch, generator=generator) * half).to(torch.long)
    shift = torch.randint(1, vocab_size, (batch,), generator=generator)
    rows = torch.nonzero(labels == 0).squeeze(1)
    cols = broken[rows]
    tokens[rows, cols] = (tokens[rows, cols] + shift[rows]) % vocab_size

    tokens[positions >= lengths.unsqueeze(1)] = PAD_TOKEN
    return tokens


def sample_training_batch(
    batch_size: int,
    max_length: int,
    vocab_size: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor]:
    """Samples a mixed-length training batch.

    Lengths are uniform over ``1..max_length``; labels are fair coin flips at
    lengths >= 2 and always 1 at length 1.

    Args:
        batch_size: Number of sequences.
        max_length: Longest sequence length.
        vocab_size: Number of digits.
        generator: Source of randomness.

    Returns:
        ``(tokens [B, T], lengths [B], labels [B] float)``.
    """
    lengths = torch.randint(1, max_length + 1, (batch_size,), generator=generator)
    labels = torch.randint(2, (batch_size,), generator=generator)
    labels[lengths == 1] = 1
    tokens = generate(lengths, labels, vocab_size, generator)
    return tokens, lengths, labels.to(torch.float32)


def sample_fixed_length(
    length: int,
    count: int,
    vocab_size: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor]:
    """Samples ``count`` sequences of one length with exactly balanced labels.

    For ``length >= 2`` the first ``ceil(count / 2)`` labels are positives and the
    rest negatives, in random order; at length 1 all sequences are positives.

    Args:
        length: Sequence length (>= 1).
        count: Number of sequences.
        vocab_size: Number of digits.
        generator: Source of randomness.

    Returns:
        ``(tokens [count, length], lengths [count], labels [count] float)``.
    """
    lengths = torch.full((count,), length, dtype=torch.long)
    if length == 1:
        labels = torch.ones(count, dtype=torch.long)
    else:
        labels = (torch.arange(count) >= (count + 1) // 2).logical_not().to(torch.long)
        labels = labels[torch.randperm(count, generator=generator)]
    tokens = generate(lengths, labels, vocab_size, generator)
    return tokens, lengths, labels.to(torch.float32)


def is_palindrome(sequence: Sequence[int]) -> bool:
    """Returns whether ``sequence`` reads the same in both directions."""
    return list(sequence) == list(reversed(sequence))
