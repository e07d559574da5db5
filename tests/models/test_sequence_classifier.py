"""Tests for the sequence classifier (structnets.models.sequence_classifier)."""

import dataclasses

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from structnets.core.cells import ChainCell
from structnets.models import SequenceClassifier, SequenceClassifierConfig
from structnets.train.checkpoint import load_model, save_checkpoint

DOUBLE = torch.float64
SMALL = SequenceClassifierConfig(vocab_size=7, num_classes=3, hidden_size=6, embedding_size=5, mlp_hidden_size=4)


def _batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([5, 1, 3, 4])
    tokens = torch.randint(7, (4, 5), generator=generator)
    return tokens, lengths


def _reference_logits(model: SequenceClassifier, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Embedding -> torch.nn's own LSTM/GRU/RNN (same weights) on a packed batch -> the last layer's final states -> head."""
    reference = model.rnn.to_torch()
    packed = pack_padded_sequence(model.embedding(tokens), lengths, batch_first=True, enforce_sorted=False)
    _, h_n = reference(packed)
    h_n = h_n[0] if isinstance(h_n, tuple) else h_n
    directions = model.num_directions
    last_layer = h_n[-directions:]  # (D, B, H): forward, then backward
    return model.head(torch.cat(list(last_layer), dim=-1))


@pytest.mark.parametrize("cell", list(ChainCell))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_logits_and_gradients_match_torch_nn_on_variable_lengths(cell, bidirectional):
    config = dataclasses.replace(SMALL, cell=cell, bidirectional=bidirectional, num_layers=2)
    model = SequenceClassifier(config).to(DOUBLE)
    tokens, lengths = _batch(torch.Generator().manual_seed(0))
    ours = model(tokens, lengths)
    expected = _reference_logits(model, tokens, lengths)
    torch.testing.assert_close(ours, expected)
    # The gradient of the embedding and the head: the same through both recurrences.
    weights = torch.randn(ours.shape, generator=torch.Generator().manual_seed(1), dtype=DOUBLE)
    parameters = [model.embedding.weight, *model.head.parameters()]
    ours_grad = torch.autograd.grad((ours * weights).sum(), parameters)
    expected_grad = torch.autograd.grad((_reference_logits(model, tokens, lengths) * weights).sum(), parameters)
    for mine, theirs in zip(ours_grad, expected_grad):
        torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_sequence_alone_scores_as_in_a_padded_batch(bidirectional):
    model = SequenceClassifier(dataclasses.replace(SMALL, bidirectional=bidirectional)).to(DOUBLE)
    tokens, lengths = _batch(torch.Generator().manual_seed(2))
    logits = model(tokens, lengths)
    assert logits.shape == (4, 3)
    for row in range(4):
        alone = model(tokens[row : row + 1, : lengths[row]], lengths[row : row + 1])
        torch.testing.assert_close(alone, logits[row : row + 1])
    # The padding's tokens are never read.
    scrambled = tokens.clone()
    scrambled[1, 1:] = (scrambled[1, 1:] + 3) % 7
    torch.testing.assert_close(model(scrambled, lengths), logits)


def test_config_rejects_strings_and_bad_sizes():
    with pytest.raises(TypeError, match="ChainCell"):
        SequenceClassifierConfig(vocab_size=3, cell="lstm")
    with pytest.raises(ValueError, match="hidden_size must be a positive integer, got 0"):
        SequenceClassifierConfig(vocab_size=3, hidden_size=0)


def test_checkpoint_rebuilds_the_model_from_its_config(tmp_path):
    config = dataclasses.replace(SMALL, cell=ChainCell.GRU, bidirectional=True, orthogonal=True)
    model = SequenceClassifier(config)
    save_checkpoint(tmp_path / "model.pt", model, task="test")
    restored, checkpoint = load_model(tmp_path / "model.pt", task="test")
    assert isinstance(restored, SequenceClassifier) and restored.config == config
    assert checkpoint.model_config["cell"] == "gru"
    tokens, lengths = _batch(torch.Generator().manual_seed(3))
    torch.testing.assert_close(restored(tokens, lengths), model.eval()(tokens, lengths))
