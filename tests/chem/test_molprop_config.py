import argparse
import math

import pytest

from structnets.chem.metrics import Task
from structnets.chem.molprop import _config_from_args, register
from structnets.chem.molprop_config import MolpropConfig, Schedule, engine_config
from structnets.chem.sources import MoleculeSet
from structnets.train.config import from_dict, to_dict
from structnets.train.engine import LRSchedule, TrainConfig, lr_factor


def _config(argv) -> MolpropConfig:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return _config_from_args(parser.parse_args(["molprop", "train", *argv]))


def test_config_errors():
    with pytest.raises(ValueError, match="exactly one"):
        MolpropConfig()
    with pytest.raises(ValueError, match="target-column"):
        MolpropConfig(data="x.csv")
    with pytest.raises(ValueError, match="unknown dataset 'tox21'; choose from esol"):
        MolpropConfig(dataset="tox21")
    with pytest.raises(ValueError, match="needs --distances"):
        MolpropConfig(dataset="esol", distance_bins=8)
    with pytest.raises(ValueError, match="qm9-npz"):
        MolpropConfig(dataset="esol", qm9_npz="x.npz")
    with pytest.raises(ValueError, match="fractions"):
        MolpropConfig(dataset="esol", fractions=(0.5, 0.1, 0.1))


def test_todays_flags_and_defaults():
    config = _config(["--dataset", "esol", "--out", "r"])
    assert config == MolpropConfig(dataset=MoleculeSet.ESOL)
    train = config.train
    assert (train.epochs, train.batch_size, train.lr, train.patience, train.clip_grad_norm) == (50, 50, 1e-3, 20, 10.0)
    assert train.ema_decay is None and train.weight_decay == 0 and train.seed == 0 and config.uses_baseline
    config = _config(
        ["--data", "m.csv", "--target-column", "u0", "--target-column", "gap", "--schedule", "warmup-decay"]
        + ["--split-sizes", "110000", "10000", "--max-seconds", "60", "--task", "classification"]
        + ["--no-composition-baseline", "--explicit-hydrogens", "--no-progress", "--out", "r"]
    )
    assert config.target_columns == ("u0", "gap") and config.lr_schedule is Schedule.WARMUP_DECAY
    assert config.split_sizes == (110000, 10000) and config.train.max_seconds == 60
    assert config.task is Task.CLASSIFICATION and not config.uses_baseline and config.explicit_hydrogens
    assert config.train.progress is False
    assert from_dict(MolpropConfig, to_dict(config)) == config


def test_every_flag_has_help_with_its_default():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    train_parser = (
        parser._subparsers._group_actions[0].choices["molprop"]._subparsers._group_actions[0].choices["train"]
    )
    for action in train_parser._actions:
        if action.dest in ("help", "out", "data", "dataset", "target_columns"):
            continue
        assert action.help and "(default: " in action.help, action.dest


def test_warmup_decay_becomes_the_engines_exponential_schedule():
    config = MolpropConfig(dataset="esol", lr_schedule=Schedule.WARMUP_DECAY, warmup_epochs=2.0, final_lr_ratio=0.1)
    engine = engine_config(config, steps_per_epoch=19)
    assert engine.schedule is LRSchedule.EXPONENTIAL and engine.warmup_steps == 38 and engine.min_lr_ratio == 0.1
    assert engine.log_every == 19 and engine.epochs == 50
    total, warmup, low = 50 * 19, 38, 0.1

    def today(step):  # the schedule before the engine: chemprop's, the warm-up one step behind the engine's
        if step < warmup:
            return low + (1 - low) * step / warmup
        return low ** ((step - warmup) / (total - warmup))

    for step in range(warmup, total):
        progress = (step - warmup) / (total - warmup)
        assert lr_factor(engine, progress, step) == pytest.approx(today(step))
    for step in range(warmup):
        assert lr_factor(engine, 0.0, step) == pytest.approx(today(step + 1))
    assert math.isclose(lr_factor(engine, 1.0, total), low)


def test_plateau_keeps_its_absolute_floor():
    engine = engine_config(MolpropConfig(dataset="esol", train=TrainConfig(epochs=3, lr=0.1)), steps_per_epoch=4)
    assert engine.schedule is LRSchedule.PLATEAU and engine.warmup_steps == 0
    assert MolpropConfig(dataset="esol").train.plateau_min_lr == 1e-5
