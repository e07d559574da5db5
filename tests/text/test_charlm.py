"""The character-level language-model task: TBPTT through the engine, the best estimate kept, the CLI."""

import collections
import dataclasses
import json
import math

import pytest
import torch
from torch.nn import functional as F

from structnets.cli import main
from structnets.core.cells import ChainCell
from structnets.models import CharLM
from structnets.text.characters import bits_per_character
from structnets.text.charlm import CarriedState, CharLMTaskConfig, load_run, train
from structnets.text.shakespeare import load_tiny_shakespeare, split_text
from structnets.train.checkpoint import RunDirectory, load_checkpoint
from structnets.train.config import from_dict
from structnets.train.engine import LRSchedule

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(**train) -> CharLMTaskConfig:
    base = CharLMTaskConfig().train
    small = {"batch_size": 4, "steps": 6, "eval_every": 2, "warmup_steps": 2, "progress": False, **train}
    return CharLMTaskConfig(
        hidden_size=16, num_layers=1, embedding_size=6, bptt=8, eval_chars=400, eval_batch_size=4, sample_length=10,
        sample_prompt="First", train=dataclasses.replace(base, **small),
    )  # fmt: skip


def test_defaults_are_todays():
    config = CharLMTaskConfig()
    assert (config.cell, config.hidden_size, config.num_layers, config.bptt) == (ChainCell.LSTM, 256, 2, 100)
    train = config.train
    assert (train.steps, train.batch_size, train.lr, train.warmup_steps, train.min_lr_ratio) == (
        1250,
        64,
        3e-3,
        30,
        0.05,
    )
    assert train.schedule is LRSchedule.COSINE and train.clip_grad_norm == 1.0 and train.eval_every == 125


def test_the_loss_carries_the_state_between_chunks():
    model = CharLM(_config().model_config(7)).double()
    tokens = torch.randint(7, (2, 13))
    logits, _ = model(tokens[:, :12])
    second_half = F.cross_entropy(logits[:, 6:].reshape(-1, 7), tokens[:, 7:13].reshape(-1))
    carried = CarriedState()
    first = carried(model, (tokens[:, :6], tokens[:, 1:7]))
    assert not carried.state[0].requires_grad  # detached: backpropagation stops at the chunk's end
    torch.testing.assert_close(carried(model, (tokens[:, 6:12], tokens[:, 7:13])), second_half)
    carried.reset()  # a new pass over the text starts from the zero state
    assert carried.state is None
    torch.testing.assert_close(carried(model, (tokens[:, :6], tokens[:, 1:7])), first)


def test_training_lowers_validation_bits_and_writes_artefacts(tmp_path, data_dir):
    text = load_tiny_shakespeare(data_dir)[:30_000]
    config = dataclasses.replace(
        _config(batch_size=16, lr=1e-2, steps=60, warmup_steps=5, eval_every=20),
        hidden_size=64, embedding_size=16, bptt=32, eval_chars=2000, eval_batch_size=32, sample_length=40,
    )  # fmt: skip
    metrics = train(config, tmp_path, text=text)
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
    model, vocabulary = load_run(tmp_path)
    assert model.config.hidden_size == 64 and vocabulary.characters == "".join(sorted(set(text)))
    assert from_dict(CharLMTaskConfig, load_checkpoint(tmp_path, task="charlm").task_config) == config
    assert bits_per_character(model, vocabulary.encode(val_text), config.eval_batch_size) == pytest.approx(
        written["val_bpc"], rel=1e-5
    )
    # the kept weights are those of the best validation estimate
    best = min(written["val_bpc_curve"], key=lambda entry: entry[1])
    assert (written["best_step"], written["best_val_bpc_estimate"]) == tuple(best)
    estimate = bits_per_character(model, vocabulary.encode(val_text)[: config.eval_chars + 1], config.eval_batch_size)
    assert estimate == pytest.approx(best[1], rel=1e-5)


