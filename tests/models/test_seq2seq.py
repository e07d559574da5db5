"""The attentional encoder-decoder: teacher forcing against stepping, greedy against beam search, an
exhaustive search against the beam, padding invariance, training, checkpoints and torch.export."""

import itertools

import pytest
import torch

from structnets.models import (
    AttentionScore,
    CellKind,
    Seq2Seq,
    Seq2SeqConfig,
    decoder_inputs,
    sequence_loss,
)
from structnets.train.checkpoint import load_model, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

PAD, BOS, EOS = 0, 1, 2


def _model(**overrides) -> Seq2Seq:
    options = dict(source_vocab=9, target_vocab=8, embedding_size=6, hidden_size=8, num_layers=2) | overrides
    model = Seq2Seq(Seq2SeqConfig(**options)).double().eval()
    with torch.no_grad():  # weights large enough that decoding differs from row to row, and some rows end
        for parameter in model.parameters():
            parameter.mul_(2.0)
        model.generator.bias[EOS] += 1.0
    return model


def _source(lengths: list[int], vocab: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor(lengths)
    tokens = torch.randint(3, vocab, (len(lengths), int(lengths.max())))
    tokens[torch.arange(tokens.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1)] = PAD
    return tokens, lengths


def _assert_well_formed(decoded: torch.Tensor) -> None:
    """Words (never pad or bos), then eos and pad to the end, or words to the end."""
    for row in decoded.tolist():
        end = row.index(EOS) if EOS in row else len(row)
        assert PAD not in row[:end] and BOS not in row[:end] and set(row[end + 1 :]) <= {PAD}, row


@pytest.mark.parametrize("cell", [CellKind.LSTM, CellKind.GRU], ids=lambda c: c.value)
@pytest.mark.parametrize("score", [*AttentionScore, None], ids=lambda s: "none" if s is None else s.value)
def test_beam_search_of_width_one_is_greedy_decoding(cell, score):
    model = _model(cell=cell, attention=score, input_feeding=score is not None)
    ended_early = 0
    for lengths in ([5, 2, 7, 1], [3], [6, 6, 4, 2, 5]):
        source, source_lengths = _source(lengths)
        greedy = model.greedy(source, source_lengths, 9)
        assert torch.equal(model.beam_search(source, source_lengths, 9, width=1), greedy)
        assert torch.equal(model.beam_search(source, source_lengths, 9, width=1, length_penalty=0.0), greedy)
        ended_early += int((greedy[:, -1] == PAD).sum())
        _assert_well_formed(greedy)
    assert ended_early > 0  # the eos branch was taken


@pytest.mark.parametrize(
    "cell, score, input_feeding, bidirectional",
    [
        (CellKind.LSTM, AttentionScore.GENERAL, True, True),
        (CellKind.LSTM, AttentionScore.ADDITIVE, True, False),
        (CellKind.GRU, AttentionScore.DOT, True, True),
        (CellKind.GRU, AttentionScore.GENERAL, False, True),
        (CellKind.LSTM, None, False, False),
    ],
)
def test_teacher_forcing_equals_stepping_through_the_gold_prefix(cell, score, input_feeding, bidirectional):
    model = _model(cell=cell, attention=score, input_feeding=input_feeding, bidirectional=bidirectional)
    source, source_lengths = _source([4, 7, 1])
    target_out = torch.tensor([[3, 4, 5, EOS, PAD, PAD], [7, 6, 5, 4, 3, EOS], [EOS, PAD, PAD, PAD, PAD, PAD]])
    target_in = decoder_inputs(target_out, BOS)
    logits = model(source, source_lengths, target_in)
    encoded = model.encode(source, source_lengths)
    state, stepped = encoded.state, []
    for t in range(target_in.shape[1]):
        step_logits, state = model.step(target_in[:, t], state, encoded)
        stepped.append(step_logits)
    stepped = torch.stack(stepped, 1)
    torch.testing.assert_close(logits, stepped)
    torch.testing.assert_close(sequence_loss(logits, target_out, PAD), sequence_loss(stepped, target_out, PAD))


@pytest.mark.parametrize("cell", [CellKind.LSTM, CellKind.GRU], ids=lambda c: c.value)
def test_a_row_decodes_the_same_beside_longer_rows(cell):
    model = _model(cell=cell, attention=AttentionScore.ADDITIVE)
    source, source_lengths = _source([3, 8, 6])
    target_in = torch.randint(3, 8, (3, 7))
    logits = model(source, source_lengths, target_in)
    greedy = model.greedy(source, source_lengths, 6)
    beams = model.beam_search(source, source_lengths, 6, width=3)
    for row in range(3):
        length = int(source_lengths[row])
        alone, alone_length = source[row : row + 1, :length], source_lengths[row : row + 1]
        short_target = target_in[row : row + 1, :4]  # and shorter targets than the batch's
        torch.testing.assert_close(model(alone, alone_length, short_target), logits[row : row + 1, :4])
        assert torch.equal(model.greedy(alone, alone_length, 6), greedy[row : row + 1])
        assert torch.equal(model.beam_search(alone, alone_length, 6, width=3), beams[row : row + 1])


@pytest.mark.parametrize("cell", [CellKind.LSTM, CellKind.GRU], ids=lambda c: c.value)
def test_the_decoder_starts_from_the_encoders_final_states_both_directions_joined(cell):
    model = _model(cell=cell)
    source, source_lengths = _source([3, 5])
    _, final = model.encoder(model.source_embedding(source), lengths=source_lengths)
    encoded = model.encode(source, source_lengths)
    for part in range(2 if cell is CellKind.LSTM else 1):
        expected = final[part] if cell is CellKind.LSTM else final
        for layer in range(2):
            got = encoded.state.cells[layer][part] if cell is CellKind.LSTM else encoded.state.cells[layer]
            torch.testing.assert_close(got, torch.cat([expected[2 * layer], expected[2 * layer + 1]], -1))
    assert torch.all(encoded.state.feed == 0) and encoded.memory.keys.shape[0] == 8


def test_without_attention_it_is_two_torch_nn_lstms_the_second_starting_from_the_firsts_final_state():
    """Sutskever et al. 2014's encoder-decoder, written in torch.nn: the same logits in float64."""
    model = _model(attention=None, input_feeding=False, bidirectional=False, num_layers=2)
    assert model.attention is None and model.combine is None
    source, source_lengths = _source([4, 7, 1])
    target_in = torch.randint(3, 8, (3, 5))
    encoder = model.encoder.to_torch()
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        model.source_embedding(source), source_lengths, batch_first=True, enforce_sorted=False
    )
    _, final = encoder(packed)
    decoder = torch.nn.LSTM(6, 8, num_layers=2, batch_first=True).double()
    with torch.no_grad():
        for layer, cell in enumerate(model.decoder):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(decoder, f"{name}_l{layer}").copy_(getattr(cell, name))
    outputs, _ = decoder(model.target_embedding(target_in), final)
    torch.testing.assert_close(model(source, source_lengths, target_in), model.generator(outputs))
    assert model.encode(source, source_lengths).memory is None


