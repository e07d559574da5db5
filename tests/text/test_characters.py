"""Character-level text: the vocabulary, parallel streams, bits per character and sampling."""

import math

import pytest
import torch
from torch.nn import functional as F

from structnets.models import CharLM, CharLMConfig
from structnets.text.characters import Vocabulary, bits_per_character, sample, stream_chunks

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(vocab_size: int) -> CharLM:
    return CharLM(CharLMConfig(vocab_size, hidden_size=24, num_layers=2, embedding_size=8))


def test_vocabulary_round_trip_and_unknown_characters():
    vocabulary = Vocabulary.build("hello world")
    assert vocabulary.characters == " dehlorw"
    assert vocabulary.decode(vocabulary.encode("low row")) == "low row"
    with pytest.raises(ValueError, match=r"2 character\(s\) outside the model's vocabulary: 'Z', '€'"):
        vocabulary.encode("helZo €")


def test_stream_chunks_are_contiguous_streams_shifted_by_one():
    tokens = torch.arange(103)
    chunks = list(stream_chunks(tokens, batch_size=4, bptt=7))
    inputs = torch.cat([chunk[0] for chunk in chunks], 1)
    targets = torch.cat([chunk[1] for chunk in chunks], 1)
    per_stream = 102 // 4
    assert [chunk[0].shape[1] for chunk in chunks] == [7, 7, 7, 4]
    for b in range(4):
        assert inputs[b].tolist() == list(range(b * per_stream, (b + 1) * per_stream))
        assert targets[b].tolist() == list(range(b * per_stream + 1, (b + 1) * per_stream + 1))
    with pytest.raises(ValueError, match="too few for 4 streams"):
        list(stream_chunks(torch.arange(4), batch_size=4, bptt=2))


def test_bits_per_character_against_a_hand_computation():
    torch.manual_seed(1)
    model = _model(9).double().eval()
    tokens = torch.randint(9, (61,))
    # One stream: the whole sequence at once, -log2 p of each next character.
    with torch.no_grad():
        log_probs = F.log_softmax(model(tokens[:-1].unsqueeze(0))[0][0], -1)
    expected = -sum(float(log_probs[t, tokens[t + 1]]) for t in range(60)) / 60 / math.log(2)
    assert bits_per_character(model, tokens, batch_size=1, bptt=7) == pytest.approx(expected, rel=1e-12)
    # Three streams of 20 predictions: each stream starts from a zero state.
    with torch.no_grad():
        total = 0.0
        for b in range(3):
            stream = tokens[b * 20 : b * 20 + 21]
            log_probs = F.log_softmax(model(stream[:-1].unsqueeze(0))[0][0], -1)
            total -= sum(float(log_probs[t, stream[t + 1]]) for t in range(20))
    assert bits_per_character(model, tokens, batch_size=3, bptt=6) == pytest.approx(total / 60 / math.log(2))
    # A model that predicts the uniform distribution scores exactly log2(vocabulary).
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    assert bits_per_character(model, tokens, batch_size=2) == pytest.approx(math.log2(9))


def test_sampling_is_seeded_and_checks_its_arguments():
    vocabulary = Vocabulary.build("abc \n")
    model = _model(len(vocabulary))
    first = sample(model, vocabulary, "ab", 30, 0.7, torch.Generator().manual_seed(3))
    second = sample(model, vocabulary, "ab", 30, 0.7, torch.Generator().manual_seed(3))
    assert first == second and first.startswith("ab") and len(first) == 32
    assert set(first) <= set(vocabulary.characters)
    # The default lead-in is read before the prompt and not returned.
    from_zero = sample(model, vocabulary, "\n\nab", 30, 0.7, torch.Generator().manual_seed(3), lead_in="")
    assert from_zero[2:] == first
    with pytest.raises(ValueError, match="temperature must be a positive number, got 0"):
        sample(model, vocabulary, "ab", 5, 0.0)
    with pytest.raises(ValueError, match="temperature must be a positive number, got -1"):
        sample(model, vocabulary, "ab", 5, -1.0)
    with pytest.raises(ValueError, match="outside the model's vocabulary: 'z'"):
        sample(model, vocabulary, "abz", 5)
    with pytest.raises(ValueError, match="length must be positive"):
        sample(model, vocabulary, "ab", 0)
    with pytest.raises(ValueError, match="the prompt must hold"):
        sample(model, vocabulary, "", 3)


def test_a_model_with_non_finite_outputs_is_not_scored_or_sampled():
    vocabulary = Vocabulary.build("abc \n")
    model = _model(len(vocabulary))
    with torch.no_grad():
        model.head.bias[1] = float("nan")
    with pytest.raises(ValueError, match="the bits per character came out nan: the model's outputs are not finite"):
        bits_per_character(model, torch.randint(len(vocabulary), (40,)), batch_size=2)
    with pytest.raises(ValueError, match="the model's outputs are not finite .*; cannot sample"):
        sample(model, vocabulary, "ab", 5)
