"""Tests for the palindrome task (structnets.sequences.palindrome); all run in seconds."""

import argparse
import dataclasses
import json

import pytest
import torch
from torch.nn import functional as F

from structnets.cli import main
from structnets.core.cells import ChainCell
from structnets.models import SequenceClassifier
from structnets.sequences import palindrome
from structnets.sequences.palindrome import PalindromeConfig, evaluate, load_model, run, train
from structnets.sequences.palindrome_data import sample_training_batch
from structnets.train import config as configs
from structnets.train.checkpoint import CheckpointError, RunDirectory
from structnets.train.engine import LRSchedule, NonFiniteLossError

pytestmark = pytest.mark.usefixtures("one_thread")

# Small enough that a full run (train + evaluate 1..12 + plot) takes well under a second.
TINY = PalindromeConfig(
    hidden_size=16,
    embedding_size=8,
    mlp_hidden_size=16,
    max_eval_length=12,
    eval_per_length=40,
    val_sequences=64,
    train=dataclasses.replace(
        PalindromeConfig().train, batch_size=32, steps=20, warmup_steps=2, log_every=5, progress=False
    ),
)


def _tiny(**train):
    return dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, **train))


def test_a_few_dozen_steps_lower_the_loss():
    # Lengths 1-3 leave the initial plateau within a few dozen steps; lengths up to 10
    # take a few hundred, too slow for a unit test.
    config = dataclasses.replace(
        TINY,
        max_train_length=3,
        hidden_size=32,
        embedding_size=16,
        mlp_hidden_size=32,
        train=dataclasses.replace(TINY.train, batch_size=64, steps=60, lr=1e-2, warmup_steps=5, log_every=10),
    )
    result = train(config)
    curve = [entry["train_loss"] for entry in result.train_history]
    assert result.steps == 60 and len(curve) == 6
    assert curve[-1] < curve[0] - 0.15
    assert isinstance(result.model, SequenceClassifier) and not result.model.training


def test_evaluate_covers_every_length():
    model = train(TINY).model
    accuracy = evaluate(model, TINY)["accuracy_by_length"]
    assert list(accuracy) == [str(length) for length in range(1, 13)]
    assert all(0.0 <= value <= 1.0 for value in accuracy.values())
    assert list(evaluate(model, TINY, max_length=3, per_length=8)["accuracy_by_length"]) == ["1", "2", "3"]
    # The set for a length does not depend on how many lengths are evaluated.
    assert evaluate(model, TINY, max_length=3)["accuracy_by_length"]["3"] == accuracy["3"]


def test_the_kept_weights_are_the_best_validated():
    config = _tiny(eval_every=4, steps=24, lr=3e-2)
    result = train(config)
    losses = [entry["val_loss"] for entry in result.validation_history]
    assert len(losses) == 6 and result.best["val_loss"] == min(losses)
    # The returned model scores the best loss on the validation batch, not the last one.
    generator = torch.Generator().manual_seed(config.train.seed + 2 * palindrome._EVAL_SEED_OFFSET)
    tokens, lengths, labels = sample_training_batch(config.val_sequences, 10, 10, generator)
    with torch.no_grad():
        kept = F.binary_cross_entropy_with_logits(result.model(tokens, lengths).squeeze(-1), labels)
    assert float(kept) == pytest.approx(result.best["val_loss"], abs=1e-6)
    # An EMA of the weights is what gets validated and kept when asked for.
    averaged = train(_tiny(eval_every=4, steps=24, lr=3e-2, ema_decay=0.9))
    assert averaged.best["val_loss"] != result.best["val_loss"]