def _hypotheses(emitted: list[int], max_length: int) -> list[list[int]]:
    """Every output of at most max_length tokens: words then eos, or max_length words."""
    found = []
    for length in range(max_length + 1):
        for words in itertools.product(emitted, repeat=length):
            found.append([*words, EOS] if length < max_length else list(words))
    return [h for h in found if len(h) <= max_length]


def test_a_beam_wide_enough_to_keep_every_hypothesis_finds_the_best_normalised_score():
    model = _model(target_vocab=5, num_layers=1, attention=AttentionScore.GENERAL)
    with torch.no_grad():
        model.generator.bias[EOS] -= 1.0  # short and long outputs both in contention
    max_length = 4
    hypotheses = _hypotheses([3, 4], max_length)  # 31 of them
    targets = torch.tensor([h + [PAD] * (max_length - len(h)) for h in hypotheses])
    lengths = torch.tensor([len(h) for h in hypotheses], dtype=torch.float64)
    source, source_lengths = _source([5, 2, 4, 3, 6, 1])
    log_probs = []  # of every hypothesis, by teacher forcing, for each row
    for row in range(source.shape[0]):
        rows = torch.full((len(hypotheses),), row)
        logits = model(source[rows], source_lengths[rows], decoder_inputs(targets, BOS))
        per_token = (logits + model._never_predicted(logits)).log_softmax(-1).gather(2, targets.unsqueeze(-1))
        log_probs.append(per_token.squeeze(-1).masked_fill(targets == PAD, 0).sum(1))
    found = {}
    for length_penalty in (0.0, 1.0, 2.0):
        found[length_penalty] = model.beam_search(
            source, source_lengths, max_length, width=len(hypotheses), length_penalty=length_penalty
        )
        best = torch.stack([(scores / lengths**length_penalty).argmax() for scores in log_probs])
        assert torch.equal(found[length_penalty], targets[best])
    # the normalisation decides: no penalty prefers short outputs, a strong one long ones
    assert not torch.equal(found[0.0], found[2.0])
    assert not torch.equal(found[0.0], model.greedy(source, source_lengths, max_length))


