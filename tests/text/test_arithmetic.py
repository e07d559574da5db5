"""Arithmetic from syntax trees: the expressions, the task through the engine, its command."""

import dataclasses
import json
import random

import pytest
import torch

from structnets.cli import main
from structnets.text.arithmetic import ArithmeticConfig, expression_tree, random_expression, train
from structnets.train.checkpoint import load_model, open_run
from structnets.train.engine import LRSchedule, NonFiniteLossError

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(**train):
    config = ArithmeticConfig(
        train_depth=2, test_depth=3, train_examples=200, val_examples=40, test_examples_per_depth=20
    )
    return dataclasses.replace(
        config, train=dataclasses.replace(config.train, **{"epochs": 2, "progress": False, **train})
    )


def test_random_expressions_have_the_asked_depth_and_value():
    rng = random.Random(0)
    for depth in range(0, 6):
        for _ in range(20):
            expression = random_expression(depth, rng)
            tree, value = expression_tree(expression)
            assert value == eval(expression) % 10  # noqa: S307  (test-only check against Python itself)
            # operator depth: BinOps on the longest root-to-leaf path
            binops = [t == "BinOp" for t in tree.tokens]
            deepest = 0
            for node in range(len(tree)):
                count, at = 0, node
                while at is not None:
                    count += binops[at]
                    at = tree.parents[at]
                deepest = max(deepest, count)
            assert deepest == depth
    with pytest.raises(ValueError, match="only \\+ - \\* and integer literals"):
        expression_tree("2 / 3")


def test_arithmetic_task_writes_its_table_and_plot(tmp_path):
    metrics = train(_config(), tmp_path / "run")
    assert list(metrics["accuracy_by_depth"]) == ["1", "2", "3"]
    assert all(0 <= v <= 1 for v in metrics["accuracy_by_depth"].values())
    assert (tmp_path / "run" / "accuracy_by_depth.png").stat().st_size > 1000
    model, checkpoint = load_model(open_run(tmp_path / "run", task="arithmetic"), task="arithmetic")
    assert checkpoint.extra["vocabulary"][0] == "<unk>" and model.config.num_children == 3
    # the epoch with the best held-out accuracy is the one kept
    validations = [h["val_loss"] for h in metrics["history"] if "val_loss" in h]
    assert len(validations) == 2 and metrics["val_loss"] == min(validations)
    with pytest.raises(ValueError, match="train_depth <= test_depth"):
        ArithmeticConfig(train_depth=4, test_depth=3)


def test_same_seed_same_metrics_and_resume_continues(tmp_path):
    train(_config(), tmp_path / "a")
    train(_config(), tmp_path / "b")
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    # A constant rate: a run stopped after one epoch and resumed for a second then follows
    # the same schedule as one run of two (a decaying schedule's length is the run's).
    constant = {"schedule": LRSchedule.CONSTANT}
    whole = train(_config(**constant), tmp_path / "d")
    train(_config(epochs=1, **constant), tmp_path / "c")
    resumed = train(_config(epochs=2, resume=tmp_path / "c", **constant), tmp_path / "c")
    assert resumed["accuracy_by_depth"] == whole["accuracy_by_depth"]
    assert [h for h in resumed["history"] if "val_loss" in h] == [h for h in whole["history"] if "val_loss" in h]


def test_arithmetic_command_line(tmp_path):
    arithmetic = ["trees", "arithmetic", "--train-depth", "1", "--test-depth", "2", "--train-examples", "50"]
    arithmetic += ["--val-examples", "10", "--epochs", "1", "--test-examples-per-depth", "10"]
    assert main([*arithmetic, "--out", str(tmp_path / "ar"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "ar" / "metrics.json").read_text())["train_depths"] == [1]


def test_a_non_finite_loss_in_arithmetic_stops_with_the_step_named(tmp_path, monkeypatch):
    from structnets.text import arithmetic

    steps = []

    def loss(model, example):  # the third training step's loss is NaN (validation also calls it)
        steps.extend([None] if model.training else [])
        return model(example[0]).sum() * 0 + (float("nan") if len(steps) == 3 else 1.0)

    monkeypatch.setattr(arithmetic, "_root_loss", loss)
    with pytest.raises(NonFiniteLossError, match=r"arithmetic: the training loss is nan at step 3; nothing was saved"):
        train(_config(), tmp_path / "run")
    assert not (tmp_path / "run" / "model.pt").exists()


def test_a_model_with_non_finite_outputs_is_not_scored(tmp_path, monkeypatch):
    from structnets.text import arithmetic

    def broken(model, example):  # a finite loss, whose step leaves the weights NaN
        loss = model(example[0]).sum() * 0
        with torch.no_grad():
            model.output.bias.fill_(float("nan"))
        return loss

    monkeypatch.setattr(arithmetic, "_root_loss", broken)
    with pytest.raises(ValueError, match=r"arithmetic: the model's outputs on the validation expressions: NaN in row"):
        train(dataclasses.replace(_config(epochs=1), train_examples=100), tmp_path / "run")  # one step
    assert not (tmp_path / "run" / "model.pt").exists()