def test_run_writes_a_complete_run_directory(tmp_path):
    config = dataclasses.replace(TINY, max_eval_length=40, eval_per_length=10)
    outcome = run(config, tmp_path)

    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == json.loads(json.dumps(outcome.metrics))
    accuracy = written["accuracy_by_length"]
    assert list(accuracy) == [str(length) for length in range(1, 41)]
    assert all(0.0 <= value <= 1.0 for value in accuracy.values())
    assert written["train_steps"] == 20 and written["stop"] == "done"
    assert len(written["train_loss_curve"]) == 20 // 5
    assert "train_seconds" not in written and "config" not in written  # results only
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["train_seconds"] > 0 and timing["steps_per_second"] > 0
    assert (tmp_path / "accuracy_by_length.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "complete"

    reloaded, restored = load_model(tmp_path)
    assert restored == config
    assert evaluate(reloaded, restored) == {"accuracy_by_length": accuracy}
    assert load_model(tmp_path / "model.pt")[1] == config


def test_same_seed_gives_identical_metrics_json(tmp_path):
    run(TINY, tmp_path / "a")
    run(TINY, tmp_path / "b")
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    run(_tiny(seed=1), tmp_path / "c")
    first = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["train_loss_curve"] != first["train_loss_curve"]


def test_resume_continues_where_the_run_stopped(tmp_path):
    # A constant learning rate: the schedule does not depend on the total, so ten steps and
    # then ten more must be the same run as twenty at once, data stream included.
    straight = run(_tiny(schedule=LRSchedule.CONSTANT, warmup_steps=0), tmp_path / "straight")
    run(_tiny(schedule=LRSchedule.CONSTANT, warmup_steps=0, steps=10), tmp_path / "resumed")
    resumed = run(
        _tiny(schedule=LRSchedule.CONSTANT, warmup_steps=0, resume=tmp_path / "resumed"), tmp_path / "resumed"
    )
    assert resumed.metrics["train_steps"] == 20
    assert resumed.metrics["train_loss_curve"] == straight.metrics["train_loss_curve"]
    assert resumed.metrics["accuracy_by_length"] == straight.metrics["accuracy_by_length"]


def test_loading_refuses_an_incomplete_run_and_another_tasks_run(tmp_path, capsys):
    RunDirectory.start(tmp_path / "interrupted", task=palindrome.TASK)  # never finished
    with pytest.raises(CheckpointError, match="interrupted: the run is incomplete"):
        load_model(tmp_path / "interrupted")
    other = RunDirectory.start(tmp_path / "other", task="memory")
    other.save_model(palindrome.build_model(TINY), task_config=TINY)
    other.finish()
    with pytest.raises(CheckpointError, match="a run of task 'memory', but 'palindrome' was expected"):
        load_model(tmp_path / "other")
    assert main(["palindrome", "evaluate", "--model", str(tmp_path / "other")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(tmp_path / "other") in error


def test_the_command_keeps_every_old_flag_and_evaluates(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    palindrome.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "run"
    flags = ["--cell", "gru", "--bidirectional", "--out", str(out), "--steps", "3", "--hidden-size", "8"]
    flags += ["--num-layers", "2", "--batch-size", "16", "--lr", "0.01", "--seed", "3", "--eval-per-length", "10"]
    flags += ["--max-eval-length", "12", "--max-train-seconds", "60", "--no-progress", "--device", "cpu"]
    args = parser.parse_args(["palindrome", *flags])
    config = configs.from_args(PalindromeConfig, args)
    assert (config.cell, config.bidirectional, config.hidden_size, config.num_layers) == (ChainCell.GRU, True, 8, 2)
    train = config.train
    assert (train.steps, train.batch_size, train.lr, train.seed, train.max_seconds) == (3, 16, 0.01, 3, 60.0)
    assert not train.progress and train.warmup_steps == 300  # options left out keep the task's defaults
    assert (config.eval_per_length, config.max_eval_length) == (10, 12)
    assert args.func(args) == 0
    assert "| L=1 |" in capsys.readouterr().out
    assert (out / "metrics.json").is_file()

    assert main(["palindrome", "evaluate", "--model", str(out), "--max-eval-length", "3"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert list(json.loads(printed[-1])["accuracy_by_length"]) == ["1", "2", "3"]


def test_help_shows_every_flag_with_its_default():
    parser = argparse.ArgumentParser()
    text = palindrome.register(parser.add_subparsers(dest="command")).format_help()
    for flag, default in [("--steps", "4500"), ("--cell", "lstm"), ("--lr", "0.004"), ("--batch-size", "512")]:
        assert flag in text and f"(default: {default})" in text
    assert "--max-train-seconds" in text and "--resume" in text and "--ema-decay" in text


def test_a_non_finite_loss_in_palindrome_stops_with_the_step_named(tmp_path, monkeypatch):
    steps, original = [], palindrome._loss

    def loss(model, batch):  # the fourth training step's loss is infinite
        steps.append(None)
        return original(model, batch) * (float("inf") if len(steps) == 4 else 1.0)

    monkeypatch.setattr(palindrome, "_loss", loss)
    with pytest.raises(
        NonFiniteLossError, match=r"palindrome lstm: the training loss is inf at step 4; nothing was saved"
    ):
        run(_tiny(), tmp_path / "run")
    assert not (tmp_path / "run" / "model.pt").exists()


def test_a_model_with_non_finite_outputs_is_not_scored():
    model = palindrome.build_model(TINY)
    with torch.no_grad():
        model.embedding.weight.fill_(float("nan"))
    # NaN > 0 is False: the model would seem to answer "no" everywhere; refused instead
    with pytest.raises(ValueError, match=r"palindrome: the model's outputs at length 1: NaN in row\(s\) 0, 1"):
        evaluate(model, TINY)
