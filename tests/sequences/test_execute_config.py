"""Tests for the Learning-to-Execute settings (structnets.sequences.execute_config)."""

import dataclasses

import pytest

from structnets.core.cells import ChainCell
from structnets.sequences.execute_config import ExecuteConfig
from structnets.sequences.programs import VOCABULARY, Curriculum, Level
from structnets.train import config as configs


def test_the_defaults_are_the_authors():
    config = ExecuteConfig()
    assert config.target == Level(6, 3) and config.curriculum is Curriculum.BLEND
    assert (config.hidden_size, config.num_layers, config.cell) == (400, 2, ChainCell.LSTM)
    assert (config.train.batch_size, config.train.clip_grad_norm) == (100, 5.0)
    assert (config.threshold, config.stall, config.mix_fraction, config.beam_width) == (0.95, 5, 0.2, 5)


def test_the_model_reads_and_writes_the_one_program_vocabulary():
    model = ExecuteConfig(hidden_size=32, bidirectional=False).model_config()
    assert model.source_vocab == model.target_vocab == len(VOCABULARY)
    assert (model.pad, model.bos, model.eos) == (VOCABULARY.pad, VOCABULARY.bos, VOCABULARY.eos)
    assert (model.hidden_size, model.bidirectional) == (32, False)


def test_the_schedule_takes_the_curriculum_settings():
    schedule = ExecuteConfig(length=3, nesting=2, curriculum=Curriculum.NAIVE, threshold=0.5, stall=0).schedule()
    assert schedule.target == Level(3, 2) and schedule.level == Level(1, 1)
    assert schedule.threshold == 0.5 and not schedule.update(0.4) and schedule.update(0.6)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="nesting in 1..10"):
        ExecuteConfig(nesting=11)
    with pytest.raises(ValueError, match="length >= 1"):
        ExecuteConfig(length=0)
    with pytest.raises(TypeError, match="must be a Curriculum"):
        ExecuteConfig(curriculum="mix")
    with pytest.raises(ValueError, match="beam_width"):
        ExecuteConfig(beam_width=-1)
    with pytest.raises(ValueError, match="counts steps"):
        ExecuteConfig(train=dataclasses.replace(ExecuteConfig().train, steps=None, epochs=1))
    with pytest.raises(ValueError, match="mix_fraction"):
        ExecuteConfig(mix_fraction=2.0)
    with pytest.raises(ValueError, match="odd"):
        ExecuteConfig(hidden_size=15)


def test_the_config_round_trips_through_json_data():
    config = ExecuteConfig(length=2, curriculum=Curriculum.MIX, cell=ChainCell.GRU)
    assert configs.from_dict(ExecuteConfig, configs.to_dict(config)) == config
