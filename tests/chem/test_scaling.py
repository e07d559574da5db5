import io

import pytest
import torch

from structnets.chem import FeaturizerConfig, graph_from_smiles
from structnets.chem.metrics import Task
from structnets.chem.scaling import Scaler, composition


@pytest.mark.parametrize("explicit", [False, True])
def test_composition_counts_every_atom_hydrogens_included(explicit):
    config = FeaturizerConfig(explicit_hydrogens=explicit)
    graphs = [graph_from_smiles(s, config) for s in ("CCO", "C", "c1ccccc1Cl", "[NH4+]")]
    counts = composition(graphs, config)
    # Slots: H C N O F S Cl Br I P other, then the column of ones.
    assert counts[:, :11].tolist() == [
        [6, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        [4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [5, 6, 0, 0, 0, 0, 1, 0, 0, 0, 0],
        [4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    ]
    assert counts[:, -1].tolist() == [1, 1, 1, 1]
    assert composition([], config).shape == (0, counts.shape[1])


def test_composition_baseline_round_trips_and_absorbs_linear_targets():
    generator = torch.Generator().manual_seed(0)
    heavy = torch.randint(0, 9, (200, 3), generator=generator).to(torch.float64)
    counts = torch.cat([heavy, torch.ones(200, 1, dtype=torch.float64)], 1)
    per_atom = torch.tensor([[-0.5, 10.0], [-38.0, 3.0], [-75.0, -1.0], [2.0, 0.0]], dtype=torch.float64)
    noise = 0.1 * torch.randn(200, 2, generator=generator)
    targets = (counts @ per_atom).float() + noise
    scaler = Scaler.fit(targets, Task.REGRESSION, counts)
    # The composition part (spread over hundreds) is gone: what is left is the noise.
    assert (scaler.inverse(torch.zeros(200, 2), counts) - targets).abs().max() < 0.5
    torch.testing.assert_close(scaler.inverse(scaler.transform(targets, counts), counts), targets)
    with pytest.raises(ValueError, match="composition"):
        scaler.transform(targets)


def test_standardisation_without_baseline_and_identity_for_classification():
    targets = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    scaler = Scaler.fit(targets, Task.REGRESSION)
    # A constant column keeps std 1 rather than dividing by zero.
    torch.testing.assert_close(scaler.transform(targets), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    labels = torch.tensor([[0.0], [1.0]])
    assert torch.equal(Scaler.fit(labels, Task.CLASSIFICATION).transform(labels), labels)


def test_scaler_state_survives_a_weights_only_checkpoint():
    counts = torch.tensor([[1.0, 1.0], [2.0, 1.0], [4.0, 1.0]], dtype=torch.float64)
    scaler = Scaler.fit(torch.tensor([[1.0], [2.5], [4.0]]), Task.REGRESSION, counts)
    buffer = io.BytesIO()
    torch.save(scaler.state_dict(), buffer)
    buffer.seek(0)
    again = Scaler.from_state_dict(torch.load(buffer, weights_only=True))
    y = torch.tensor([[0.3], [-1.0], [2.0]])
    assert torch.equal(again.inverse(y, counts), scaler.inverse(y, counts))