def test_the_best_estimate_is_kept_when_training_overshoots(tmp_path):
    # A tiny text learnt at a large constant rate: the validation estimate turns worse again.
    text = ("abcabcabd" * 40 + "\n") * 3 + "abdabdabc" * 40
    config = _config(lr=0.3, schedule=LRSchedule.CONSTANT, warmup_steps=0, steps=40, eval_every=2, batch_size=2)
    metrics = train(dataclasses.replace(config, eval_chars=200, sample_prompt="ab"), tmp_path, text=text)
    curve = metrics["val_bpc_curve"]
    best_step, best = min(curve, key=lambda entry: entry[1])
    assert best < curve[-1][1] and metrics["best_step"] == best_step < 40
    model, vocabulary = load_run(tmp_path)
    val_estimate = vocabulary.encode(split_text(text)[1])[:201]
    assert bits_per_character(model, val_estimate, config.eval_batch_size) == pytest.approx(best, rel=1e-5)


def test_same_seed_same_metrics_and_resume_continues(tmp_path, data_dir):
    text = load_tiny_shakespeare(data_dir)[:5000]
    train(_config(), tmp_path / "a", text=text)
    train(_config(), tmp_path / "b", text=text)
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    train(_config(steps=4), tmp_path / "c", text=text)
    resumed = train(_config(steps=8, resume=tmp_path / "c"), tmp_path / "c", text=text)
    assert resumed["train_steps"] == 8 and [step for step, _ in resumed["val_bpc_curve"]] == [2, 4, 6, 8]


def test_cli_train_and_sample(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    train_args = ["charlm", "train", "--out", str(out), "--data-dir", str(data_dir), "--hidden-size", "16"]
    train_args += ["--num-layers", "1", "--steps", "2", "--batch-size", "64", "--bptt", "8", "--eval-every", "1"]
    train_args += ["--max-train-seconds", "60", "--cell", "gru", "--sample-length", "10", "--eval-chars", "500"]
    assert main([*train_args, "--no-progress"]) == 0
    assert "bits per character" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["config"]["cell"] == "gru"
    assert main(["charlm", "sample", "--model", str(out), "--prompt", "ROMEO:", "--length", "20"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    assert main(["charlm", "sample", "--model", str(out), "--prompt", "Ωmega~", "--temperature", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "outside the model's vocabulary: '~', 'Ω'" in err
    assert main(["charlm", "sample", "--model", str(out), "--prompt", "A", "--temperature", "0"]) == 2
    assert "temperature must be a positive number" in capsys.readouterr().err
    assert main(["charlm", "sample", "--model", str(tmp_path / "nothing"), "--prompt", "A"]) == 2
    assert "no run directory" in capsys.readouterr().err
    # a sample prompt the text cannot spell fails before any training
    assert main([*train_args, "--sample-prompt", "Ω", "--out", str(tmp_path / "never")]) == 2
    assert "outside the model's vocabulary: 'Ω'" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_sample_refuses_an_incomplete_run_and_another_task(tmp_path, capsys):
    RunDirectory.start(tmp_path / "interrupted", task="charlm")  # never finished
    assert main(["charlm", "sample", "--model", str(tmp_path / "interrupted"), "--prompt", "A"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted: the run is incomplete" in err
    RunDirectory.start(tmp_path / "trees", task="trees").finish()
    assert main(["charlm", "sample", "--model", str(tmp_path / "trees"), "--prompt", "A"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trees: a run of task 'trees', but 'charlm' was expected" in err


def test_a_non_finite_loss_in_charlm_stops_with_the_step_named(tmp_path, monkeypatch):
    from structnets.text import charlm
    from structnets.train.engine import NonFiniteLossError

    calls = collections.Counter()

    def cross_entropy(logits, targets):
        calls["loss"] += 1
        return F.cross_entropy(logits, targets) * (math.inf if calls["loss"] == 3 else 1.0)

    monkeypatch.setattr(charlm, "F", type("F", (), {"cross_entropy": staticmethod(cross_entropy)}))
    text = ("abcabcabd" * 40 + "\n") * 3
    with pytest.raises(NonFiniteLossError, match=r"charlm lstm: the training loss is inf at step 3; nothing was saved"):
        train(dataclasses.replace(_config(), sample_prompt="ab"), tmp_path, text=text)
    assert not (tmp_path / "model.pt").exists()
