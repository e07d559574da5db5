"""Tests for the copy and associative-recall data (structnets.sequences.copy_recall_data)."""

import pytest
import torch

from structnets.sequences.copy_recall_data import copy_batch, recall_batch


def test_copy_batch_layout():
    batch = copy_batch(torch.tensor([3, 1]), 4, torch.Generator().manual_seed(0))
    assert batch.inputs.shape == (2, 7, 5) and batch.targets.shape == (2, 7, 4)
    for row, length in enumerate([3, 1]):
        data = batch.inputs[row, :length, :4]
        assert batch.inputs[row, length].tolist() == [0, 0, 0, 0, 1]  # the delimiter step
        assert float(batch.inputs[row, length + 1 :].abs().sum()) == 0  # blank while answering
        torch.testing.assert_close(batch.targets[row, length + 1 : 2 * length + 1], data)
        assert batch.mask[row].tolist() == [0.0] * (length + 1) + [1.0] * length + [0.0] * (6 - 2 * length)


def test_recall_batch_asks_for_the_item_after_the_query():
    batch = recall_batch(torch.tensor([3, 5, 2]), 2, 4, torch.Generator().manual_seed(5))
    for row, count in enumerate([3, 5, 2]):
        inputs = batch.inputs[row]
        starts = torch.nonzero(inputs[:, 4]).view(-1).tolist()
        assert starts == [3 * k for k in range(count)]
        items = [inputs[s + 1 : s + 3, :4] for s in starts]
        query_marks = torch.nonzero(inputs[:, 5]).view(-1).tolist()
        assert query_marks == [3 * count, 3 * count + 3]
        query = inputs[3 * count + 1 : 3 * count + 3, :4]
        position = next(k for k, item in enumerate(items) if torch.equal(item, query))
        answer = batch.targets[row][batch.mask[row] == 1]
        torch.testing.assert_close(answer, items[position + 1])


def test_sizes_below_the_minimum_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        copy_batch(torch.tensor([2, 0]), 4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="at least 2 items"):
        recall_batch(torch.tensor([1]), 2, 4, torch.Generator().manual_seed(0))


def test_the_generator_alone_fixes_the_batch_and_to_keeps_it():
    first = copy_batch(torch.tensor([4, 2]), 3, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # the global generator plays no part
    second = copy_batch(torch.tensor([4, 2]), 3, torch.Generator().manual_seed(7)).to("cpu")
    for a, b in zip((first.inputs, first.targets, first.mask), (second.inputs, second.targets, second.mask)):
        assert torch.equal(a, b)
