"""Tests for the palindrome settings (structnets.sequences.palindrome_config)."""

import dataclasses
import json

import pytest

from structnets.core.cells import ChainCell
from structnets.models import SequenceClassifierConfig
from structnets.sequences.palindrome_config import PalindromeConfig
from structnets.train import config as configs
from structnets.train.engine import LRSchedule


def test_defaults_are_todays():
    config = PalindromeConfig()
    assert (config.cell, config.hidden_size, config.orthogonal, config.max_eval_length) == (
        ChainCell.LSTM,
        128,
        True,
        40,
    )
    train = config.train
    assert (train.steps, train.batch_size, train.lr, train.warmup_steps) == (4500, 512, 4e-3, 300)
    assert (train.schedule, train.min_lr_ratio, train.clip_grad_norm, train.log_every) == (LRSchedule.COSINE, 0, 1, 25)


def test_config_round_trips_through_json_and_checks_values():
    config = PalindromeConfig(cell=ChainCell.GRU, bidirectional=True, num_layers=2)
    assert configs.from_dict(PalindromeConfig, json.loads(json.dumps(configs.to_dict(config)))) == config
    assert configs.to_dict(config)["cell"] == "gru"
    with pytest.raises(TypeError, match="ChainCell"):
        PalindromeConfig(cell="lstm")
    with pytest.raises(ValueError, match="vocab_size"):
        PalindromeConfig(vocab_size=1)
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        PalindromeConfig(hidden_size=0)
    with pytest.raises(ValueError, match="counts steps"):
        PalindromeConfig(train=dataclasses.replace(PalindromeConfig().train, steps=None, epochs=1))


def test_the_model_config_carries_the_architecture():
    config = PalindromeConfig(cell=ChainCell.ELMAN, hidden_size=7, num_layers=3, vocab_size=4)
    assert config.model_config() == SequenceClassifierConfig(
        vocab_size=4, num_classes=1, cell=ChainCell.ELMAN, hidden_size=7, num_layers=3, orthogonal=True
    )
