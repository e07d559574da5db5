"""Tests for the copy and recall settings (structnets.sequences.copy_recall_config)."""

import json

import pytest
import torch

from structnets.sequences.copy_recall_config import MemoryTaskConfig, check_capacity, make_batch, training_batch
from structnets.sequences.copy_recall_data import Task
from structnets.train import config as configs


def test_defaults_are_todays_and_recall_gets_its_own_sizes():
    copy = MemoryTaskConfig()
    assert (copy.bits, copy.min_size, copy.max_train_size, copy.memory_size, copy.test_size) == (8, 1, 10, 32, 20)
    train = copy.train
    assert (train.steps, train.batch_size, train.lr, train.clip_grad_norm, train.log_every) == (5000, 32, 1e-3, 10, 50)
    recall = MemoryTaskConfig(task=Task.RECALL)
    assert (recall.bits, recall.min_size, recall.max_train_size, recall.memory_size) == (6, 2, 6, 48)
    assert configs.from_dict(MemoryTaskConfig, json.loads(json.dumps(configs.to_dict(recall)))) == recall


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="memory_size must be a positive integer"):
        MemoryTaskConfig(memory_size=0)
    # The copy model was built with 32 locations; a 40-step copy cannot fit.
    config = MemoryTaskConfig()
    with pytest.raises(ValueError, match="a copy of length 40 has 40 data steps, more than the 32 memory locations"):
        check_capacity(config, 40)
    with pytest.raises(ValueError, match="more than the 32 memory locations"):
        MemoryTaskConfig(max_train_size=20, eval_size=40)
    with pytest.raises(ValueError, match="min_size"):
        MemoryTaskConfig(task=Task.RECALL, min_size=1)


def test_training_batches_draw_sizes_in_the_training_range():
    config = MemoryTaskConfig(task=Task.RECALL)
    batch = training_batch(config, torch.Generator().manual_seed(0), 200)
    assert set(batch.sizes.tolist()) == set(range(2, 7))
    assert batch.inputs.shape[-1] == 6 + 2
    check_capacity(config, 16)  # 16 items of 3 steps fill 48 locations exactly
    with pytest.raises(ValueError, match="recall of 17 items has 51 data steps"):
        make_batch(config, torch.tensor([17]), torch.Generator())
