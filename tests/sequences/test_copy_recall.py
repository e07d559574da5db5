"""Tests for the copy and associative-recall tasks (structnets.sequences.copy_recall)."""

import dataclasses
import json
import math

import pytest
import torch

from structnets.cli import main
from structnets.models import Addressing, MemoryNetwork
from structnets.sequences import copy_recall
from structnets.sequences.copy_recall import MemoryTaskConfig, evaluate, load_model, run, train
from structnets.sequences.copy_recall_config import training_batch
from structnets.sequences.copy_recall_data import masked_loss
from structnets.train.checkpoint import CheckpointError, RunDirectory
from structnets.train.engine import NonFiniteLossError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = MemoryTaskConfig(
    bits=3,
    max_train_size=3,
    memory_size=8,
    hidden_size=8,
    word_size=4,
    eval_sequences=8,
    train=dataclasses.replace(MemoryTaskConfig().train, batch_size=4, steps=4, log_every=2, progress=False),
)


def _tiny(**train):
    return dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, **train))


def test_evaluating_a_size_beyond_the_memory_is_a_clear_error():
    # The copy model was built with 32 locations; a 40-step copy cannot fit.
    config = MemoryTaskConfig()
    with pytest.raises(ValueError, match="a copy of length 40 has 40 data steps, more than the 32 memory locations"):
        evaluate(copy_recall.build_model(config), config, 40)


@pytest.mark.parametrize("addressing", list(Addressing))
def test_the_network_learns_a_tiny_copy_task(addressing):
    # Lengths 1-3 of 4 bits: a few dozen steps take the loss well below chance (ln 2).
    config = MemoryTaskConfig(
        addressing=addressing, bits=4, max_train_size=3, memory_size=8, word_size=8, hidden_size=32,
        eval_sequences=64, train=dataclasses.replace(TINY.train, batch_size=16, steps=80, lr=1e-2, log_every=10),
    )  # fmt: skip
    result = train(config)
    losses = [entry["train_loss"] for entry in result.train_history]
    norms = [entry["grad_norm"] for entry in result.train_history]
    assert losses[0] > 0.6
    assert losses[-1] < 0.45, losses
    assert all(math.isfinite(value) for value in losses + norms)
    assert evaluate(result.model, config, 2)["bit_accuracy"] > 0.75


def test_the_kept_weights_are_the_best_validated():
    config = dataclasses.replace(TINY, eval_sequences=32)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=30, lr=3e-2, eval_every=5))
    result = train(config)
    losses = [entry["val_loss"] for entry in result.validation_history]
    assert [entry["step"] for entry in result.validation_history] == [5, 10, 15, 20, 25, 30]
    assert result.best["val_loss"] == min(losses)
    generator = torch.Generator().manual_seed(config.train.seed + 3 * copy_recall._EVAL_SEED_OFFSET)
    held_out = training_batch(config, generator, config.eval_sequences)
    with torch.no_grad():
        kept = masked_loss(result.model(held_out.inputs).outputs, held_out)
    assert float(kept) == pytest.approx(result.best["val_loss"], abs=1e-6)


def test_run_writes_artefacts_and_the_checkpoint_reloads(tmp_path):
    outcome = run(TINY, tmp_path)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == json.loads(json.dumps(outcome.metrics))
    assert written["test"]["size"] == 6 and written["finite"] is True
    assert list(written["accuracy_by_size"]) == [str(s) for s in range(1, 7)]
    assert written["clipped_steps"] == 0 and len(written["grad_norm_curve"]) == 2
    assert "train_seconds" not in written and json.loads((tmp_path / "timing.json").read_text())["train_seconds"] > 0
    for picture in ("training.png", "weightings.png"):
        assert (tmp_path / picture).read_bytes()[:4] == b"\x89PNG"
    model, restored = load_model(tmp_path)
    assert isinstance(model, MemoryNetwork) and restored == TINY
    assert evaluate(model, restored) == outcome.metrics["test"]


def test_clipped_steps_are_counted():
    result = train(_tiny(clip_grad_norm=1e-6))
    assert result.clipped_steps == 4


