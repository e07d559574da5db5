"""Rows of molecules packed once: any batch of rows gives each row's own outputs."""

import pytest
import torch
from torch.testing import assert_close
from torch_geometric.data import Batch, Data

from structnets.chem.featurize import atom_feature_size, bond_feature_size, graph_from_smiles
from structnets.chem.inputs import MoleculeBatch, MoleculeInputs, fingerprint, forward
from structnets.models import MPNN, MPNNConfig, MultiMPNN, MultiMPNNConfig

CLOSE = dict(atol=1e-10, rtol=0)
SMILES = ["CCO", "c1ccccc1O", "C", "CC(=O)N", "ClC(Cl)Cl", "C1CCCCC1N"]


def _graphs(smiles):
    graphs = []
    for s in smiles:
        graph = graph_from_smiles(s)
        graphs.append(Data(x=graph.x.double(), edge_index=graph.edge_index, edge_attr=graph.edge_attr.double()))
    return graphs


def _encoder(**fields) -> MPNNConfig:
    sizes = dict(hidden_size=6, edge_hidden_size=8, readout_hidden_size=8, rounds=2, sum_readout=True)
    return MPNNConfig(atom_features=atom_feature_size(), bond_features=bond_feature_size(), **{**sizes, **fields})


def test_a_batch_of_rows_equals_each_row_alone():
    model = MPNN(_encoder(num_targets=2, extra_features=3)).double().eval()
    graphs = _graphs(SMILES)
    features = torch.randn(len(SMILES), 3, dtype=torch.double)
    inputs = MoleculeInputs([graphs], features, torch.randn(len(SMILES), 2))
    chosen = torch.tensor([4, 0, 5, 2])  # out of order, as a shuffled epoch takes them
    batch = inputs.batch(chosen)
    assert batch.num_rows == 4
    assert_close(batch.features, features[chosen], **CLOSE)
    assert_close(batch.y, inputs.targets[chosen])
    together = forward(model, batch)
    for k, row in enumerate(chosen.tolist()):
        alone = model(Batch.from_data_list([graphs[row]]), features=features[row : row + 1])
        assert_close(together[k : k + 1], alone, **CLOSE)
    # The read-out as well, with no features.
    read = fingerprint(model, batch)
    assert read.shape == (4, model.config.fingerprint_size)
    assert_close(read, model.fingerprint(Batch.from_data_list([graphs[r] for r in chosen.tolist()])), **CLOSE)


def test_rows_of_two_molecules_batch_as_each_row_alone():
    model = MultiMPNN(MultiMPNNConfig(encoder=_encoder(), num_targets=1, readout_hidden_size=8)).double().eval()
    first, second = _graphs(SMILES), _graphs(SMILES[::-1])
    inputs = MoleculeInputs([first, second])
    together = torch.cat([forward(model, b) for b in inputs.batches(4, "cpu")])
    assert together.shape == (len(SMILES), 1)
    for row in range(len(SMILES)):
        alone = model([Batch.from_data_list([first[row]]), Batch.from_data_list([second[row]])])
        assert_close(together[row : row + 1], alone, **CLOSE)
    # Swapping the columns is another input: the encoders are not shared, the model not symmetric.
    swapped = torch.cat([forward(model, b) for b in MoleculeInputs([second, first]).batches(4, "cpu")])
    assert not torch.allclose(swapped, together)


def test_batches_cover_the_rows_in_order():
    graphs = _graphs(SMILES)
    targets = torch.arange(len(SMILES), dtype=torch.float32).unsqueeze(1)
    inputs = MoleculeInputs([graphs], targets=targets)
    assert len(inputs) == len(SMILES)
    batches = inputs.batches(4, "cpu")
    assert [b.num_rows for b in batches] == [4, 2]
    assert torch.cat([b.y for b in batches]).flatten().tolist() == list(range(len(SMILES)))
    picked = inputs.batches(2, "cpu", rows=[5, 1, 3])
    assert torch.cat([b.y for b in picked]).flatten().tolist() == [5.0, 1.0, 3.0]
    # Each batch's graph holds exactly its rows' atoms.
    assert int(picked[0].graphs[0].num_nodes) == graphs[5].num_nodes + graphs[1].num_nodes
    assert picked[0].features is None and isinstance(picked[0], MoleculeBatch)


def test_mismatched_columns_features_and_targets_are_refused():
    graphs = _graphs(SMILES)
    with pytest.raises(ValueError, match=r"one graph per row, got \[6, 5\]"):
        MoleculeInputs([graphs, graphs[:5]])
    with pytest.raises(ValueError, match="one graph per row"):
        MoleculeInputs([])
    with pytest.raises(ValueError, match="features has 5 rows for 6 rows of molecules"):
        MoleculeInputs([graphs], torch.zeros(5, 2))
    with pytest.raises(ValueError, match="targets has 7 rows for 6 rows of molecules"):
        MoleculeInputs([graphs], targets=torch.zeros(7, 1))


def test_no_rows_make_no_batches():
    inputs = MoleculeInputs([[]])
    assert len(inputs) == 0 and inputs.batches(4, "cpu") == []
    assert MoleculeInputs([_graphs(SMILES)]).batches(4, "cpu", rows=[]) == []
