"""Tests for the scoped torch thread count (structnets.train.threads)."""

import pytest
import torch

from structnets.train.threads import torch_threads


def test_the_count_holds_inside_and_is_restored_even_after_an_error():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
