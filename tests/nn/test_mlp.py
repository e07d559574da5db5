import pytest
import torch
from torch import nn
from torch.testing import assert_close

from structnets.nn import MLP

EXACT = dict(atol=1e-12, rtol=0)


def _layout(module: nn.Sequential) -> list[str]:
    return [type(layer).__name__ for layer in module]


def test_layers_sit_where_the_hand_written_stacks_had_them():
    # GNS's MLPs: two hidden ReLU layers, a linear output, LayerNorm.
    assert _layout(MLP([5, 8, 8, 3], norm=nn.LayerNorm)) == [
        "Linear", "ReLU", "Linear", "ReLU", "Linear", "LayerNorm",
    ]  # fmt: skip
    # MPNN's head: dropout after the hidden activation, present even at p = 0.
    assert _layout(MLP([5, 8, 1], dropout=0.0)) == ["Linear", "ReLU", "Dropout", "Linear"]
    assert _layout(MLP([5, 8, 1])) == ["Linear", "ReLU", "Linear"]
    # MPNN's embedding and Point-GNN's update: activated output.
    assert _layout(MLP([5, 8], activate_last=True)) == ["Linear", "ReLU"]
    assert list(MLP([5, 8, 8, 3], norm=nn.LayerNorm).state_dict()) == [
        f"{k}.{p}" for k in (0, 2, 4, 5) for p in ("weight", "bias")
    ]


def test_forward_is_the_formula():
    mlp = MLP([4, 6, 5, 2], activation=nn.Tanh, norm=nn.LayerNorm).double()
    x = torch.randn(7, 4, dtype=torch.double)
    first, second, third, norm = mlp[0], mlp[2], mlp[4], mlp[5]
    h = torch.tanh(x @ first.weight.T + first.bias)
    h = torch.tanh(h @ second.weight.T + second.bias)
    y = h @ third.weight.T + third.bias
    y = (y - y.mean(-1, keepdim=True)) / torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + norm.eps)
    assert_close(mlp(x), y * norm.weight + norm.bias, **EXACT)
    assert MLP([4, 2], bias=False)[0].bias is None


def test_dropout_acts_in_training_only():
    mlp = MLP([4, 64, 1], dropout=0.5)
    x = torch.randn(32, 4)
    mlp.eval()
    assert torch.equal(mlp(x), mlp(x))
    mlp.train()
    assert not torch.equal(mlp(x), mlp(x))


def test_too_few_sizes():
    with pytest.raises(ValueError, match="an input and an output width"):
        MLP([4])
