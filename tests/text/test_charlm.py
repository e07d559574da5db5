"""Tests for the character-level language model (structnets.tasks.charlm)."""

import collections
import json
import math

import pytest
import torch
from torch.nn import functional as F

from structnets.cli import main
from structnets.text.charlm import (
    TINY_SHAKESPEARE_URL,
    CharLM,
    CharLMConfig,
    Vocabulary,
    bits_per_character,
    load_model,
    load_tiny_shakespeare,
    run,
    sample,
    split_text,
    stream_chunks,
)

SMALL = CharLMConfig(hidden_size=24, num_layers=2, embedding_size=8, batch_size=4, bptt=16)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_shakespeare_loads_from_the_data_directory(data_dir):
    text = load_tiny_shakespeare(data_dir)
    assert len(text) == 1_115_394
    assert text.startswith("First Citizen:")
    train, val = split_text(text)
    assert (len(train), len(val)) == (1_003_854, 111_540)
    assert train + val == text
    assert len(Vocabulary.build(text)) == 65


def test_a_missing_dataset_names_the_canonical_url(tmp_path):
    with pytest.raises(FileNotFoundError, match="karpathy/char-rnn/master/data/tinyshakespeare/input.txt"):
        load_tiny_shakespeare(tmp_path)
    assert TINY_SHAKESPEARE_URL.endswith("tinyshakespeare/input.txt")


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


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_carrying_the_state_across_chunks_equals_one_long_pass(cell):
    torch.manual_seed(0)
    model = CharLM(11, CharLMConfig(cell=cell, hidden_size=16, num_layers=2, embedding_size=6)).double().eval()
    tokens = torch.randint(11, (3, 40))
    whole, _ = model(tokens)
    pieces, hx = [], None
    for start in range(0, 40, 9):
        logits, hx = model(tokens[:, start : start + 9], hx)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, 1), whole)


def test_the_model_matches_torch_nn_lstm_with_the_same_weights():
    model = CharLM(13, SMALL).double().eval()
    reference = model.rnn.to_torch()
    tokens = torch.randint(13, (2, 12))
    assert isinstance(reference, torch.nn.LSTM) and reference.batch_first
    expected = model.head(reference(model.embedding(tokens))[0])
    torch.testing.assert_close(model(tokens)[0], expected)


def test_bits_per_character_against_a_hand_computation():
    torch.manual_seed(1)
    model = CharLM(9, SMALL).double().eval()
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
    model = CharLM(len(vocabulary), SMALL)
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


def test_training_lowers_validation_bits_and_writes_artefacts(tmp_path, data_dir):
    text = load_tiny_shakespeare(data_dir)[:30_000]
    config = CharLMConfig(
        hidden_size=64, num_layers=1, embedding_size=16, batch_size=16, bptt=32, lr=1e-2, steps=60,
        warmup_steps=5, eval_every=20, eval_chars=2000, sample_length=40, sample_prompt="First",
    )  # fmt: skip
    metrics = run(config, tmp_path, progress=False, text=text)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["val_bpc"] == pytest.approx(metrics["val_bpc"])
    uniform = math.log2(written["vocab_size"])
    first_val, last_val = written["val_bpc_curve"][0][1], written["val_bpc_curve"][-1][1]
    assert last_val < first_val < uniform
    # Beats the training text's character frequencies (a unigram model, about 4.7 bits here).
    train_text, val_text = split_text(text)
    counts = collections.Counter(train_text)
    unigram = -sum(math.log2(counts[char] / len(train_text)) for char in val_text) / len(val_text)
    assert written["val_bpc"] < unigram - 0.5
    assert written["sample"].startswith("First") and len(written["sample"]) == 45
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(checkpoint) == {"state_dict", "config", "vocabulary"}
    model, vocabulary, restored = load_model(tmp_path)
    assert restored == config
    assert bits_per_character(model, vocabulary.encode(val_text), config.eval_batch_size) == pytest.approx(
        written["val_bpc"], rel=1e-5
    )


def test_cli_train_and_sample(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    train_args = ["charlm", "train", "--out", str(out), "--data-dir", str(data_dir), "--hidden-size", "16"]
    train_args += ["--num-layers", "1", "--steps", "2", "--batch-size", "64", "--bptt", "8", "--eval-every", "1"]
    assert main([*train_args, "--no-progress"]) == 0
    assert "bits per character" in capsys.readouterr().out
    assert main(["charlm", "sample", "--model", str(out), "--prompt", "ROMEO:", "--length", "20"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    assert main(["charlm", "sample", "--model", str(out), "--prompt", "Ωmega~", "--temperature", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "outside the model's vocabulary: '~', 'Ω'" in err
    assert main(["charlm", "sample", "--model", str(out), "--prompt", "A", "--temperature", "0"]) == 2
    assert "temperature must be a positive number" in capsys.readouterr().err
    assert main(["charlm", "sample", "--model", str(tmp_path / "nothing"), "--prompt", "A"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