def test_same_seed_gives_identical_metrics_json(tmp_path):
    run(TINY, tmp_path / "a")
    run(TINY, tmp_path / "b")
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    run(_tiny(seed=1), tmp_path / "c")
    assert (tmp_path / "c" / "metrics.json").read_bytes() != (tmp_path / "a" / "metrics.json").read_bytes()


def test_resume_continues_where_the_run_stopped(tmp_path):
    straight = run(_tiny(steps=8, eval_every=4), tmp_path / "straight")
    run(_tiny(steps=4, eval_every=4), tmp_path / "resumed")
    resumed = run(_tiny(steps=8, eval_every=4, resume=tmp_path / "resumed"), tmp_path / "resumed")
    assert resumed.metrics["train_steps"] == 8
    assert resumed.metrics == straight.metrics


def test_a_non_finite_loss_stops_training_before_anything_is_saved(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(copy_recall, "masked_loss", lambda logits, batch: logits.sum() * math.nan)
    with pytest.raises(NonFiniteLossError, match=r"copy dnc: the training loss is nan at step 1; nothing was saved"):
        run(TINY, tmp_path / "run")
    assert not (tmp_path / "run" / "model.pt").exists()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_model(tmp_path / "run")
    # on the command line: exit 2, one line naming the step
    flags = ["--steps", "2", "--hidden-size", "8", "--word-size", "4", "--batch-size", "2", "--eval-sequences", "4"]
    assert main(["memory", "train", "--out", str(tmp_path / "cli"), *flags, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and "structnets memory: error: copy dnc: the training loss is nan at step 1" in err
    )


def test_a_model_with_non_finite_outputs_is_not_scored():
    model = copy_recall.build_model(TINY)
    with torch.no_grad():
        model.output.bias.fill_(math.nan)
    # a threshold at 0 would score NaN outputs as all-zero bits: refused instead
    with pytest.raises(ValueError, match=r"memory: the model's outputs on sequences of size 6: NaN in row\(s\) 0, 1"):
        evaluate(model, TINY)


def test_evaluate_refuses_an_incomplete_run_and_another_tasks_run(tmp_path, capsys):
    RunDirectory.start(tmp_path / "interrupted", task=copy_recall.TASK)
    assert main(["memory", "evaluate", "--model", str(tmp_path / "interrupted")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"{tmp_path / 'interrupted'}: the run is incomplete" in error
    other = RunDirectory.start(tmp_path / "other", task="palindrome")
    other.save_model(copy_recall.build_model(TINY), task_config=TINY)
    other.finish()
    assert main(["memory", "evaluate", "--model", str(tmp_path / "other")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "a run of task 'palindrome', but 'memory' was expected" in error


def test_cli_trains_and_evaluates(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--out", str(out), "--steps", "2", "--hidden-size", "8", "--word-size", "4", "--batch-size", "2"]
    common += ["--eval-sequences", "4", "--no-progress", "--grad-clip-norm", "5", "--max-train-seconds", "60"]
    common += ["--num-threads", "1", "--seed", "2", "--lr", "0.002", "--device", "cpu"]
    assert main(["memory", "train", "--task", "recall", "--addressing", "ntm", "--max-train-size", "3", *common]) == 0
    assert "recall (NTM): per-bit accuracy" in capsys.readouterr().out
    _, config = load_model(out)
    assert (config.bits, config.min_size, config.max_train_size, config.memory_size) == (6, 2, 3, 48)
    assert (config.train.clip_grad_norm, config.train.max_seconds, config.train.seed) == (5.0, 60.0, 2)
    assert main(["memory", "evaluate", "--model", str(out), "--length", "4", "--plot", str(tmp_path / "w.png")]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == 4
    assert (tmp_path / "w.png").read_bytes()[:4] == b"\x89PNG"
    # 20 items of 3 steps need 60 locations; the recall model has 48.
    assert main(["memory", "evaluate", "--model", str(out), "--length", "20"]) == 2
    assert "more than the 48 memory locations" in capsys.readouterr().err
    assert main(["memory", "train", "--memory-size", "0", *common]) == 2
    assert "memory_size must be a positive integer, got 0" in capsys.readouterr().err
