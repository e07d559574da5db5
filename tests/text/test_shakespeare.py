"""Tiny Shakespeare: the local copy and its usual split."""

import pytest

from structnets.text.characters import Vocabulary
from structnets.text.shakespeare import TINY_SHAKESPEARE_URL, load_tiny_shakespeare, split_text


def test_tiny_shakespeare_loads_from_the_data_directory(data_dir):
    text = load_tiny_shakespeare(data_dir)
    assert len(text) == 1_115_394
    assert text.startswith("First Citizen:")
    train, val = split_text(text)
    assert (len(train), len(val)) == (1_003_854, 111_540)
    assert train + val == text
    assert len(Vocabulary.build(text)) == 65
    with pytest.raises(ValueError, match="validation_fraction must lie in"):
        split_text(text, 1.0)


def test_a_missing_dataset_names_the_canonical_url(tmp_path):
    with pytest.raises(FileNotFoundError, match="karpathy/char-rnn/master/data/tinyshakespeare/input.txt"):
        load_tiny_shakespeare(tmp_path)
    assert TINY_SHAKESPEARE_URL.endswith("tinyshakespeare/input.txt")
