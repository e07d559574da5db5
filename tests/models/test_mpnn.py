import pytest
import torch
from torch.testing import assert_close
from torch_geometric.data import Batch, Data
from torch_geometric.nn import NNConv
from torch_geometric.nn.aggr import Set2Set as PyGSet2Set

from structnets.models import MPNN, MPNNConfig, Set2Set

EXACT = dict(atol=1e-10, rtol=0)


def _random_graph(num_nodes: int, atom: int = 5, bond: int = 3) -> Data:
    pairs = torch.combinations(torch.arange(num_nodes), 2)
    keep = pairs[torch.rand(len(pairs)) < 0.5]
    edge_index = torch.cat([keep.t(), keep.t().flip(0)], 1) if len(keep) else torch.zeros(2, 0, dtype=torch.long)
    return Data(
        x=torch.randn(num_nodes, atom, dtype=torch.double),
        edge_index=edge_index,
        edge_attr=torch.randn(edge_index.shape[1], bond, dtype=torch.double),
    )


def test_set2set_matches_torch_geometric():
    ours = Set2Set(6, steps=3).double()
    theirs = PyGSet2Set(6, processing_steps=3).double()
    theirs.lstm.load_state_dict({f"{k}_l0": v for k, v in ours.cell.state_dict().items()})
    x = torch.randn(10, 6, dtype=torch.double)
    batch = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    assert_close(ours(x, batch, 3), theirs(x, batch), **EXACT)


@pytest.mark.parametrize("discrete", [False, True])
def test_one_round_matches_nnconv_and_gru(discrete):
    """The edge-network message is torch_geometric's NNConv (sum aggregation), transposed.

    Discrete (one-hot) bond features take the per-bond-type path, continuous ones the
    per-edge path; both must give NNConv's result.
    """
    config = MPNNConfig(atom_features=5, bond_features=3, hidden_size=4, rounds=1)
    model = MPNN(config).double()
    graph = _random_graph(6)
    if discrete:
        graph.edge_attr = torch.nn.functional.one_hot(torch.randint(0, 3, (graph.edge_index.shape[1],)), 3).double()
    conv = NNConv(4, 4, model.edge_network.net, aggr="add", root_weight=False, bias=False).double()
    h0, h1 = model.node_states(graph.x, graph.edge_index, graph.edge_attr)

    # NNConv multiplies x_j (as a row) by W(e); the MPNN multiplies A(e) by h_w (a column).
    class Transposed(torch.nn.Module):
        def forward(self, e):
            return model.edge_network(e).transpose(1, 2).reshape(len(e), -1)

    conv.nn = Transposed()
    expected = model.update(conv(h0, graph.edge_index, graph.edge_attr), h0)
    assert_close(h1, expected, **EXACT)


def test_prediction_is_invariant_to_atom_order():
    model = MPNN(MPNNConfig(atom_features=5, bond_features=3, num_targets=2)).double()
    graph = _random_graph(7)
    perm = torch.randperm(7)
    inverse = torch.argsort(perm)
    permuted = Data(x=graph.x[perm], edge_index=inverse[graph.edge_index], edge_attr=graph.edge_attr)
    one = model.forward_batch(Batch.from_data_list([graph]))
    two = model.forward_batch(Batch.from_data_list([permuted]))
    assert_close(one, two, atol=1e-10, rtol=0)


def test_batch_equals_molecules_alone():
    model = MPNN(MPNNConfig(atom_features=5, bond_features=3, num_targets=2)).double()
    graphs = [_random_graph(n) for n in (1, 4, 9)]  # one atom, no bonds, works too
    batched = model.forward_batch(Batch.from_data_list(graphs))
    alone = torch.cat([model.forward_batch(Batch.from_data_list([g])) for g in graphs])
    assert_close(batched, alone, atol=1e-10, rtol=0)


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    graphs = [_random_graph(n) for n in torch.randint(2, 9, (32,)).tolist()]
    for g in graphs:
        g.x, g.edge_attr = g.x.float(), g.edge_attr.float()
        g.y = g.x.sum().view(1, 1) / 10
    batch = Batch.from_data_list(graphs)
    model = MPNN(MPNNConfig(atom_features=5, bond_features=3, hidden_size=16, edge_hidden_size=16))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model.forward_batch(batch), batch.y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
