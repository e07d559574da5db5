"""The character-level language model: carried state, parity with torch.nn.LSTM, checkpoints."""

import pytest
import torch

from structnets.core.cells import ChainCell
from structnets.models import CharLM, CharLMConfig
from structnets.train.checkpoint import load_model, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("cell", [ChainCell.LSTM, ChainCell.GRU, ChainCell.ELMAN])
def test_carrying_the_state_across_chunks_equals_one_long_pass(cell):
    model = CharLM(CharLMConfig(11, cell=cell, hidden_size=16, num_layers=2, embedding_size=6)).double().eval()
    tokens = torch.randint(11, (3, 40))
    whole, _ = model(tokens)
    pieces, hx = [], None
    for start in range(0, 40, 9):
        logits, hx = model(tokens[:, start : start + 9], hx)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, 1), whole)


def test_the_model_matches_torch_nn_lstm_with_the_same_weights():
    model = CharLM(CharLMConfig(13, hidden_size=24, num_layers=2, embedding_size=8)).double().eval()
    reference = model.rnn.to_torch()
    tokens = torch.randint(13, (2, 12))
    assert isinstance(reference, torch.nn.LSTM) and reference.batch_first
    expected = model.head(reference(model.embedding(tokens))[0])
    torch.testing.assert_close(model(tokens)[0], expected)
    # and so do the recurrent weights' gradients
    model(tokens)[0].square().sum().backward()
    model.head(reference(model.embedding(tokens))[0]).square().sum().backward()
    for layer, cell in enumerate(model.rnn.cells):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            expected_grad = getattr(reference, f"{name}_l{layer}").grad
            torch.testing.assert_close(getattr(cell, name).grad, expected_grad)


def test_a_checkpoint_rebuilds_the_model(tmp_path):
    model = CharLM(CharLMConfig(9, cell=ChainCell.GRU, hidden_size=8, num_layers=1, embedding_size=4)).eval()
    save_checkpoint(tmp_path / "model.pt", model, task="charlm", extra={"vocabulary": "abcdefghi"})
    again, checkpoint = load_model(tmp_path / "model.pt", task="charlm")
    assert again.config == model.config and checkpoint.model_config["cell"] == "gru"
    tokens = torch.randint(9, (2, 5))
    torch.testing.assert_close(again(tokens)[0], model(tokens)[0])


def test_config_is_checked():
    with pytest.raises(ValueError, match="vocab_size must be positive"):
        CharLMConfig(0)
    with pytest.raises(ValueError, match="dropout must lie in"):
        CharLMConfig(5, dropout=1.0)