def test_a_few_training_steps_on_reversal_lower_the_loss():
    torch.manual_seed(0)
    config = Seq2SeqConfig(9, 9, embedding_size=16, hidden_size=32, attention=AttentionScore.DOT, dropout=0.1)
    model = Seq2Seq(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    source, source_lengths = _source(torch.randint(2, 6, (32,)).tolist())
    reversed_rows = [source[b, : int(n)].flip(0).tolist() + [EOS] for b, n in enumerate(source_lengths)]
    target_out = torch.tensor([r + [PAD] * (7 - len(r)) for r in reversed_rows])
    losses = []
    for _ in range(40):
        loss = sequence_loss(model(source, source_lengths, decoder_inputs(target_out, BOS)), target_out, PAD)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    _assert_well_formed(model.eval().beam_search(source, source_lengths, 7, width=3))


def test_a_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = _model(cell=CellKind.GRU, attention=AttentionScore.ADDITIVE, input_feeding=False).float()
    save_checkpoint(tmp_path / "model.pt", model, task="seq2seq")
    again, checkpoint = load_model(tmp_path / "model.pt", task="seq2seq")
    assert again.config == model.config and checkpoint.model_config["attention"] == "additive"
    source, source_lengths = _source([4, 2])
    target_in = torch.randint(3, 8, (2, 5))
    assert torch.equal(again(source, source_lengths, target_in), model(source, source_lengths, target_in))
    assert torch.equal(again.beam_search(source, source_lengths, 6), model.beam_search(source, source_lengths, 6))


def test_greedy_decoding_exports_and_matches_eager_on_other_sizes():
    model = _model(num_layers=1)
    decoder = model.exportable(max_length=5)
    source, source_lengths = _source([4, 2, 3])
    program = torch.export.export(decoder, (source, source_lengths), dynamic_shapes=decoder.dynamic_shapes())
    for lengths in ([6, 1, 3, 5, 2], [2], [3, 3]):
        other, other_lengths = _source(lengths)
        assert torch.equal(program.module()(other, other_lengths), model.greedy(other, other_lengths, 5))


def test_sequence_loss_is_the_mean_over_real_tokens_and_inputs_shift_right():
    logits = torch.randn(2, 3, 5, dtype=torch.float64)
    target_out = torch.tensor([[3, EOS, PAD], [4, 3, EOS]])
    real = target_out != PAD
    expected = -logits.log_softmax(-1).gather(2, target_out.unsqueeze(-1)).squeeze(-1)[real].mean()
    torch.testing.assert_close(sequence_loss(logits, target_out, PAD), expected)
    assert decoder_inputs(target_out, BOS).tolist() == [[BOS, 3, EOS], [BOS, 4, 3]]


def test_config_is_checked():
    with pytest.raises(ValueError, match="odd"):
        Seq2SeqConfig(5, 5, hidden_size=7)
    with pytest.raises(ValueError, match="three different tokens"):
        Seq2SeqConfig(5, 5, bos=0)
    with pytest.raises(ValueError, match="no token of a target vocabulary"):
        Seq2SeqConfig(5, 2)
    with pytest.raises(ValueError, match="dropout"):
        Seq2SeqConfig(5, 5, dropout=1.0)
    with pytest.raises(ValueError, match="no-input-feeding"):
        Seq2SeqConfig(5, 5, attention=None)
    with pytest.raises(ValueError, match="width and max_length"):
        _model().beam_search(*_source([2]), 3, width=0)
    with pytest.raises(ValueError, match="max_length must be positive"):
        _model().greedy(*_source([2]), 0)
