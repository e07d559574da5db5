"""The level loop captured per schedule: the same states and gradients as eager.

Without a GPU the CUDA-graph replay itself cannot run here; on a CPU the same call
compiles the whole loop with inductor, which these tests check against eager.
"""

import pytest
import torch
from torch.testing import assert_close

import structnets as sn
from structnets.core.capture import capture_levels
from structnets.core.chains import forest_edges
from structnets.core.propagate import propagate_levels
from structnets.core.schedules import topological_levels


@pytest.mark.parametrize("make", [sn.LSTMCell, sn.ChildSumTreeLSTMCell])
def test_a_captured_level_loop_matches_eager_with_gradients(make):
    torch._dynamo.reset()
    torch.manual_seed(0)
    edges = forest_edges([None, 0, 0, 1, 1, 2, None, 6])  # two trees
    cell = make(3, 4)
    x = torch.randn(8, 3, requires_grad=True)
    run = capture_levels(cell, edges, 8)
    for inputs in (x, torch.randn(8, 3, requires_grad=True)):  # a second call replays
        h, c = run(inputs)
        expected_h, expected_c = propagate_levels(cell, inputs, topological_levels(edges, 8))
        assert_close(h, expected_h)
        assert_close(c, expected_c)
        ours = torch.autograd.grad(h.sum() + c.square().sum(), [inputs, *cell.parameters()])
        theirs = torch.autograd.grad(expected_h.sum() + expected_c.square().sum(), [inputs, *cell.parameters()])
        for a, b in zip(ours, theirs):
            assert_close(a, b)


def test_a_capture_belongs_to_its_graph():
    run = capture_levels(sn.GRUCell(3, 4), forest_edges([None, 0]), 2, mode="default")
    with pytest.raises(ValueError, match="a graph of 2 nodes, got inputs of 5 rows"):
        run(torch.randn(5, 3))
    with pytest.raises(sn.CycleError):
        capture_levels(sn.GRUCell(3, 4), torch.tensor([[0, 1], [1, 0]]), 2)
