"""From members' outputs to predictions with an uncertainty: MC dropout, averaging, calibration."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close
from torch_geometric.data import Data

from structnets.chem.ensemble import (
    Prediction,
    calibrate,
    ensemble_prediction,
    member_outputs,
    monte_carlo_dropout,
)
from structnets.chem.estimators import UncertaintyMethod, mean_and_variance
from structnets.chem.inputs import MoleculeInputs, forward
from structnets.chem.metrics import Task
from structnets.chem.scaling import Scaler
from structnets.chem.uncertainty import ConformalInterval, ZScaling
from structnets.models import MPNN, MPNNConfig


def _graph(num_nodes: int) -> Data:
    pairs = torch.combinations(torch.arange(num_nodes), 2)
    edge_index = torch.cat([pairs.t(), pairs.t().flip(0)], 1)
    return Data(x=torch.randn(num_nodes, 5), edge_index=edge_index, edge_attr=torch.randn(edge_index.shape[1], 3))


def _model(dropout: float = 0.0, num_targets: int = 1) -> MPNN:
    config = MPNNConfig(
        atom_features=5, bond_features=3, num_targets=num_targets, hidden_size=4, edge_hidden_size=8,
        readout_hidden_size=16, rounds=2, dropout=dropout,
    )  # fmt: skip
    return MPNN(config)


def _batches(count: int = 7, batch_size: int = 3):
    return MoleculeInputs([[_graph(n) for n in range(2, 2 + count)]]).batches(batch_size, "cpu")


def _dropouts(model: nn.Module) -> list[nn.Dropout]:
    return [m for m in model.modules() if isinstance(m, nn.Dropout)]


@pytest.mark.parametrize("training", [True, False])
def test_monte_carlo_dropout_samples_inside_and_restores_everything(training):
    model = _model(dropout=0.0).train(training)
    (dropout,) = _dropouts(model)
    batch = _batches()[0]
    with monte_carlo_dropout(model, 0.5):
        assert dropout.p == 0.5 and dropout.training
        assert not model.training and not model.embed.training and not model.update.training
        one, two = forward(model, batch), forward(model, batch)
    assert not torch.allclose(one, two)  # the passes differ
    assert dropout.p == 0.0 and dropout.training is training
    assert all(m.training is training for m in model.modules())
    # Restored when the body raises too.
    with pytest.raises(RuntimeError, match="inside"):
        with monte_carlo_dropout(model, 0.3):
            raise RuntimeError("inside")
    assert dropout.p == 0.0 and all(m.training is training for m in model.modules())
    model.eval()
    assert_close(forward(model, batch), forward(model, batch), atol=0, rtol=0)


def test_monte_carlo_dropout_needs_a_dropout_layer():
    with pytest.raises(ValueError, match="Linear has no dropout layer"):
        with monte_carlo_dropout(nn.Linear(2, 2), 0.1):
            pass


def test_dropout_member_is_its_seeded_passes_mean_and_spread():
    model = _model(dropout=0.0, num_targets=2)
    batches = _batches()
    state = torch.random.get_rng_state()
    mean, variance = member_outputs(model, batches, UncertaintyMethod.DROPOUT, 2, dropout=0.3, samples=5, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is left alone
    assert mean.shape == variance.shape == (7, 2)
    again = member_outputs(model, batches, UncertaintyMethod.DROPOUT, 2, dropout=0.3, samples=5, seed=7)
    assert torch.equal(again[0], mean) and torch.equal(again[1], variance)
    other = member_outputs(model, batches, UncertaintyMethod.DROPOUT, 2, dropout=0.3, samples=5, seed=8)
    assert not torch.allclose(other[0], mean)
    # By hand: seed, then `samples` passes over the batches in order with the dropout on.
    torch.manual_seed(7)
    passes = []
    with torch.no_grad(), monte_carlo_dropout(model, 0.3):
        for _ in range(5):
            passes.append(torch.cat([forward(model, b) for b in batches]))
    stacked = torch.stack(passes)
    assert_close(mean, stacked.mean(0))
    assert_close(variance, stacked.var(0, unbiased=False))
    assert bool((variance > 0).all())
    assert _dropouts(model)[0].p == 0.0 and not model.training


def test_other_members_read_their_outputs_once():
    model = _model(num_targets=2).train()
    batches = _batches()
    with torch.no_grad():
        outputs = torch.cat([forward(model.eval(), b) for b in batches])
    model.train()
    mean, variance = member_outputs(model, batches, UncertaintyMethod.NONE, 2)
    assert variance is None and not model.training  # evaluated in eval mode
    assert_close(mean, outputs, atol=0, rtol=0)
    mve = _model(num_targets=4).eval()
    with torch.no_grad():
        outputs = torch.cat([forward(mve, b) for b in batches])
    mean, variance = member_outputs(mve, batches, UncertaintyMethod.MVE, 2)
    expected = mean_and_variance(outputs, UncertaintyMethod.MVE, 2)
    assert_close(mean, expected[0], atol=0, rtol=0)
    assert_close(variance, expected[1], atol=0, rtol=0)
    assert member_outputs(model, [], UncertaintyMethod.NONE, 2)[0].shape == (0, 2)


def test_regression_members_combine_and_return_to_the_targets_units():
    members = [
        (torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.25]])),
        (torch.tensor([[2.0, 1.0]]), torch.tensor([[3.0, 0.75]])),
    ]
    scaler = Scaler(torch.tensor([10.0, -1.0]), torch.tensor([2.0, 0.5]))
    prediction = ensemble_prediction(members, Task.REGRESSION, scaler)
    # Standardised: mean [1, 1], variance spread [1, 0] + own [2, 0.5] = [3, 0.5].
    assert_close(prediction.mean, torch.tensor([[1.0 * 2 + 10, 1.0 * 0.5 - 1]]))
    assert_close(prediction.std, torch.tensor([[math.sqrt(3) * 2, math.sqrt(0.5) * 0.5]]))
    raw = ensemble_prediction(members, Task.REGRESSION)
    assert_close(raw.mean, torch.tensor([[1.0, 1.0]]))
    assert_close(raw.std, torch.tensor([[math.sqrt(3), math.sqrt(0.5)]]))
    single = ensemble_prediction([(torch.tensor([[0.5, 0.0]]), None)], Task.REGRESSION, scaler)
    assert single.std is None
    assert_close(single.mean, torch.tensor([[11.0, -1.0]]))


def test_classification_members_average_probabilities():
    logits = [torch.tensor([[0.0, 30.0]]), torch.tensor([[math.log(3.0), 30.0]])]
    prediction = ensemble_prediction([(m, None) for m in logits], Task.CLASSIFICATION)
    assert prediction.std is None
    # Probabilities 0.5 and 0.75 average to 0.625: logit log(5 / 3).
    assert float(prediction.mean[0, 0]) == pytest.approx(math.log(5 / 3), rel=1e-6)
    # Averaging logits instead would give log(3) / 2.
    assert float(prediction.mean[0, 0]) != pytest.approx(math.log(3.0) / 2, rel=1e-3)
    assert 15 < float(prediction.mean[0, 1]) < 30  # kept off probability 1
    one = ensemble_prediction([(logits[0], None)], Task.CLASSIFICATION)
    assert torch.equal(one.mean, logits[0])  # one member's logits, unchanged


def test_calibrate_zscaling_rescales_the_std():
    prediction = Prediction(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.5, 1.0], [2.0, 0.25]]))
    scaled, intervals = calibrate(prediction, ZScaling(np.array([2.0, 0.5])))
    assert intervals is None
    assert torch.equal(scaled.mean, prediction.mean)
    assert_close(scaled.std, torch.tensor([[1.0, 0.5], [4.0, 0.125]]))
    with pytest.raises(ValueError, match="this prediction has none"):
        calibrate(Prediction(prediction.mean, None), ZScaling(np.array([2.0, 0.5])))
    same, none = calibrate(prediction, None)
    assert same is prediction and none is None


def test_calibrate_conformal_adds_intervals():
    prediction = Prediction(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.5], [2.0]]))
    kept, (lower, upper) = calibrate(prediction, ConformalInterval(np.array([1.5]), 0.9))
    assert kept is prediction
    assert_close(lower, torch.tensor([[1.0 - 0.75], [3.0 - 3.0]]))
    assert_close(upper, torch.tensor([[1.0 + 0.75], [3.0 + 3.0]]))
    plain = Prediction(prediction.mean, None)
    _, (lower, upper) = calibrate(plain, ConformalInterval(np.array([1.5]), 0.9, normalized=False))
    assert_close(lower, torch.tensor([[-0.5], [1.5]]))
    assert_close(upper, torch.tensor([[2.5], [4.5]]))
